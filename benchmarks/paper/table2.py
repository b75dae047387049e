"""The paper's Table 2 (Sec. 3.2): backdrop masks at two scales against cropping, per scale.

    python -m benchmarks.paper.table2 --scale mini            # golkar2018-mini, 5 seeds
    python -m benchmarks.paper.table2 --scale mini --quick    # smoke run, < 10 minutes
    python -m benchmarks.paper.table2 --scale full --device cuda --jobs 1   # the paper's setting

Eleven rows: the nine mask configurations ``(p_small, p_large)`` in {0, 0.99, 0.999} x
{0, 0.75, 0.94} and the two crop baselines (4 and 16 fixed-location tiles per training image).
For each row the learning rate and the number of steps come from a scan on ``val``
(:mod:`benchmarks.baselines.scan`, recorded in ``results/table2-<scale>-scan.{json,md}``; rerun
with ``--rescan``); then every row is trained with ``--seeds`` seeds (0, 1, ...) and scored on
``test``. Writes ``results/table2-<scale>.{json,md,png}``: our Total / small / large (mean, std,
95% t interval over seeds) beside the paper's, a test per claim of the paper, and the time it
took; without ``--quick`` it also adds one leaderboard entry per row.

Runs are independent: ``--jobs N`` runs them in N local processes, ``--scheduler ADDRESS`` on a
Dask cluster. Each run writes its own folder under ``--runs`` and resumes it, so a killed grid
restarts where it stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import scan as bscan
from benchmarks.baselines.config import make_config
from benchmarks.baselines.grid import grid_jobs, run_jobs
from gptextures import presets

from . import stats

RESULTS = Path(__file__).resolve().parents[1] / "results"

# The paper's Table 2: (row, p_small, p_large, crop tiles, Total, Small, Large), in %.
PAPER: tuple[tuple[str, float, float, int, float, float, float], ...] = (
    ("(0, 0)", 0.0, 0.0, 1, 45.9, 64.7, 74.1),
    ("(0, 0.75)", 0.0, 0.75, 1, 54.1, 67.4, 82.9),
    ("(0, 0.94)", 0.0, 0.94, 1, 49.1, 55.3, 88.2),
    ("(0.99, 0)", 0.99, 0.0, 1, 57.1, 77.9, 73.8),
    ("(0.999, 0)", 0.999, 0.0, 1, 57.4, 68.2, 84.1),
    ("(0.99, 0.75)", 0.99, 0.75, 1, 53.5, 55.0, 98.2),
    ("(0.99, 0.94)", 0.99, 0.94, 1, 66.2, 78.7, 84.6),
    ("(0.999, 0.75)", 0.999, 0.75, 1, 54.7, 61.5, 88.8),
    ("(0.999, 0.94)", 0.999, 0.94, 1, 55.0, 58.5, 95.0),
    ("512x512 crop", 0.0, 0.0, 4, 45.3, 50.9, 87.9),
    ("256x256 crop", 0.0, 0.0, 16, 34.3, 53.9, 55.3),
)
METRICS = (("Total", "accuracy"), ("small", "accuracy/small"), ("large", "accuracy/large"))


@dataclass(frozen=True)
class Scale:
    """One setting of the experiment: dataset, network width, seeds and the val scan's grid."""

    dataset: str
    width: int
    seeds: int
    lrs: tuple[float, ...]
    max_steps: int
    eval_every: int
    scan_seeds: tuple[int, ...]
    quick_steps: int
    quick_seeds: int


SCALES = {
    # 256 px, 5 pooling stages (8x8 heatmap as in the paper), width 16: one naive step of the
    # four training images takes ~0.1 s on 2 cores, so the grid fits in 2 hours.
    # Learning rates: a pilot (one seed, 800 steps) put the plain network's best at 3e-3, the
    # upper end of 3e-4..3e-3, and every curve flat after ~350 steps.
    "mini": Scale("golkar2018-mini", width=16, seeds=5, lrs=(1e-3, 3e-3, 1e-2), max_steps=400,
                  eval_every=50, scan_seeds=(100, 101), quick_steps=60, quick_seeds=2),
    # For tests: the 64 px `tiny` preset (no val split, so --quick only).
    "smoke": Scale("tiny", width=4, seeds=3, lrs=(1e-3,), max_steps=4, eval_every=2,
                   scan_seeds=(100,), quick_steps=3, quick_seeds=3),
    # The paper's setting: 1024 px, 7 stages, width 64, 10 models per row.
    "full": Scale("golkar2018", width=64, seeds=10, lrs=(1e-4, 3e-4, 1e-3), max_steps=1000,
                  eval_every=50, scan_seeds=(100, 101), quick_steps=5, quick_seeds=1),
}


