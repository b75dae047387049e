"""Run folders: what training one baseline model writes, read back and turned into entries.

A run folder (format version 1) holds:

- ``config.json``: what was trained, ``{"format": "gptextures-run-config", "format_version": 1,
  "method", "dataset": {"name", "version", "fingerprint"}, "model": {"class", "kwargs",
  "params"}, "masks": [{"name", "patch_px", "p"}, ...], "crop": null | {"tiles", "tile_px"},
  "training": {...}, "seed"}``; two runs with equal configs but for ``seed`` are seeds of one
  recipe;
- ``dataset.json``: the dataset's spec (so a run of a custom dataset is scored without a preset);
- ``model.safetensors`` (or ``model.pt``): the final state dict;
- ``predictions.json``: test predictions in the evaluator's submission format;
- ``evaluation.json``: :meth:`EvaluationResult.to_dict` of those predictions;
- ``loss_curve.csv``: ``step,loss,elapsed_s``;
- ``checkpoint.pt``: only while the run is unfinished (resume state);
- ``run.json``, written last: ``{"format": "gptextures-run", "format_version": 1,
  "status": "complete", "wall_time_s", "hardware": {...}, "torch_version", "package_version",
  "date"}``.

:func:`load_run` checks all of it and rescores the predictions (the evaluation is recomputed
from ``predictions.json``, never trusted); :func:`entry_from_runs` turns the seeds of one recipe
into a leaderboard entry (mean and std over seeds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluation import EvaluationResult, Evaluator, FingerprintMismatchError
from .spec import DatasetSpec

CONFIG_FORMAT = "gptextures-run-config"
RUN_FORMAT = "gptextures-run"
FORMAT_VERSION = 1
CONFIG = "config.json"
DATASET = "dataset.json"
PREDICTIONS = "predictions.json"
EVALUATION = "evaluation.json"
LOSS_CURVE = "loss_curve.csv"
RUN = "run.json"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = ("model.safetensors", "model.pt")
_CONFIG_KEYS = {"format", "format_version", "method", "dataset", "model", "masks", "crop",
                "training", "seed"}
_RUN_KEYS = {"format", "format_version", "status", "wall_time_s", "hardware", "torch_version",
             "package_version", "date"}
_ACC_TOL = 1e-9


def read_json(path: Path) -> Any:
    """A JSON file's content, or a ValueError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"run folder: missing {path.name} in {str(path.parent)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc})") from None


