"""Model selection on ``val``: the learning rate and the number of steps of each configuration.

As the paper scanned learning rates, each configuration is trained with every learning rate of
the scan for a few seeds (not the seeds of the final runs), scoring ``val`` every ``eval_every``
steps; the test split is never loaded. The selection is the (learning rate, step) pair with the
highest mean ``val`` joint accuracy over the scan seeds; ties go to the lower mean ``val``
log-loss, then to fewer steps. The whole scan (curves, choice, time) is recorded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import make_config
from .grid import Job, folder_name, run_jobs


def scan_jobs(rows: Mapping[str, Mapping[str, Any]], *, lrs: Sequence[float], steps: int,
              eval_every: int, seeds: Sequence[int], runs_dir: str | Path,
              overwrite: bool = False) -> list[Job]:
    """One job per (row, learning rate, seed); ``rows`` maps a label to make_config kwargs."""
    jobs = []
    for label, kw in rows.items():
        for lr in lrs:
            for seed in seeds:
                cfg = {**kw, "lr": float(lr), "steps": int(steps), "seed": int(seed)}
                jobs.append({
                    "row": label, "config": cfg,
                    "run_dir": str(Path(runs_dir) / folder_name(label) / f"lr{lr:g}-s{seed}"),
                    "train": {"eval_split": "val", "eval_every": int(eval_every),
                              "test": False, "checkpoint_every": 100,
                              "overwrite": bool(overwrite)},
                })
    return jobs


def select(curves: Mapping[float, Mapping[int, Sequence[Mapping[str, float]]]]) -> dict[str, Any]:
    """The (lr, steps) with the best mean val accuracy over seeds (ties: log-loss, then steps).

    Args:
        curves: lr -> seed -> val curve (points with ``step``, ``accuracy``, ``log_loss``).
    Returns:
        ``{"lr", "steps", "val_accuracy", "val_accuracy_std", "val_log_loss", "seeds"}``;
        the std is ``None`` with one seed. Only steps scored for every seed compete.
    Raises:
        ValueError: no step was scored for every seed of any learning rate.
    """
    best: tuple[float, float, int, float] | None = None
    out: dict[str, Any] = {}
    for lr, by_seed in curves.items():
        seeds = sorted(by_seed)
        at = {k: {p["step"]: p for p in by_seed[k]} for k in seeds}
        steps = sorted(set.intersection(*(set(a) for a in at.values()))) if seeds else []
        for s in steps:
            pts = [at[k][s] for k in seeds]
            acc = np.array([p["accuracy"] for p in pts])
            ll = float(np.mean([p.get("log_loss", math.inf) for p in pts]))
            key = (float(acc.mean()), -ll, -s, -float(lr))
            if best is None or key > best:
                best = key
                out = {"lr": float(lr), "steps": int(s), "val_accuracy": float(acc.mean()),
                       "val_accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
                       "val_log_loss": ll, "seeds": seeds}
    if not out:
        raise ValueError("curves: no step was scored on val for every scan seed; nothing to"
                         " select from")
    return out


def run_scan(rows: Mapping[str, Mapping[str, Any]], *, lrs: Sequence[float], steps: int,
             eval_every: int, seeds: Sequence[int], runs_dir: str | Path, workers: int = 1,
             scheduler: str | None = None, progress: bool = True,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the scan and return its record (curves per row/lr/seed, the selection per row)."""
    import os

    jobs = scan_jobs(rows, lrs=lrs, steps=steps, eval_every=eval_every, seeds=seeds,
                     runs_dir=runs_dir, overwrite=overwrite)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    summaries = run_jobs(jobs, workers=workers, scheduler=scheduler, progress=progress)
    wall = time.perf_counter() - t0
    curves: dict[str, dict[float, dict[int, list]]] = {}
    train_s = cpu_s = 0.0
    for job, s in zip(jobs, summaries, strict=True):
        curves.setdefault(job["row"], {}).setdefault(job["config"]["lr"], {})[s["seed"]] = \
            s["val_curve"]
        train_s += s["wall_time_s"]
        cpu_s += s["cpu_time_s"]
    selected = {label: select(c) for label, c in curves.items()}
    for label, sel in selected.items():  # what the choice applies to (TrainConfig.selection_key)
        sel["key"] = make_config(**rows[label]).selection_key()
    return {
        "rule": "max mean val joint accuracy over the scan seeds; ties: lower val log-loss,"
                " then fewer steps",
        "lrs": [float(x) for x in lrs], "max_steps": int(steps), "eval_every": int(eval_every),
        "seeds": [int(x) for x in seeds], "workers": workers,
        "rows": {label: dict(kw) for label, kw in rows.items()},
        "selected": selected,
        "curves": {label: {f"{lr:g}": {str(k): v for k, v in by.items()}
                           for lr, by in c.items()} for label, c in curves.items()},
        "wall_time_s": wall, "train_time_s_sum": train_s, "cpu_time_s_sum": cpu_s,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
    }