def row_configs(scale: Scale, *, efficient: bool, device: str = "cpu") -> dict[str, dict]:
    """Row name -> make_config kwargs (without lr, steps, seed)."""
    return {
        row: {"dataset": scale.dataset, "p": {"small": ps, "large": pl}, "crop_tiles": tiles,
              "width": scale.width, "device": device,
              "efficient": efficient and (ps > 0 or pl > 0)}
        for row, ps, pl, tiles, *_ in PAPER
    }


def _label(kw: Mapping[str, Any]) -> str:
    return make_config(**kw).label()


def load_scan(path: Path, fingerprint: str, scale: Scale) -> dict[str, Any] | None:
    """The recorded scan if it was made for this dataset, width and learning-rate grid."""
    if not path.is_file():
        return None
    scan = json.loads(path.read_text(encoding="utf-8"))
    if scan.get("fingerprint") != fingerprint or scan.get("width") != scale.width or \
            scan.get("lrs") != list(scale.lrs) or scan.get("max_steps") != scale.max_steps:
        return None
    scan["file"] = str(path)
    return scan


def choices(scan: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Row -> the scan's (lr, steps) for that row's recipe (``TrainConfig.selection_key``).

    Raises:
        ValueError: the scan did not cover a row's recipe (made with other settings, e.g.
            naive masking); it names the row and suggests ``--rescan``.
    """
    out = {}
    for row, kw in rows.items():
        sel = bscan.matching(scan, make_config(**kw))
        if sel is None:
            raise ValueError(f"the val scan {scan.get('file', 'given')!r} has no choice for row"
                             f" {row} with these settings (efficient={kw.get('efficient')},"
                             f" width {kw.get('width')}); rerun with --rescan")
        out[row] = sel
    return out


def analyse(per_row: Mapping[str, Mapping[str, Sequence[float]]]) -> list[dict[str, Any]]:
    """One record per claim of the paper, each with its test over seeds and a verdict.

    ``per_row``: row -> metric key -> per-seed values (same seed order in every row).
    """
    def test(a: str, b: str, metric: str, claim: str, direction: str = "greater") -> dict:
        x, y = per_row[a][metric], per_row[b][metric]
        if direction == "less":
            x, y = y, x
        w, wrev = stats.welch(x, y), stats.welch(y, x)
        boot = stats.paired_bootstrap(x, y)
        return {"claim": claim, "metric": metric, "a": a, "b": b, "direction": direction,
                "mean_a": float(np.mean(per_row[a][metric])),
                "mean_b": float(np.mean(per_row[b][metric])), "welch": w,
                "paired_bootstrap": boot,
                "verdict": stats.verdict(w["p_greater"], wrev["p_greater"])}

    out = []
    masked = [r for r, ps, pl, tiles, *_ in PAPER if tiles == 1 and (ps or pl)]
    for r in masked:
        out.append(test(r, "(0, 0)", "accuracy", "backdrop beats no masking (Total)"))
    for r in ("(0, 0.75)", "(0, 0.94)"):
        out.append(test(r, "(0, 0)", "accuracy/large",
                        "a mask at the large scale helps the large scale"))
    for r in ("(0.99, 0)", "(0.999, 0)"):
        out.append(test(r, "(0, 0)", "accuracy/small",
                        "a mask at the small scale helps the small scale"))
    singles = [r for r, ps, pl, tiles, *_ in PAPER if tiles == 1 and bool(ps) != bool(pl)]
    for r in singles:
        out.append(test("(0.99, 0.94)", r, "accuracy",
                        "both masks give the best total: (0.99, 0.94) beats every single mask"))
    out.append(test("(0.99, 0.94)", "(0.999, 0.94)", "accuracy",
                    "both masks at high p deteriorate: (0.999, 0.94) below (0.99, 0.94)"))
    out.append(test("512x512 crop", "(0, 0)", "accuracy/large",
                    "512 px crops raise the large-scale accuracy"))
    out.append(test("512x512 crop", "(0, 0)", "accuracy/small",
                    "512 px crops lower the small-scale accuracy", direction="less"))
    out.append(test("256x256 crop", "(0, 0)", "accuracy",
                    "256 px crops lower the Total", direction="less"))
    return out


def compare_naive(row: str, efficient: Mapping[str, Sequence[float]],
                  naive: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The same row trained with the efficient spatial path and with naive masking (same seeds,
    so the same initial weights and masks): per metric, both summaries, a two-sided Welch test
    and the paired bootstrap of efficient - naive."""
    out: dict[str, Any] = {"row": row}
    for name, key in METRICS:
        w = stats.welch(efficient[key], naive[key])
        p_two = min(1.0, 2 * min(w["p_greater"], 1 - w["p_greater"]))
        out[name] = {"efficient": stats.summary(efficient[key]),
                     "naive": stats.summary(naive[key]), "welch_p_two_sided": p_two,
                     "paired_bootstrap": stats.paired_bootstrap(efficient[key], naive[key])}
    return out


