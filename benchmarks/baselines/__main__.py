"""Baselines: train one GPNet (backdrop masks or crops), scan on val, turn runs into entries.

    python -m benchmarks.baselines train --dataset golkar2018-mini --p-small 0.99 \\
        --p-large 0.94 --seed 0 --out runs/
    python -m benchmarks.baselines train --dataset gp3-512 --p fine=0.99 --p coarse=0.75 ...
    python -m benchmarks.baselines train --dataset golkar2018-mini --crop-tiles 4 --seed 0
    python -m benchmarks.baselines entry runs/golkar2018-mini/small0.99-large0.94-s*/
    gptextures leaderboard add my-board.json runs/golkar2018-mini/small0.99-large0.94-s*/ \\
        --dataset golkar2018-mini

``train`` writes ``OUT/<dataset>/<recipe>-s<seed>/`` (or ``--run-dir``): config, weights
(safetensors), test predictions, evaluation, loss curve, wall time and hardware. Rerunning the
same command resumes a killed run from its last checkpoint; a finished one is reported as is.
Width, learning rate and steps default to the recorded ``val`` scan's choice for that dataset
and configuration (``benchmarks/results/*-scan.json``, matched on the whole recipe but the lr,
steps and seed), else width 16, lr 1e-3 and 400 steps (said on stderr). ``entry`` prints the
leaderboard entry of the seeds of one recipe; ``gptextures leaderboard add`` adds it to a board.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TrainConfig

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _kv(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected LEVEL=VALUE, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None


def recorded_choice(probe: Callable[[int | None], TrainConfig]) -> dict[str, Any] | None:
    """The recorded val scan's (width, lr, steps) for a recipe, if a scan covered it.

    Args:
        probe: width (``None``: the scan's) -> the config to match; a scan's row matches when
            its ``key`` equals the probe's :meth:`TrainConfig.selection_key`.
    """
    from .scan import matching

    for path in sorted(RESULTS.glob("*-scan.json")):
        try:
            scan = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(scan.get("width"), int):
            sel = matching(scan, probe(scan["width"]))
            if sel is not None:
                return {**sel, "source": path.name, "width": scan["width"]}
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
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (part of the"
                   " recipe: the same seed gives the same bytes with the same threads)")
    t.add_argument("--out", default="runs", help="parent folder of run folders")
    t.add_argument("--run-dir", default=None, help="exact run folder (overrides --out)")
    t.add_argument("--checkpoint-every", type=int, default=50)
    t.add_argument("--overwrite", action="store_true", help="discard a run folder of another"
                   " config")
    t.add_argument("--no-progress", action="store_true")


def cmd_train(args: argparse.Namespace) -> int:
    from gptextures.io import resolve_spec

    from .config import make_config
    from .train import train

    spec = resolve_spec(args.dataset)
    p = dict(args.p)
    for name, value in (("small", args.p_small), ("large", args.p_large)):
        if value is not None:
            p[name] = value
    def config(width: int | None, lr: float = 1e-3, steps: int = 400) -> TrainConfig:
        w = args.width if args.width is not None else width
        probe = make_config(args.dataset, spec=spec, p=p, patch=dict(args.patch),
                            crop_tiles=args.crop_tiles)
        eff = args.efficient if args.efficient is not None else bool(probe.active_masks())
        return make_config(args.dataset, spec=spec, p=p, patch=dict(args.patch),
                           crop_tiles=args.crop_tiles, width=16 if w is None else w,
                           stages=args.stages, lr=lr, weight_decay=args.weight_decay,
                           steps=steps, batch_size=args.batch_size, seed=args.seed,
                           device=args.device, amp=args.amp, efficient=eff,
                           threads=args.threads)

    chosen = recorded_choice(config)
    if chosen is None:
        cfg = config(None, 1e-3 if args.lr is None else args.lr,
                     400 if args.steps is None else args.steps)
        if args.lr is None or args.steps is None:
            print(f"no recorded val scan covers {cfg.label()!r} at width {cfg.width} on"
                  f" {spec.name}: lr {cfg.lr:g}, {cfg.steps} steps (defaults; set --lr and"
                  " --steps)", file=sys.stderr)
    else:
        cfg = config(chosen["width"], chosen["lr"] if args.lr is None else args.lr,
                     chosen["steps"] if args.steps is None else args.steps)
        taken = [x for x, given in ((f"width {cfg.width}", args.width), (f"lr {cfg.lr:g}", args.lr),
                                    (f"{cfg.steps} steps", args.steps)) if given is None]
        if taken:
            print(f"{', '.join(taken)}: the val scan's choice for {cfg.label()!r}"
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

    print(json.dumps(entry_from_runs(args.runs, method=args.method), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baselines",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    e = sub.add_parser("entry", help="print the leaderboard entry of the run folders of one"
                       " recipe (add it to a board with `gptextures leaderboard add`)")
    e.add_argument("runs", nargs="+", help="run folders (the seeds of one recipe, >= 3)")
    e.add_argument("--method", default=None, help="name in the table (default: the config's)")
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
