"""Train one baseline: a GPNet with backdrop masks (or on fixed crops), written as a run folder.

The paper's protocol (Sec. 3.2): the whole image is the input, every training image in every
step, no cropping, flipping or other augmentation; the masks are the only noise. The crop
baselines of Table 2 cut each training image into ``k x k`` fixed-location tiles and train on
the tiles; a test image is scored by the mean of its tiles' logits, i.e. the model sees at test
time exactly the input size (and borders) it was trained on.

Checkpoints (model, optimizer, mask and batch generators, curves) are written atomically every
``checkpoint_every`` steps. Ctrl-C, SIGTERM and SIGHUP (what batch schedulers send) are held
until the current step ends, then a checkpoint of that step is written and the run stops
(KeyboardInterrupt, or SystemExit 128+signal); a second signal stops at once, keeping the last
checkpoint. Rerunning the same command resumes and ends with the same weights as an
uninterrupted run (on the CPU, with the config's thread count).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import gptextures as gt
from gptextures import runs as gruns
from gptextures.evaluation import Evaluator, write_submission

from .config import TrainConfig

CHECKPOINT = gruns.CHECKPOINT
VAL_CURVE = "val_curve.json"


class RunFolderError(ValueError):
    """The run folder holds another configuration (or is not a run folder)."""


@dataclass
class RunResult:
    """What :func:`train` returns: the run folder and the scores it wrote."""

    path: Path
    config: dict[str, Any]
    test: gt.evaluation.EvaluationResult | None
    val_curve: list[dict[str, float]]
    wall_time_s: float  # training only (evaluations excluded), summed over resumes
    resumed_from: int
    already_complete: bool
    cpu_time_s: float = 0.0


def tile(images: np.ndarray, tiles: int) -> np.ndarray:
    """Cut ``(N, H, W)`` images into ``k x k`` fixed-location tiles, ``tiles = k*k``.

    Returns ``(N * tiles, H/k, W/k)``: image ``n``'s tiles are rows ``n*tiles .. (n+1)*tiles-1``,
    in row-major order (tile ``(i, j)`` at index ``i*k + j`` covers rows ``i*H/k ..`` and
    columns ``j*W/k ..``). A view-free copy; ``tiles = 1`` returns the images unchanged.
    """
    k = math.isqrt(tiles)
    if k * k != tiles or images.ndim != 3 or images.shape[1] % k or images.shape[2] % k:
        raise ValueError(f"tiles must be k*k with k dividing the image sides {images.shape[1:]},"
                         f" got {tiles}")
    if k == 1:
        return images
    n, h, w = images.shape
    t = images.reshape(n, k, h // k, k, w // k).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(t.reshape(n * tiles, h // k, w // k))


def hardware(device: torch.device) -> dict[str, Any]:
    """Where a run ran: device, CPU model, threads, GPU name (for run.json)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out: dict[str, Any] = {"device": str(device), "cpu": cpu, "cpu_count": os.cpu_count(),
                           "threads": torch.get_num_threads(), "machine": platform.machine(),
                           "os": platform.system()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


_INIT_LOCK = threading.Lock()


def build_model(cfg: TrainConfig, generator: torch.Generator | None = None) -> torch.nn.Module:
    """The run's :class:`backdrop.models.GPNet`, initial weights drawn from ``cfg.seed``.

    The global torch RNG is seeded inside ``fork_rng`` under a lock, so runs in threads of one
    process (a Dask worker) neither race for it nor change it for the caller.
    """
    from backdrop.models import GPNet

    kw = cfg.model_kwargs()
    kw["masks"] = [tuple(m) for m in kw["masks"]]
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return GPNet(**kw, generator=generator, efficient=cfg.efficient)


class _HeldSignals:
    """Hold SIGINT/SIGTERM/SIGHUP until a step boundary (main thread only; else a no-op)."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                    if hasattr(signal, n))

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _hold(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: stop now, the last checkpoint stays
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._hold)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def stop(self) -> None:
        """Raise what the held signal means: KeyboardInterrupt or SystemExit(128 + signum)."""
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + int(self.received or 0))


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device: 'mps' was asked for but torch.backends.mps.is_available() is"
                         " False")
    return torch.device(name)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _claim_folder(folder: Path, config: dict[str, Any], spec_json: str, overwrite: bool) -> None:
    """Make ``folder`` this run's: new, or holding the same config (resume), or overwritten."""
    cfg_path = folder / gruns.CONFIG
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"out: {str(folder)!r} exists and is not a directory")
    if folder.is_dir() and any(folder.iterdir()):
        if not cfg_path.is_file():
            raise RunFolderError(f"out: {str(folder)!r} is not empty and holds no {gruns.CONFIG};"
                                 " choose another run folder")
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        diff = gruns.differences(old, config)
        if diff and not overwrite:
            said = "; ".join(f"{k or 'config'}: {a!r} here vs {b!r} asked" for k, a, b in diff[:4])
            raise RunFolderError(f"out: {str(folder)!r} holds another config ({said}); use"
                                 " another run folder, or --overwrite to discard it")
        if diff:
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not cfg_path.is_file():
        _atomic_json(cfg_path, config)
        _atomic_json(folder / gruns.DATASET, json.loads(spec_json))


