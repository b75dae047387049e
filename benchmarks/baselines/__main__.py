"""Baselines: train one GPNet (backdrop masks or crops), scan on val, turn runs into entries.

    python -m benchmarks.baselines train --dataset golkar2018-mini --p-small 0.99 \\
        --p-large 0.94 --seed 0 --out runs/
    python -m benchmarks.baselines train --dataset gp3-512 --p fine=0.99 --p coarse=0.75 ...
    python -m benchmarks.baselines train --dataset golkar2018-mini --crop-tiles 4 --seed 0
    python -m benchmarks.baselines entry runs/golkar2018-mini/small0.99-large0.94-s*/ \\
        [--board golkar2018-mini]

``train`` writes ``OUT/<dataset>/<recipe>-s<seed>/`` (or ``--run-dir``): config, weights
(safetensors), test predictions, evaluation, loss curve, wall time and hardware. Rerunning the
same command resumes a killed run from its last checkpoint; a finished one is reported as is.
Learning rate and steps default to the recorded ``val`` scan's choice for that dataset and
configuration (``benchmarks/results/*-scan.json``), else 1e-3 and 400.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _kv(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LEVEL=VALUE, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def recorded_choice(fingerprint: str, row: str) -> dict[str, Any] | None:
    """The scan's (lr, steps) for a dataset fingerprint and configuration label, if recorded."""
    for path in sorted(RESULTS.glob("*-scan.json")):
        try:
            scan = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if scan.get("fingerprint") == fingerprint and row in scan.get("selected", {}):
            return {**scan["selected"][row], "source": path.name,
                    "width": scan.get("width")}
    return None


def _train_parser(sub: Any) -> None:
    t = sub.add_parser("train", help="train one baseline into a run folder")
    t.add_argument("--dataset", required=True, help="preset name, HDF5 file or HF folder")
    t.add_argument("--p-small", type=float, help="drop probability of the 'small' level's mask")
    t.add_argument("--p-large", type=float, help="drop probability of the 'large' level's mask")
    t.add_argument("--p", type=_kv, action="append", default=[], metavar="LEVEL=P",
                   help="drop probability of a level's mask, in [0, 1) (repeatable)")
    t.add_argument("--patch", type=_kv, action="append", default=[], metavar="LEVEL=PX",
                   help="mask patch side in input pixels (default: smallest power of two >= the"
                        " level's largest length scale)")
    t.add_argument("--crop-tiles", type=int, default=1, metavar="K2",
                   help="train on K2 = k*k fixed-location tiles per image (Table 2's crop rows)")
    t.add_argument("--width", type=int, default=None, help="channels (default: the scan's, else"
                   " 16)")
    t.add_argument("--stages", type=int, default=None, help="pooling stages (default log2(size/8))")
    t.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: the scan's)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the scan's)")
    t.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="automatic mixed precision (default: on for cuda)")
    t.add_argument("--efficient", action=argparse.BooleanOptionalAction, default=None,
                   help="compute-saving spatial backdrop (default: on when a mask is active)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--out", default="runs", help="parent folder of run folders")
    t.add_argument("--run-dir", default=None, help="exact run folder (overrides --out)")
    t.add_argument("--checkpoint-every", type=int, default=50)
    t.add_argument("--overwrite", action="store_true", help="discard a run folder of another"
                   " config")
    t.add_argument("--no-progress", action="store_true")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from gptextures.io import resolve_spec

    from .config import make_config
    from .train import train

    spec = resolve_spec(args.dataset)
    p = dict(args.p)
    for name, value in (("small", args.p_small), ("large", args.p_large)):
        if value is not None:
            p[name] = value
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    probe = make_config(args.dataset, spec=spec, p=p, patch=dict(args.patch),
                        crop_tiles=args.crop_tiles)
    chosen = recorded_choice(spec.fingerprint, probe.label())
    lr = args.lr if args.lr is not None else (chosen or {}).get("lr", 1e-3)
    steps = args.steps if args.steps is not None else (chosen or {}).get("steps", 400)
    width = args.width if args.width is not None else (chosen or {}).get("width") or 16
    efficient = args.efficient if args.efficient is not None else bool(probe.active_masks())
    cfg = make_config(args.dataset, spec=spec, p=p, patch=dict(args.patch),
                      crop_tiles=args.crop_tiles, width=width, stages=args.stages, lr=lr,
                      weight_decay=args.weight_decay, steps=steps, batch_size=args.batch_size,
                      seed=args.seed, device=args.device, amp=args.amp, efficient=efficient)
    if chosen and (args.lr is None or args.steps is None):
        print(f"lr {cfg.lr:g}, {cfg.steps} steps: the val scan's choice for {cfg.label()!r}"
              f" ({chosen['source']})", file=sys.stderr)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.out) / spec.name / cfg.slug()
    res = train(cfg, run_dir, progress=not args.no_progress,
                checkpoint_every=args.checkpoint_every, overwrite=args.overwrite)
    state = "already complete" if res.already_complete else (
        f"resumed from step {res.resumed_from}" if res.resumed_from else "trained")
    print(f"{run_dir}: {cfg.label()}, seed {cfg.seed}, {state}, {res.wall_time_s:.1f} s")
    if res.test is not None:
        print(res.test.summary())
    return 0


def cmd_entry(args: argparse.Namespace) -> int:
    from gptextures.runs import entry_from_runs

    entry = entry_from_runs(args.runs, method=args.method)
    if args.board is None:
        print(json.dumps(entry, indent=2))
        return 0
    from gptextures.leaderboard import Leaderboard

    path = Path(args.board)
    board = Leaderboard.load(path)
    e = board.add(entry, replace=args.replace, where="entry")
    board.save(path)
    rank = next(r for r, x in board.ranked() if x is e)
    print(f"added {e['method']!r} to {path} (rank {rank} of {len(board.entries)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baselines",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    e = sub.add_parser("entry", help="a leaderboard entry from the run folders of one recipe")
    e.add_argument("runs", nargs="+", help="run folders (the seeds of one recipe, >= 3)")
    e.add_argument("--method", default=None, help="name in the table (default: the config's)")
    e.add_argument("--board", default=None, help="a leaderboard JSON to add it to (default:"
                   " print the entry)")
    e.add_argument("--replace", action="store_true", help="replace an entry of the same method")
    args = ap.parse_args(argv)
    try:
        return {"train": cmd_train, "entry": cmd_entry}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: the run folder keeps its last checkpoint; rerun the same command to"
              " resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