def _check_header(data: Any, path: Path, fmt: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != fmt:
        raise ValueError(f"{str(path)!r}: format must be {fmt!r}, got {data.get('format')!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: format_version {data.get('format_version')!r} is not"
                         f" supported (this package reads {FORMAT_VERSION})")
    missing = sorted(keys - set(data))
    if missing:
        raise ValueError(f"{str(path)!r}: missing keys {missing}")
    return data


def hardware_text(hw: Mapping[str, Any]) -> str:
    """One line for a leaderboard's Hardware field, e.g. ``"cpu: 2 threads, AMD EPYC ..."``."""
    device = hw.get("device", "?")
    parts = [f"{hw['threads']} threads" if "threads" in hw else None,
             hw.get("gpu") if device.startswith("cuda") else hw.get("cpu")]
    return f"{device}: " + ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Run:
    """One complete run folder, checked and rescored.

    Attributes:
        path: the folder.
        config: ``config.json``; run: ``run.json``; spec: the dataset (``dataset.json``).
        evaluation: the test predictions rescored by :class:`~gptextures.Evaluator`.
        weights_path: ``model.safetensors`` (or ``model.pt``).
    """

    path: Path
    config: dict[str, Any]
    run: dict[str, Any]
    spec: DatasetSpec
    evaluation: EvaluationResult
    weights_path: Path

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def recipe(self) -> dict[str, Any]:
        """The config without the seed and the evaluation settings: runs with equal recipes are
        seeds of one entry."""
        return {k: v for k, v in self.config.items() if k not in ("seed", "evaluation")}


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read and check a complete run folder; the evaluation is recomputed from the predictions.

    Raises ``FileNotFoundError`` (missing folder or file), ``ValueError`` (bad content, an
    unfinished run, an evaluation.json that disagrees with the predictions) naming the file,
    ``FingerprintMismatchError`` when the predictions are for another dataset.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder: {str(folder)!r} is not a directory")
    config = _check_header(read_json(folder / CONFIG), folder / CONFIG, CONFIG_FORMAT,
                           _CONFIG_KEYS)
    if not (folder / RUN).is_file() and (folder / CHECKPOINT).is_file():
        raise ValueError(f"run folder: {str(folder)!r} is an unfinished run (a checkpoint, no"
                         f" {RUN}); rerun the training command to resume it")
    run = _check_header(read_json(folder / RUN), folder / RUN, RUN_FORMAT, _RUN_KEYS)
    if run["status"] != "complete":
        raise ValueError(f"{str(folder / RUN)!r}: status is {run['status']!r}; the run has not"
                         " finished (rerun the training command to resume it)")
    spec = DatasetSpec.from_dict(read_json(folder / DATASET))
    declared = config["dataset"].get("fingerprint") if isinstance(config["dataset"], dict) else None
    if declared != spec.fingerprint:
        raise FingerprintMismatchError(
            f"{str(folder / CONFIG)!r}: dataset fingerprint {str(declared)[:12]}... differs from"
            f" dataset.json's {spec.fingerprint[:12]}...")
    weights = [folder / w for w in WEIGHTS if (folder / w).is_file()]
    if not weights:
        raise FileNotFoundError(f"run folder: no weights ({' or '.join(WEIGHTS)}) in"
                                f" {str(folder)!r}")
    evaluation = Evaluator(spec).evaluate_submission(folder / PREDICTIONS)
    stored = read_json(folder / EVALUATION)
    if not isinstance(stored, dict) or abs(stored.get("accuracy", -1) - evaluation.accuracy) \
            > _ACC_TOL:
        raise ValueError(f"{str(folder / EVALUATION)!r}: accuracy {stored.get('accuracy')!r}"
                         f" disagrees with predictions.json ({evaluation.accuracy!r})")
    return Run(folder, config, run, spec, evaluation, weights[0])


def differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every leaf where two configs differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def entry_from_runs(runs: Sequence[Run | str | os.PathLike[str]], *, method: str | None = None,
                    description: str = "", notes: str = "") -> dict[str, Any]:
    """A leaderboard entry (mean and std over seeds) from the run folders of one recipe.

    Args:
        runs: run folders (or loaded :class:`Run`) that differ only in their seed (at least
            ``leaderboard.MIN_SEEDS`` = 3).
        method: the name shown in the table (default: the config's ``method``).
        description, notes: free text for the entry.
    Raises:
        ValueError: runs of different recipes (the differing keys are named), repeated seeds.
    """
    from .leaderboard import MIN_SEEDS, make_entry

    if len(runs) < MIN_SEEDS:
        raise ValueError(f"runs: a leaderboard entry needs the run folders of at least {MIN_SEEDS}"
                         f" seeds of one recipe, got {len(runs)}; train more seeds (--seed)")
    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    first = loaded[0]
    for r in loaded[1:]:
        diff = differences(first.recipe(), r.recipe())
        if diff:
            raise ValueError(f"runs: {str(r.path)!r} is not a seed of the same recipe as"
                             f" {str(first.path)!r}: "
                             + "; ".join(f"{k}: {a!r} vs {b!r}" for k, a, b in diff[:5]))
    seeds = [r.seed for r in loaded]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs: repeated seeds {sorted(seeds)}; each seed counts once")
    cfg = first.config
    hardware = sorted({hardware_text(r.run["hardware"]) for r in loaded})
    masks = [{"name": m["name"], "p": m["p"], "patch_px": m["patch_px"]} for m in cfg["masks"]
             if m["p"] > 0]  # p = 0 slots are exact no-ops: the entry lists the active masks
    training = {**cfg["training"], "model": cfg["model"]["class"],
                "model_kwargs": cfg["model"]["kwargs"], "crop": cfg["crop"]}
    wall = [float(r.run["wall_time_s"]) for r in loaded]
    return make_entry(
        method=method or cfg["method"], seeds=seeds, results=[r.evaluation for r in loaded],
        params=int(cfg["model"]["params"]), training=training, hardware="; ".join(hardware),
        train_time_s=sum(wall) / len(wall), backdrop_masks=masks, description=description,
        notes=notes, split="test")
