"""Backdrop speed and memory: naive masking vs the compute-saving path, ratios from one run.

Run: ``python -m benchmarks.speed.backdrop`` (defaults: CNN encoder over 64x64 inputs, batch 256)
or ``--quick`` for a smoke run. Writes benchmarks/results/backdrop_speed.json and .md.

Measured, all in one process and with the same weights and data:

* step time (forward + non-decomposable loss + backward, median of ``--repeats``) of the plain
  network, of naive backdrop over samples (mask on the latents), and of
  :func:`backdrop.efficient_backdrop` with the same p;
* saved-activation bytes of the autograd graph (every tensor autograd saves for backward,
  counted once per storage): the graph-memory footprint the efficient path cuts;
* the overhead of a spatial Backdrop layer inside the encoder;
* for an encoder with BatchNorm in train mode: how far the efficient gradient ("full" and
  "subset" modes) is from the naive masked gradient with the same mask, next to how far two naive
  gradients with different masks are from each other (the noise backdrop itself adds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from backdrop import Backdrop, apply_mask, auc_rank_loss, backdrop, efficient_backdrop, sample_mask

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_encoder(width: int, latent: int, batchnorm: bool = False, mask: nn.Module | None = None):
    """Three-conv CNN ``(B, 1, S, S) -> (B, latent)``; optional BatchNorm, mask after conv 1."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        return [*layers, nn.ReLU()]

    return nn.Sequential(
        *block(1, width),
        *([mask] if mask is not None else []),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, latent),
    )