def _fmt(s: Mapping[str, float]) -> str:
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} [{100 * s['ci_low']:.1f}, " \
           f"{100 * s['ci_high']:.1f}]"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the table beside the paper's, the claims, the budget."""
    r = report
    lines = [f"# Table 2 at scale `{r['scale']}`{' (quick smoke run)' if r['quick'] else ''}", "",
             f"Dataset `{r['dataset']['name']}` v{r['dataset']['version']} (fingerprint"
             f" `{r['dataset']['fingerprint'][:12]}`), split `test` ({r['test_count']} images);"
             f" GPNet width {r['width']}, {r['stages']} stages; seeds {r['seeds']}."
             " Ours: mean ± std over seeds (ddof=1) [95% t interval]; paper: the mean of"
             " 10 models at 1024 px. Accuracy in %. Crop rows keep the paper's names (tiles of"
             f" a 1024 px image); here the 4 and 16 tiles are {r['tile_px']['4']} and"
             f" {r['tile_px']['16']} px.", "",
             "| row | lr | steps | Total | small | large | paper Total | paper small |"
             " paper large |", "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        x = r["results"][row]
        lines.append(f"| {row} | {x['lr']:g} | {x['steps']} | {_fmt(x['Total'])} |"
                     f" {_fmt(x['small'])} | {_fmt(x['large'])} | {x['paper']['Total']} |"
                     f" {x['paper']['small']} | {x['paper']['large']} |")
    lines += ["", "## The paper's claims, tested over seeds", "",
              "Welch's t test (one-sided, in the paper's direction) and a paired bootstrap over"
              " seeds (same seed = same initial weights) of the mean difference; verdict at"
              " alpha = 0.05 on Welch: *reproduced*, *not significant*, or *contradicted*"
              " (significant the other way). Many tests: read single p-values near 0.05 with"
              " care.", "",
              "| claim | comparison | metric | means (%) | Welch p | paired diff [95% CI] (%) |"
              " verdict |", "|:---|:---|:---|---:|---:|---:|:---|"]
    for c in r["claims"]:
        b = c["paired_bootstrap"]
        op = ">" if c["direction"] == "greater" else "<"
        lines.append(f"| {c['claim']} | {c['a']} {op} {c['b']} | {c['metric']} |"
                     f" {100 * c['mean_a']:.1f} vs {100 * c['mean_b']:.1f} |"
                     f" {c['welch']['p_greater']:.3f} | {100 * b['diff']:+.1f}"
                     f" [{100 * b['ci_low']:+.1f}, {100 * b['ci_high']:+.1f}] |"
                     f" {c['verdict']} |")
    c = r.get("efficient_vs_naive")
    if c:
        lines += ["", "## Efficient vs naive", "",
                  f"Row {c['row']} trained with the compute-saving spatial backdrop (as in the"
                  " table) and with naive masking, same seeds (same initial weights, same masks)."
                  " The efficient path's gradient differs from naive masking only through"
                  " train-mode BatchNorm (docs/backdrop.md); this checks what that does to"
                  " learning.", "",
                  "| score | efficient | naive | Welch p (two-sided) |"
                  " paired diff [95% CI] (%) |", "|:---|---:|---:|---:|---:|"]
        for name, _ in METRICS:
            x = c[name]
            b = x["paired_bootstrap"]
            lines.append(f"| {name} | {_fmt(x['efficient'])} | {_fmt(x['naive'])} |"
                         f" {x['welch_p_two_sided']:.3f} | {100 * b['diff']:+.1f}"
                         f" [{100 * b['ci_low']:+.1f}, {100 * b['ci_high']:+.1f}] |")
    t = r["timing"]
    lines += ["", "## Budget", "",
              f"Grid: {len(r['rows'])} rows x {len(r['seeds'])} seeds"
              + (f" + {len(r['seeds'])} naive-check runs" if r.get("efficient_vs_naive") else "")
              + f" = {t['runs']} runs in"
              f" {t['grid_wall_s'] / 60:.1f} min wall ({t['workers']} job(s) at once,"
              f" {t['threads']} torch thread(s) each) on {r['machine']}; load average at the"
              f" start {t['load_start']}, at the end {t['load_end']}. Training used"
              f" {t['train_cpu_s_sum'] / 3600:.2f} CPU-core hours (process CPU time, summed"
              f" over runs): {t['train_cpu_s_sum'] / 3600 / 2:.2f} h on 2 dedicated cores,"
              " whatever else the machine was doing."]
    if t.get("already_complete"):
        lines.append(f"{t['already_complete']} of the {t['runs']} runs were already complete"
                     " (read back from their run folders, their time counted as recorded).")
    if t.get("scan_wall_s") is not None:
        la = t.get("scan_load_average")
        lines.append(f"The val scan (`{r['scan_file']}`, {t['scan_runs']} runs"
                     f"{', made in this run' if t.get('scan_fresh') else ', recorded earlier'})"
                     f" took {t['scan_wall_s'] / 60:.1f} min wall and"
                     f" {t['scan_cpu_s'] / 3600:.2f} CPU-core hours"
                     + (f" (1-min load average {la['start'][0]:.1f} at its start)" if la else "")
                     + f": scan and grid together {(t['scan_wall_s'] + t['grid_wall_s']) / 60:.1f}"
                     " min wall.")
    if r.get("reading"):
        lines += ["", "## Reading", "", r["reading"]]
    lines += ["", f"Command: `{r['command']}`"]
    return "\n".join(lines) + "\n"


def figure(report: Mapping[str, Any], path: Path) -> None:
    """One panel per score: ours (mean, 95% interval) and the paper's value per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    x = np.arange(len(rows))
    for ax, (name, _) in zip(axes, METRICS, strict=True):
        m = np.array([100 * report["results"][r][name]["mean"] for r in rows])
        lo = np.array([100 * report["results"][r][name]["ci_low"] for r in rows])
        hi = np.array([100 * report["results"][r][name]["ci_high"] for r in rows])
        paper = [report["results"][r]["paper"][name] for r in rows]
        ax.bar(x, m, color="#4C72B0", alpha=0.8, label=f"ours ({report['scale']}, 95% CI)")
        ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="none", ecolor="black", capsize=3)
        ax.scatter(x, paper, marker="D", color="#C44E52", zorder=3, label="paper (1024 px)")
        ax.axhline(25 if name == "Total" else 50, color="gray", ls="--", lw=1, label="chance")
        ax.set_title(name)
        ax.set_xticks(x, rows, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Table 2 on {report['dataset']['name']}: backdrop masks vs crops")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), shared with other work"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Scan (if needed), grid, report. Returns the report dict (also written to disk)."""
    scale = SCALES[args.scale]
    spec = presets.get(scale.dataset)
    out = Path(args.results)
    name = f"table2-{args.scale}" + ("-quick" if args.quick else "")
    runs_dir = Path(args.runs or f"runs/{name}")
    rows = row_configs(scale, efficient=args.efficient, device=args.device)
    scan_path = out / f"table2-{args.scale}-scan.json"
    scan = None
    if not args.rescan:  # this run's results folder first, then the committed scan
        for path in dict.fromkeys([scan_path, RESULTS / scan_path.name]):
            scan = scan or load_scan(path, spec.fingerprint, scale)
    timing: dict[str, Any] = {"workers": args.jobs, "threads": 1, "load_start": _load(),
                              "scan_wall_s": None}
    check = args.naive_check if args.efficient and args.naive_check != "none" else None
    if check is not None and check not in rows:
        raise ValueError(f"naive_check: {check!r} is not a Table 2 row ({', '.join(rows)})")
    if scan is None and args.quick:
        chosen = {row: {"lr": 1e-3, "steps": scale.quick_steps} for row in rows}
    else:
        if scan is None:
            scan_rows = {_label(kw): kw for kw in rows.values()}
            scan = bscan.run_scan(scan_rows, lrs=scale.lrs, steps=scale.max_steps,
                                  eval_every=scale.eval_every, seeds=scale.scan_seeds,
                                  runs_dir=runs_dir.parent / f"table2-{args.scale}-scan",
                                  workers=args.jobs, scheduler=args.scheduler,
                                  progress=not args.no_progress, overwrite=args.overwrite)
            scan.update({"fingerprint": spec.fingerprint, "dataset": spec.name,
                         "width": scale.width, "machine": _machine(), "command": _command()})
            bscan.save(scan, scan_path.with_suffix(""), f"Val scan for Table 2 ({args.scale})")
            scan["file"] = str(scan_path.with_suffix(".json"))
            timing["scan_fresh"] = True
        timing.update(scan_wall_s=scan["wall_time_s"], scan_cpu_s=scan["cpu_time_s_sum"],
                      scan_load_average=scan.get("load_average"),
                      scan_runs=sum(len(by) for c in scan["curves"].values()
                                    for by in c.values()))
        chosen = choices(scan, rows)
    if args.scan_only:
        return {"scan": scan}
    seeds = list(range(args.seeds or (scale.quick_seeds if args.quick else scale.seeds)))
    cap = scale.quick_steps if args.quick else None
    jobs = grid_jobs(rows, chosen, seeds, runs_dir, steps_cap=cap)
    if check is not None:
        naive = {f"{check} naive": {**rows[check], "efficient": False}}
        jobs += grid_jobs(naive, {f"{check} naive": chosen[check]}, seeds, runs_dir,
                          steps_cap=cap)
    for job in jobs:
        job["train"]["overwrite"] = bool(args.overwrite)
    t0 = time.perf_counter()
    summaries = run_jobs(jobs, workers=args.jobs, scheduler=args.scheduler,
                         progress=not args.no_progress)
    timing.update(grid_wall_s=time.perf_counter() - t0, runs=len(jobs), load_end=_load(),
                  train_time_s_sum=sum(s["wall_time_s"] for s in summaries),
                  train_cpu_s_sum=sum(s["cpu_time_s"] for s in summaries),
                  already_complete=sum(bool(s["already_complete"]) for s in summaries))
    per_row: dict[str, dict[str, list[float]]] = {}
    run_dirs: dict[str, list[str]] = {}
    for job, s in zip(jobs, summaries, strict=True):
        d = per_row.setdefault(job["row"], {})
        for _, key in METRICS:
            d.setdefault(key, []).append(s["test"][key])
        run_dirs.setdefault(job["row"], []).append(s["run_dir"])
    results = {}
    for row, ps, pl, tiles, *paper in PAPER:
        sel = chosen[row]
        results[row] = {
            "p_small": ps, "p_large": pl, "crop_tiles": tiles, "lr": sel["lr"],
            "steps": min(sel["steps"], scale.quick_steps) if args.quick else sel["steps"],
            "per_seed": per_row[row],
            **{n: stats.summary(per_row[row][k]) for n, k in METRICS},
            "paper": dict(zip(("Total", "small", "large"), paper, strict=True)),
        }
    cfg0 = make_config(**rows["(0, 0)"])
    report = {
        "scale": args.scale, "quick": bool(args.quick),
        "dataset": {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint},
        "test_count": spec.num_samples("test"), "width": scale.width, "stages": cfg0.stages,
        "tile_px": {str(k): spec.texture.size[0] // int(k**0.5) for k in (4, 16)},
        "seeds": seeds, "rows": [r[0] for r in PAPER], "results": results,
        "claims": analyse(per_row), "timing": timing, "machine": _machine(),
        "efficient": bool(args.efficient), "device": args.device,
        "scan_file": Path(scan["file"]).name if scan is not None else None,
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(), "command": _command(),
        "run_dirs": run_dirs, "reading": _reading(out / f"{name}-reading.md"),
        "efficient_vs_naive": None if check is None else compare_naive(
            check, per_row[check], per_row[f"{check} naive"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    figure(report, out / f"{name}.png")
    if not args.quick and args.leaderboard is not False:
        add_entries(report, spec)
    return report


def render(results: Path, name: str, leaderboard: bool = False) -> int:
    """Rewrite ``<name>.md`` and ``.png`` from ``<name>.json`` (no training; timing kept), and
    with ``leaderboard`` the rows' entries from their run folders."""
    path = results / f"{name}.json"
    if not path.is_file():
        print(f"error: {path} does not exist; run the grid first", file=sys.stderr)
        return 2
    report = json.loads(path.read_text(encoding="utf-8"))
    report["reading"] = _reading(results / f"{name}-reading.md")
    if leaderboard and not report["quick"]:
        add_entries(report, presets.get(report["dataset"]["name"]))
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (results / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    figure(report, results / f"{name}.png")
    print(f"rewrote {results / name}.{{json,md,png}}")
    return 0


def _reading(path: Path) -> str | None:
    """The maintainers' written reading of the results, kept beside them (if there is one)."""
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def add_entries(report: Mapping[str, Any], spec: Any) -> None:
    """One leaderboard entry per row (mean and std over its seeds) in the shipped board."""
    from gptextures.leaderboard import Leaderboard, shipped_board_path
    from gptextures.runs import entry_from_runs

    path = shipped_board_path(spec.name)
    board = Leaderboard.load(path) if path.is_file() else Leaderboard.for_dataset(spec)
    for row in report["rows"]:
        entry = entry_from_runs(report["run_dirs"][row],
                                description=f"Table 2 row {row} at scale {report['scale']}:"
                                            " lr and steps chosen on val",
                                notes=f"python -m benchmarks.paper.table2 --scale"
                                      f" {report['scale']}")
        board.add(entry, replace=True, where=f"row {row}")
    board.save(path)


def _command() -> str:
    return "python -m benchmarks.paper.table2 " + " ".join(sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.paper.table2",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="mini")
    ap.add_argument("--quick", action="store_true", help="few steps and seeds: a smoke run")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per row (default: 5 mini,"
                    " 10 full)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once in local processes")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://...)")
    ap.add_argument("--runs", default=None, help="run folders (default runs/table2-<scale>)")
    ap.add_argument("--results", default=str(RESULTS), help="where the report goes")
    ap.add_argument("--rescan", action="store_true", help="redo the val scan")
    ap.add_argument("--scan-only", action="store_true", help="stop after the val scan")
    ap.add_argument("--overwrite", action="store_true",
                    help="discard run folders that hold another config (else refused)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the .md and .png from the committed .json (and the reading);"
                         " with --leaderboard also the entries from the run folders it names")
    ap.add_argument("--efficient", action=argparse.BooleanOptionalAction, default=True,
                    help="compute-saving spatial backdrop for masked rows (default on)")
    ap.add_argument("--naive-check", default="(0.99, 0.94)", metavar="ROW",
                    help="also train this row with naive masking and compare ('none': skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--leaderboard", action=argparse.BooleanOptionalAction, default=None,
                    help="add one entry per row to the dataset's shipped leaderboard (default:"
                         " on for a full grid, off with --quick and --render-only)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.seeds < 3 and not args.quick:
        print("error: --seeds must be >= 3 (a leaderboard entry needs 3 seeds)", file=sys.stderr)
        return 2
    if args.scan_only and args.quick:
        print("error: --scan-only makes the val scan, which --quick skips; drop one of them",
              file=sys.stderr)
        return 2
    try:
        if args.render_only:
            name = f"table2-{args.scale}" + ("-quick" if args.quick else "")
            return render(Path(args.results), name, leaderboard=args.leaderboard is True)
        report = run(args)
        if args.scan_only:
            print(f"scan recorded in {Path(args.results) / f'table2-{args.scale}-scan.md'}")
            return 0
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and half-done ones resume from their last"
              " checkpoint; rerun the same command", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = f"table2-{args.scale}" + ("-quick" if args.quick else "")
    print(f"wrote {Path(args.results) / name}.{{json,md,png}}")
    for row in report["rows"]:
        x = report["results"][row]
        print(f"{row:>16}  Total {100 * x['Total']['mean']:5.1f}  small"
              f" {100 * x['small']['mean']:5.1f}  large {100 * x['large']['mean']:5.1f}"
              f"   (paper {x['paper']['Total']}, {x['paper']['small']}, {x['paper']['large']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
