"""The depth-3 baselines on ``gp3-512``: GPNet with one backdrop mask per level, and without.

    python -m benchmarks.baselines.depth3 [--seeds 3] [--jobs 2] [--quick]

The configurable hierarchy depth end to end: three levels (fine, medium, coarse), three masks
(4, 16 and 64 px patches, i.e. 128x128, 32x32 and 8x8 lattices at 512 px), a GPNet of 6 stages
(8x8 heatmap). Two rows: no masking, and the masks at p = 0.99 (fine, medium) and 0.94 (coarse),
the paper's best pair carried over (0.99 on the lattices of many small cells, 0.94 on the coarse
one, which then keeps ~4 of its 64 cells as the paper's large mask keeps 1 of 16). Learning rate
3e-3, the one the golkar2018-mini val scan (made with naive masking) chose for 8 of its 11
configurations (a step on
16 images of 512 px costs ~16x one of golkar2018-mini, so a full learning-rate scan does not fit
the 30-minute budget); the number of steps per row (<= 200) from a val scan (one scan seed, val
every 25 steps); then ``--seeds`` seeds per row on ``test``, one leaderboard entry per row. Writes
``results/depth3-gp3-512.{json,md}`` and the scan
``results/depth3-gp3-512-scan.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.paper.stats import summary
from gptextures import presets

from . import scan as bscan
from .config import make_config
from .grid import grid_jobs, run_jobs

RESULTS = Path(__file__).resolve().parents[1] / "results"
DATASET = "gp3-512"
MASKED = {"fine": 0.99, "medium": 0.99, "coarse": 0.94}


def rows(width: int, efficient: bool) -> dict[str, dict[str, Any]]:
    base = {"dataset": DATASET, "width": width}
    return {
        make_config(**base).label(): {**base, "p": {}},
        make_config(**base, p=MASKED).label(): {**base, "p": dict(MASKED),
                                                "efficient": efficient},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baselines.depth3",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-3])
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 steps, no entries")
    ap.add_argument("--efficient", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--runs", default="runs/depth3")
    ap.add_argument("--overwrite", action="store_true",
                    help="discard run folders that hold another config (else refused)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the .md from the committed .json and the notes")
    args = ap.parse_args(argv)
    name = "depth3-gp3-512" + ("-quick" if args.quick else "")
    if args.render_only:
        return render(Path(args.results), name)
    spec = presets.get(DATASET)
    out = Path(args.results)
    table = rows(args.width, args.efficient)
    max_steps = 10 if args.quick else args.max_steps
    t0 = time.perf_counter()
    scan = bscan.run_scan(table, lrs=args.lrs, steps=max_steps, eval_every=min(
        args.eval_every, max_steps), seeds=[100], runs_dir=Path(args.runs) / "scan",
        workers=args.jobs, overwrite=args.overwrite)
    scan.update({"fingerprint": spec.fingerprint, "dataset": spec.name, "width": args.width})
    bscan.save(scan, out / f"{name}-scan", f"Val scan for the depth-3 baselines ({DATASET})")
    scan_s = time.perf_counter() - t0
    jobs = grid_jobs(table, scan["selected"], range(args.seeds), args.runs, checkpoint_every=50)
    for job in jobs:
        job["train"]["overwrite"] = bool(args.overwrite)
    t1 = time.perf_counter()
    summaries = run_jobs(jobs, workers=args.jobs)
    grid_s = time.perf_counter() - t1
    report: dict[str, Any] = {
        "dataset": {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint},
        "width": args.width, "seeds": list(range(args.seeds)), "selected": scan["selected"],
        "scan_wall_s": scan_s, "grid_wall_s": grid_s,
        "cpu_s": scan["cpu_time_s_sum"] + sum(s["cpu_time_s"] for s in summaries),
        "runs": {label: [s for j, s in zip(jobs, summaries, strict=True) if j["row"] == label]
                 for label in table},
        "command": "python -m benchmarks.baselines.depth3 " + " ".join(sys.argv[1:]),
    }
    if not args.quick and args.seeds >= 3:
        from gptextures.leaderboard import Leaderboard, shipped_board_path
        from gptextures.runs import entry_from_runs

        path = shipped_board_path(DATASET)
        board = Leaderboard.load(path)
        for runs in report["runs"].values():
            board.add(entry_from_runs([r["run_dir"] for r in runs],
                                      description="depth-3 baseline: lr and steps chosen on val",
                                      notes=report["command"]), replace=True)
        board.save(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report, _reading(out / f"{name}-reading.md"))
    (out / f"{name}.md").write_text(text)
    print(text)
    return 0


def _reading(path: Path) -> str | None:
    """The maintainers' notes on the run, kept beside the results (if there are any)."""
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def markdown(report: dict[str, Any], reading: str | None = None) -> str:
    """The report as Markdown: the rows (mean ± std over seeds per level), time, notes."""
    spec = presets.get(DATASET)
    levels = spec.texture.level_names
    lines = [f"# Depth-3 baselines on {DATASET}", "", f"GPNet width {report['width']}, 6 stages;"
             f" seeds {report['seeds']}; scan {report['scan_wall_s'] / 60:.1f} min, runs"
             f" {report['grid_wall_s'] / 60:.1f} min wall, {report['cpu_s'] / 3600:.2f} CPU-core"
             f" hours in all. Command: `{report['command']}`. Test accuracy in %, mean ± std over"
             " seeds.", "",
             "| row | lr | steps | " + " | ".join(["Total", *levels]) + " |",
             "|:---|---:|---:|" + "---:|" * (1 + len(levels))]
    for label, runs in report["runs"].items():
        sel = report["selected"][label]
        cells = []
        for key in ["accuracy", *[f"accuracy/{n}" for n in levels]]:
            st = summary([r["test"][key] for r in runs])
            cells.append(f"{100 * st['mean']:.1f} ± {100 * st['std']:.1f}")
        lines.append(f"| {label} | {sel['lr']:g} | {sel['steps']} | " + " | ".join(cells) + " |")
    if reading:
        lines += ["", "## Notes", "", reading]
    return "\n".join(lines) + "\n"


def render(results: Path, name: str) -> int:
    """Rewrite ``<name>.md`` from ``<name>.json`` and the notes (no training)."""
    path = results / f"{name}.json"
    if not path.is_file():
        print(f"error: {path} does not exist; run the baselines first", file=sys.stderr)
        return 2
    report = json.loads(path.read_text(encoding="utf-8"))
    (results / f"{name}.md").write_text(markdown(report, _reading(results / f"{name}-reading.md")))
    print(f"rewrote {results / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
