"""Run many independent training jobs: in this process, in local processes, or on Dask.

A job is a plain dict (picklable, JSON-ready): ``{"row": str, "config": make_config kwargs,
"run_dir": str, "train": train kwargs}``. Every job writes its own run folder and resumes it
when rerun, so a killed grid restarts where it stopped: complete runs are read back, half-done
ones continue from their last checkpoint.

``jobs=N`` runs them in ``N`` local processes (``spawn``; each run uses its config's
``threads``, default 1, so N jobs want N cores); ``scheduler="tcp://host:8786"`` sends them
to a Dask distributed cluster, whose workers must be able to import ``benchmarks`` (start them
from the repository root) and reach the run folders (a shared filesystem).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Job = dict[str, Any]


def run_job(job: Job) -> dict[str, Any]:
    """Run one job (in whatever process calls it); returns a JSON-ready summary."""
    from .config import make_config
    from .train import train

    cfg = make_config(**job["config"])
    t = time.perf_counter()
    res = train(cfg, job["run_dir"], progress=False, **job.get("train", {}))
    return {
        "run_dir": str(res.path), "seed": cfg.seed, "label": cfg.label(),
        "wall_time_s": res.wall_time_s, "cpu_time_s": res.cpu_time_s,
        "job_wall_s": time.perf_counter() - t,
        "already_complete": res.already_complete, "resumed_from": res.resumed_from,
        "test": None if res.test is None else res.test.metrics(),
        "val_curve": res.val_curve, "threads": cfg.threads,
    }


def _check_address(scheduler: str, timeout: float = 5.0) -> Any:
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("scheduler: dask.distributed is not installed (pip install"
                         " 'gptextures[dask]')") from None
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"scheduler: cannot reach the Dask scheduler at {scheduler!r} within"
                         f" {timeout:g} s ({exc})") from None


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, scheduler: str | None = None,
             progress: bool = True, on_done: Callable[[Job, dict[str, Any]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Run ``jobs``; returns their summaries in job order (``on_done`` called as each ends)."""
    from tqdm.auto import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"jobs must be an int >= 1, got {workers!r}")
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="runs", disable=not progress, dynamic_ncols=True)

    def done(i: int, summary: dict[str, Any]) -> None:
        results[i] = summary
        if on_done is not None:
            on_done(jobs[i], summary)
        bar.set_postfix_str(f"{summary['label']} s{summary['seed']}", refresh=False)
        bar.update(1)

    try:
        if scheduler is not None:
            client = _check_address(scheduler)
            try:
                from dask.distributed import as_completed

                futures = {client.submit(run_job, j, pure=False): i for i, j in enumerate(jobs)}
                for fut in as_completed(futures):
                    done(futures[fut], fut.result())
            finally:
                client.close()
        elif workers == 1 or len(jobs) <= 1:
            for i, j in enumerate(jobs):
                done(i, run_job(j))
        else:
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                        mp_context=ctx) as ex:
                futures = {ex.submit(run_job, j): i for i, j in enumerate(jobs)}
                try:
                    for fut in cf.as_completed(futures):
                        done(futures[fut], fut.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return [r for r in results if r is not None]


def folder_name(label: str) -> str:
    """A row label as a folder name (letters, digits, ``.`` and ``-`` kept, the rest ``_``)."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label)


def grid_jobs(rows: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, Mapping[str, Any]],
              seeds: Sequence[int], runs_dir: str | Path, *, steps_cap: int | None = None,
              checkpoint_every: int = 100) -> list[Job]:
    """One job per (row, seed): ``rows`` maps a row to make_config kwargs (without lr, steps
    and seed), ``chosen`` a row to its selection (``lr``, ``steps``, e.g. a scan's); the run
    folder is ``runs_dir/<row>/s<seed>``; ``steps_cap`` caps the steps (smoke runs)."""
    jobs = []
    for row, kw in rows.items():
        sel = chosen[row]
        steps = sel["steps"] if steps_cap is None else min(sel["steps"], steps_cap)
        for seed in seeds:
            jobs.append({"row": row, "config": {**kw, "lr": sel["lr"], "steps": int(steps),
                                                "seed": int(seed)},
                         "run_dir": str(Path(runs_dir) / folder_name(row) / f"s{seed}"),
                         "train": {"checkpoint_every": checkpoint_every}})
    return jobs
