"""Training speed of the baselines: step time per Table 2 configuration, naive vs efficient.

    python -m benchmarks.speed.train [--scale mini] [--repeats 15] [--threads 2]

For every row of Table 2 at the given scale (the network and batch the Table 2 runs use: all
four training images, or all their tiles, per step), one training step (forward, cross-entropy,
backward, Adam) is timed with naive masking (``GPNet(efficient=False)``) and with the
compute-saving spatial path (``efficient=True``), the two interleaved round-robin in one process
on the same weights and data; medians of ``--repeats`` steps after warm-up. Reports s/step,
images/s and efficient / naive, and the plain step's FLOPs and saved activations (the inputs of
a GPU cost estimate). Writes ``benchmarks/results/train_speed-<scale>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.baselines.config import make_config
from benchmarks.baselines.train import build_model, load_split, tile
from benchmarks.paper.table2 import PAPER, SCALES, row_configs

RESULTS = Path(__file__).resolve().parents[1] / "results"


def step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
         efficient: bool) -> None:
    """One training step: forward, cross-entropy, backward, Adam."""
    net.efficient = efficient
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    opt.step()


def plain_step_cost(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """FLOPs of one plain training step (forward + backward, torch's FlopCounterMode) and the
    bytes autograd saves for its backward (distinct storages): the GPU cost model's inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    net.efficient = False
    with FlopCounterMode(display=False) as fc:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
    net.zero_grad(set_to_none=True)
    return {"gflop_per_step": fc.get_total_flops() / 1e9, "saved_mib": sum(seen.values()) / 2**20}


def measure(scale: str, repeats: int, warmup: int = 3, rows_only: list[str] | None = None
            ) -> tuple[list[dict], dict[str, float]]:
    """Rows of (configuration, method, s/step, images/s) and the plain step's cost."""
    sc = SCALES[scale]
    rows = row_configs(sc, efficient=True)
    if rows_only:
        unknown = [r for r in rows_only if r not in rows]
        if unknown:
            raise ValueError(f"rows: {', '.join(map(repr, unknown))} are not Table 2 rows; choose"
                             f" from {', '.join(rows)}")
        rows = {r: kw for r, kw in rows.items() if r in rows_only}
    cost: dict[str, float] = {}
    train = None
    out = []
    for row, kw in rows.items():
        cfg = make_config(**kw)
        if train is None:
            train = load_split(cfg, "train")
        x = torch.from_numpy(tile(train.images, cfg.crop_tiles))[:, None]
        y = torch.from_numpy(np.repeat(train.labels, cfg.crop_tiles))
        torch.manual_seed(0)
        net = build_model(cfg, torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        net.train()
        if not cost and not cfg.active_masks() and cfg.crop_tiles == 1:
            cost = plain_step_cost(net, x, y)
        methods = {"naive": False, "efficient": True} if cfg.active_masks() else {"plain": False}
        times: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(warmup + repeats):
            for m, eff in methods.items():
                t0 = time.perf_counter()
                step(net, opt, x, y, eff)
                if r >= warmup:
                    times[m].append(time.perf_counter() - t0)
        naive = statistics.median(times.get("naive", times.get("plain")))
        for m, ts in times.items():
            med = statistics.median(ts)
            out.append({"row": row, "method": m, "s_per_step": med,
                        "images_per_s": train.images.shape[0] / med,
                        "vs_naive": med / naive, "batch": int(x.shape[0]),
                        "input_px": int(x.shape[-1])})
    return out, cost


def markdown(report: dict) -> str:
    lines = ["# Training speed of the Table 2 baselines", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']}; torch"
             f" {report['torch']}, {report['threads']} thread(s); load average before"
             f" {report['load_before']}, after {report['load_after']}.  ",
             f"Scale `{report['scale']}`: GPNet width {report['width']}; one step = forward +"
             " cross-entropy + backward + Adam on the whole training batch (4 images, or their"
             f" tiles); median of {report['repeats']} steps, methods interleaved.", "",
             *([f"Plain step (row (0, 0)): {report['plain_step']['gflop_per_step']:.1f} GFLOP"
                f" (forward + backward, torch FlopCounterMode), autograd saves"
                f" {report['plain_step']['saved_mib']:.0f} MiB of activations.", ""]
               if report.get("plain_step") else []),
             "| row | method | batch x px | s/step | images/s | / naive |",
             "|:---|:---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['row']} | {r['method']} | {r['batch']} x {r['input_px']} |"
                     f" {r['s_per_step']:.3f} | {r['images_per_s']:.1f} | {r['vs_naive']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.speed.train",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="mini",
                    help="full: the paper's 1024 px setting (~1 min per naive step on 2 cores;"
                         " use --repeats 1 --rows)")
    ap.add_argument("--rows", nargs="*", default=None, help="only these Table 2 rows")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = os.getloadavg()[0]
    try:
        rows, cost = measure(args.scale, args.repeats, warmup=1 if args.scale == "full" else 3,
                             rows_only=args.rows)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {
        "command": "python -m benchmarks.speed.train " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()})",
        "torch": torch.__version__, "threads": args.threads, "scale": args.scale,
        "width": SCALES[args.scale].width, "repeats": args.repeats,
        "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2),
        "rows": rows, "paper_rows": [r[0] for r in PAPER], "plain_step": cost,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_speed-{args.scale}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"train_speed-{args.scale}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