def scan_markdown(scan: Mapping[str, Any], title: str) -> str:
    """A readable account of a scan: the rule, the selection and the mean val curves."""
    lines = [f"# {title}", "", f"Rule: {scan['rule']}. Learning rates "
             f"{', '.join(f'{x:g}' for x in scan['lrs'])}; up to {scan['max_steps']} steps, val"
             f" scored every {scan['eval_every']} steps; scan seeds {scan['seeds']} (not the"
             f" seeds of the final runs). Wall time {scan['wall_time_s'] / 60:.1f} min with"
             f" {scan['workers']} job(s) at once; training used"
             f" {scan.get('cpu_time_s_sum', 0) / 3600:.2f} CPU-core hours{_load(scan)}.", "",
             "| configuration | lr | steps | val Total (mean ± std over scan seeds) |"
             " val log-loss |", "|:---|---:|---:|---:|---:|"]
    for label, sel in scan["selected"].items():
        std = sel["val_accuracy_std"]
        spread = "–" if std is None else f"{100 * std:.1f}"
        lines.append(f"| {label} | {sel['lr']:g} | {sel['steps']} | "
                     f"{100 * sel['val_accuracy']:.1f} ± {spread} | {sel['val_log_loss']:.3f} |")
    lines += ["", "Mean val joint accuracy (%) over the scan seeds, by learning rate and step:", ""]
    for label, by_lr in scan["curves"].items():
        lines.append(f"**{label}**")
        lines.append("")
        steps = sorted({p["step"] for by in by_lr.values() for c in by.values() for p in c})
        lines.append("| lr | " + " | ".join(str(s) for s in steps) + " |")
        lines.append("|---:|" + "---:|" * len(steps))
        for lr, by_seed in by_lr.items():
            cells = []
            for s in steps:
                v = [p["accuracy"] for c in by_seed.values() for p in c if p["step"] == s]
                cells.append(f"{100 * np.mean(v):.0f}" if v else "–")
            lines.append(f"| {lr} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _load(scan: Mapping[str, Any]) -> str:
    la = scan.get("load_average")
    if not la:
        return ""
    return (f"; 1-min load average {la['start'][0]:.1f} at the start, {la['end'][0]:.1f} at the"
            " end")


def matching(scan: Mapping[str, Any], cfg: Any) -> dict[str, Any] | None:
    """The scan's selection for a config (a :class:`TrainConfig`), matched on its
    ``selection_key``; ``None`` when the scan did not cover that recipe."""
    key = cfg.selection_key()
    return next((dict(sel) for sel in scan.get("selected", {}).values()
                 if sel.get("key") == key), None)


def save(scan: Mapping[str, Any], path: str | Path, title: str) -> None:
    """Write ``<path>.json`` and ``<path>.md``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.with_suffix(".json").write_text(json.dumps(scan, indent=1) + "\n", encoding="utf-8")
    p.with_suffix(".md").write_text(scan_markdown(scan, title) + "\n", encoding="utf-8")