class Task:
    """A non-decomposable objective: AUC rank loss of a linear score over all latents."""

    def __init__(self, latent: int, batch: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 1, size, size, generator=g)
        self.y = torch.zeros(batch, dtype=torch.long)
        self.y[: max(1, batch // 6)] = 1  # 5:1 imbalance as in the paper's AUC experiment
        self.head = nn.Linear(latent, 1)

    def loss(self, z: Tensor) -> Tensor:
        return auc_rank_loss(self.head(z).squeeze(1), self.y, beta=1.0)


def _time(fns: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin so that drifts in
    machine load affect all methods alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of distinct storages saved for backward while building the graph of ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _grad_vector(module: nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def bench_speed(args, task: Task, encoder: nn.Module) -> dict:
    x = task.x

    def run(step: Callable[[], Tensor]) -> Callable[[], None]:
        def fn() -> None:
            encoder.zero_grad(set_to_none=True)
            task.loss(step()).backward()

        return fn

    gen = torch.Generator().manual_seed(args.seed)
    fns = {"plain": run(lambda: encoder(x))}
    for p in args.ps:
        fns[f"naive {p}"] = run(lambda p=p: backdrop(encoder(x), p, (0,), generator=gen))
        fns[f"efficient {p}"] = run(lambda p=p: efficient_backdrop(encoder, x, p, generator=gen)[0])
    t = _time(fns, args.repeats, args.warmup)
    plain_b = _saved_bytes(lambda: task.loss(encoder(x)))
    rows = [dict(method="plain", p=0.0, time_s=t["plain"], saved_mb=plain_b / 2**20)]
    for p in args.ps:
        mask = sample_mask((x.shape[0],), p, generator=gen)
        naive_b = _saved_bytes(lambda m=mask: task.loss(apply_mask(encoder(x), m)))
        eff_b = _saved_bytes(lambda m=mask: task.loss(efficient_backdrop(encoder, x, mask=m)[0]))
        naive_t = t[f"naive {p}"]
        for method, b in (("naive", naive_b), ("efficient", eff_b)):
            rows.append(
                dict(
                    method=method,
                    p=p,
                    time_s=t[f"{method} {p}"],
                    saved_mb=b / 2**20,
                    time_vs_naive=t[f"{method} {p}"] / naive_t,
                    saved_vs_naive=b / naive_b,
                    time_vs_plain=t[f"{method} {p}"] / t["plain"],
                    # cost model: backward = 2 forwards; efficient = (1-p) fwd+bwd + p fwd
                    model_time_vs_plain=1.0 if method == "naive" else (3 - 2 * p) / 3,
                    kept_in_memory_probe=int(mask.sum()),
                )
            )
    return dict(rows=rows)


def bench_layer_overhead(args, task: Task) -> dict:
    """Spatial Backdrop layer (per-sample 8x8 lattice, p=0.5) after conv 1 vs no layer."""
    torch.manual_seed(args.seed)
    lattice = (min(8, args.size), min(8, args.size))
    layer = Backdrop(0.5, (-2, -1), lattice, per_sample=True, generator=torch.Generator())
    with_mask = make_encoder(args.width, args.latent, mask=layer)
    without = make_encoder(args.width, args.latent, mask=nn.Identity())
    without.load_state_dict(with_mask.state_dict())
    fns = {}
    for name, enc in (("without_layer", without), ("with_layer", with_mask)):

        def fn(enc=enc) -> None:
            enc.zero_grad(set_to_none=True)
            task.loss(enc(task.x)).backward()

        fns[name] = fn
    out = {name + "_time_s": v for name, v in _time(fns, args.repeats, args.warmup).items()}
    out["ratio"] = out["with_layer_time_s"] / out["without_layer_time_s"]
    out["lattice"] = list(lattice)
    return out


def bench_batchnorm(args, task: Task) -> dict:
    """Gradient difference of the efficient path vs the naive masked gradient with BatchNorm."""
    torch.manual_seed(args.seed)
    base = make_encoder(args.width, args.latent, batchnorm=True)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed + 1)
    out = {}
    for p in args.ps:
        masks = [sample_mask((task.x.shape[0],), p, generator=gen) for _ in range(2)]
        grads = {}
        times = {}
        for name in ("naive", "naive_other_mask", "full", "subset"):
            base.load_state_dict(state)
            base.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            if name.startswith("naive"):
                m = masks[1] if name == "naive_other_mask" else masks[0]
                task.loss(apply_mask(base(task.x), m)).backward()
            else:
                z, _ = efficient_backdrop(base, task.x, mask=masks[0], batchnorm=name)
                task.loss(z).backward()
            times[name] = time.perf_counter() - t0
            grads[name] = _grad_vector(base)
        ref = grads["naive"]

        def rel(g: Tensor, ref: Tensor = ref) -> float:
            return float((g - ref).norm() / ref.norm())

        def cos(g: Tensor, ref: Tensor = ref) -> float:
            return float(torch.nn.functional.cosine_similarity(g, ref, dim=0))

        out[str(p)] = dict(
            rel_diff_full=rel(grads["full"]),
            rel_diff_subset=rel(grads["subset"]),
            rel_diff_other_mask=rel(grads["naive_other_mask"]),
            cos_full=cos(grads["full"]),
            cos_subset=cos(grads["subset"]),
            cos_other_mask=cos(grads["naive_other_mask"]),
            single_step_time_s=times,
        )
    base.load_state_dict(state)
    with torch.no_grad():
        z_plain = base(task.x)
    base.load_state_dict(state)
    z_sub, _ = efficient_backdrop(base, task.x, mask=masks[0], batchnorm="subset")
    out["subset_latent_rel_diff"] = float((z_sub.detach() - z_plain).norm() / z_plain.norm())
    return out


def to_markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        "# Backdrop speed and memory",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}; torch {res['torch']}, {res['threads']} threads; load average"
        f" (1 min) {res['load_average_before'][0]:.1f} before, {res['load_average_after'][0]:.1f}"
        " after (other jobs share the cores).  ",
        f"Encoder: 3-conv CNN, width {cfg['width']}, latent {cfg['latent']}, input "
        f"{cfg['size']}x{cfg['size']}, batch {cfg['batch']}; loss: AUC rank loss over the batch. "
        f"Times are medians of {cfg['repeats']} steps (forward + loss + backward), methods"
        " interleaved. Cost model: a backward costs two forwards, so the efficient step costs"
        " (3 - 2p)/3 of a plain one.",
        "",
        "| method | p | step time (s) | time / naive | time / plain | cost model / plain"
        " | saved activations (MiB) | saved / naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["speed"]["rows"]:
        lines.append(
            f"| {r['method']} | {r['p']} | {r['time_s']:.3f} | {r.get('time_vs_naive', 1):.2f} | "
            f"{r.get('time_vs_plain', 1):.2f} | {r.get('model_time_vs_plain', 1):.2f} | "
            f"{r['saved_mb']:.1f} | "
            f"{r.get('saved_vs_naive', 1):.2f} |"
        )
    lo = res["layer_overhead"]
    lines += [
        "",
        f"Spatial Backdrop layer (per-sample {lo['lattice'][0]}x{lo['lattice'][1]} lattice, p=0.5)"
        f" after conv 1: step {lo['with_layer_time_s']:.3f} s vs {lo['without_layer_time_s']:.3f}"
        f" s without, ratio {lo['ratio']:.3f}.",
        "",
        "BatchNorm (train mode) in the encoder: relative L2 distance ||g - g_naive|| / ||g_naive||"
        " of the parameter gradient to the naive masked gradient with the same mask (cosine in"
        " brackets); 'other mask' is a naive gradient with a second mask draw, i.e. backdrop's own"
        " noise.",
        "",
        "| p | efficient, batchnorm='full' | efficient, batchnorm='subset' | naive, other mask |",
        "|---|---|---|---|",
    ]
    for p in cfg["ps"]:
        b = res["batchnorm"][str(p)]
        lines.append(
            f"| {p} | {b['rel_diff_full']:.3f} ({b['cos_full']:.3f}) | "
            f"{b['rel_diff_subset']:.3f} ({b['cos_subset']:.3f}) | "
            f"{b['rel_diff_other_mask']:.3f} ({b['cos_other_mask']:.3f}) |"
        )
    lines += [
        "",
        f"'subset' latents differ from the full-batch forward by "
        f"{res['batchnorm']['subset_latent_rel_diff']:.3f} (relative L2, last p); 'full' latents"
        " equal it.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    ap.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    ap.add_argument("--width", type=int, default=32, help="conv width (default 32)")
    ap.add_argument("--latent", type=int, default=64, help="latent size (default 64)")
    ap.add_argument("--ps", type=str, default="0.5,0.75,0.9", help="comma-separated drop probs")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per method (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--quick", action="store_true", help="batch 64, 32x32, 2 repeats")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeats = 64, 32, 2
    args.ps = [float(v) for v in args.ps.split(",")]
    for p in args.ps:
        if not 0 < p < 1:
            ap.error(f"--ps entries must be in (0, 1), got {p}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = Task(args.latent, args.batch, args.size, args.seed)
    encoder = make_encoder(args.width, args.latent)
    res = dict(
        command="python -m benchmarks.speed.backdrop " + " ".join(argv if argv else sys.argv[1:]),
        machine=f"{platform.machine()} {platform.processor() or ''} {platform.system()}".strip(),
        cpu_count=torch.get_num_threads(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        config=dict(
            batch=args.batch,
            size=args.size,
            width=args.width,
            latent=args.latent,
            ps=args.ps,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
        ),
    )
    res["load_average_before"] = list(os.getloadavg())
    res["speed"] = bench_speed(args, task, encoder)
    res["layer_overhead"] = bench_layer_overhead(args, task)
    res["batchnorm"] = bench_batchnorm(args, task)
    res["load_average_after"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backdrop_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    md = to_markdown(res)
    (args.out / "backdrop_speed.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