def load_split(cfg: TrainConfig, split: str) -> gt.io.SplitData:
    """A split of the run's dataset: generated in memory for a preset, else read from the file."""
    source = cfg.spec if cfg.dataset in gt.presets.names() else cfg.dataset
    return gt.load(source, split)


@torch.no_grad()
def predict_logits(net: torch.nn.Module, images: np.ndarray, tiles: int, device: torch.device,
                   amp: bool = False, batch: int | None = None) -> np.ndarray:
    """Eval-mode logits ``(N, C)`` float64 of whole images; with tiles, the mean tile logits."""
    net.eval()
    n = images.shape[0]
    x_all = tile(images, tiles)
    per = x_all.shape[1] * x_all.shape[2]
    width = max((m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)),
                default=1)  # the widest feature map bounds the memory of a batch
    batch = batch or max(1, min(64, 2**28 // (4 * per * width)))
    out = []
    for i in range(0, x_all.shape[0], batch):
        x = torch.from_numpy(x_all[i:i + batch]).to(device)[:, None]
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out.append(net(x).float().cpu())
    logits = torch.cat(out).double().numpy()
    return logits.reshape(n, tiles, -1).mean(axis=1)


def _probs(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def evaluate(net: torch.nn.Module, cfg: TrainConfig, split: gt.io.SplitData,
             device: torch.device) -> tuple[gt.evaluation.EvaluationResult, np.ndarray]:
    """Score a split; returns the result and the class probabilities ``(N, C)``."""
    probs = _probs(predict_logits(net, split.images, cfg.crop_tiles, device, cfg.amp))
    res = Evaluator(cfg.spec).evaluate(y_true=split.labels, y_pred=probs,
                                       prediction_type="probabilities")
    return res, probs


def _curve_point(step: int, res: gt.evaluation.EvaluationResult) -> dict[str, float]:
    return {"step": step, **res.metrics()}


def train(cfg: TrainConfig, run_dir: str | os.PathLike[str], *, progress: bool = True,
          eval_split: str | None = None, eval_every: int = 0, test: bool = True,
          checkpoint_every: int = 50, overwrite: bool = False,
          stop_after: int | None = None) -> RunResult:
    """Train ``cfg`` into ``run_dir`` (resuming it if it holds the same config's checkpoint).

    Args:
        cfg: the run (see :func:`benchmarks.baselines.config.make_config`).
        run_dir: the run folder (created; refused if it holds another config).
        progress: a tqdm bar with step, loss and elapsed time.
        eval_split: a split scored every ``eval_every`` steps into ``val_curve.json`` (model
            selection; never ``test``).
        test: score the ``test`` split at the end (predictions.json, evaluation.json); scans
            turn it off so that model selection never computes a test score. The evaluation
            settings are recorded in config.json: a rerun with other settings is refused.
        checkpoint_every: steps between checkpoints (0: only on Ctrl-C).
        overwrite: discard a run folder that holds another config.
        stop_after: stop (with a checkpoint) after this many steps in total, as a killed run
            would; for tests and for splitting long runs.
    Returns:
        :class:`RunResult`. A folder already complete with this config is returned as is.
    """
    if eval_split == "test":
        raise ValueError("eval_split: 'test' cannot be used for model selection; use 'val'")
    if eval_split is not None:
        cfg.spec.check_split(eval_split)
    folder = Path(run_dir)
    device = _device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = build_model(cfg, gen).to(device)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    config = cfg.to_dict(params)
    config["evaluation"] = {"eval_split": eval_split if eval_every else None,
                            "eval_every": int(eval_every) if eval_split else 0,
                            "test": bool(test)}
    _claim_folder(folder, config, cfg.spec.to_json(), overwrite)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, net, gen, folder, config, device, progress=progress,
                      eval_split=eval_split, eval_every=eval_every, test=test,
                      checkpoint_every=checkpoint_every, stop_after=stop_after)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, net: torch.nn.Module, gen: torch.Generator, folder: Path,
           config: dict[str, Any], device: torch.device, *, progress: bool,
           eval_split: str | None, eval_every: int, test: bool, checkpoint_every: int,
           stop_after: int | None) -> RunResult:
    if (folder / gruns.RUN).is_file():
        done = json.loads((folder / gruns.RUN).read_text(encoding="utf-8"))
        if done.get("status") == "complete":
            curve = (json.loads((folder / VAL_CURVE).read_text())
                     if (folder / VAL_CURVE).is_file() else [])
            run = gruns.load_run(folder) if test else None
            return RunResult(folder, config, run.evaluation if run else None, curve,
                             float(done["wall_time_s"]), cfg.steps, True,
                             float(done.get("cpu_time_s", 0.0)))

    train_split = load_split(cfg, "train")
    x_all = torch.from_numpy(tile(train_split.images, cfg.crop_tiles))[:, None]
    y_all = torch.from_numpy(np.repeat(train_split.labels, cfg.crop_tiles))
    n_train = x_all.shape[0]
    batch = n_train if cfg.batch_size is None else min(cfg.batch_size, n_train)
    val = load_split(cfg, eval_split) if eval_split and eval_every else None

    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    order_rng = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[tuple[int, float, float]] = []
    curve: list[dict[str, float]] = []
    step, elapsed, cpu = 0, 0.0, 0.0
    ckpt_path = folder / CHECKPOINT
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        gen.set_state(ck["mask_generator"])
        order_rng.set_state(ck["order_generator"])
        step, elapsed, cpu = ck["step"], ck["elapsed_s"], ck["cpu_s"]
        losses, curve = [tuple(r) for r in ck["losses"]], ck["val_curve"]
    resumed_from = step

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_name(CHECKPOINT + ".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(), "mask_generator": gen.get_state(),
                    "order_generator": order_rng.get_state(), "step": step,
                    "elapsed_s": elapsed, "cpu_s": cpu, "losses": losses, "val_curve": curve},
                   tmp)
        os.replace(tmp, ckpt_path)

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.slug(), disable=not progress,
               dynamic_ncols=True, leave=False)
    last = min(cfg.steps, stop_after) if stop_after is not None else cfg.steps
    t0, c0 = time.perf_counter() - elapsed, time.process_time() - cpu
    with _HeldSignals() as held:
        while step < last:
            net.train()
            if batch < n_train:
                idx = torch.randperm(n_train, generator=order_rng)[:batch]
                x, y = x_all[idx], y_all[idx]
            else:
                x, y = x_all, y_all
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cfg.amp):
                loss = F.cross_entropy(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            lv = float(loss.detach())
            losses.append((step, lv, elapsed))
            if val is not None and (step % eval_every == 0 or step == cfg.steps):
                res, _ = evaluate(net, cfg, val, device)
                curve.append(_curve_point(step, res))
                # evaluation is not training time
                t0, c0 = time.perf_counter() - elapsed, time.process_time() - cpu
            bar.set_postfix(loss=f"{lv:.4f}", refresh=False)
            bar.update(1)
            if held.received is not None:
                save_checkpoint()
                bar.close()
                held.stop()
            if checkpoint_every and step % checkpoint_every == 0 and step < cfg.steps:
                save_checkpoint()
    bar.close()
    if step < cfg.steps:
        save_checkpoint()
        return RunResult(folder, config, None, curve, elapsed, resumed_from, False, cpu)

    test_result = None
    if test:
        test_split = load_split(cfg, "test")
        test_result, probs = evaluate(net, cfg, test_split, device)
        write_submission(folder / gruns.PREDICTIONS, cfg.spec, probs, split="test",
                         metadata={"method": config["method"], "seed": cfg.seed})
        _atomic_json(folder / gruns.EVALUATION, test_result.to_dict())
    if curve:
        _atomic_json(folder / VAL_CURVE, curve)
    _save_weights(net, folder)
    with open(folder / (gruns.LOSS_CURVE + ".tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "elapsed_s"])
        w.writerows((s, repr(v), f"{t:.3f}") for s, v, t in losses)
    os.replace(folder / (gruns.LOSS_CURVE + ".tmp"), folder / gruns.LOSS_CURVE)
    _atomic_json(folder / gruns.RUN, {
        "format": gruns.RUN_FORMAT, "format_version": gruns.FORMAT_VERSION,
        "status": "complete", "wall_time_s": elapsed, "cpu_time_s": cpu,
        "hardware": hardware(device),
        "torch_version": torch.__version__, "package_version": gt.__version__,
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "resumed_from_step": resumed_from, "tested": bool(test)})
    ckpt_path.unlink(missing_ok=True)
    return RunResult(folder, config, test_result, curve, elapsed, resumed_from, False, cpu)


def _save_weights(net: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")


def load_weights(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The final state dict of a run folder (safetensors; no pickle involved)."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))
