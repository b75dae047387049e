"""Reading a run folder (format version 1) for ``gptextures publish``, until ``gptextures.runs``.

Stop-gap: the baselines' own reader (``gptextures.runs.load_run``) replaces this module when
it exists (``gptextures.hub`` prefers it). Same contract: :func:`load_run` returns an object
with ``path``, ``config``, ``run``, ``spec``, ``evaluation`` (rescored from
``predictions.json``, never trusted) and ``weights_path``; bad content raises ValueError
naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evaluation import EvaluationResult, Evaluator, FingerprintMismatchError
from .spec import DatasetSpec

WEIGHTS = ("model.safetensors", "model.pt")
_HEADERS = {
    "config.json": ("gptextures-run-config", {"method", "dataset", "model", "masks", "crop",
                                              "training", "seed"}),
    "run.json": ("gptextures-run", {"status", "wall_time_s", "hardware", "torch_version",
                                    "package_version", "date"}),
}


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any]
    run: dict[str, Any]
    spec: DatasetSpec
    evaluation: EvaluationResult
    weights_path: Path


def _read(folder: Path, name: str) -> Any:
    p = folder / name
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"run folder: missing {name} in {str(folder)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(p)!r} is not valid JSON ({exc})") from None
    if name in _HEADERS:
        fmt, keys = _HEADERS[name]
        if not isinstance(data, dict) or data.get("format") != fmt \
                or data.get("format_version") != 1:
            raise ValueError(f"{str(p)!r}: expected format {fmt!r} version 1")
        missing = sorted(keys - set(data))
        if missing:
            raise ValueError(f"{str(p)!r}: missing keys {missing}")
    return data


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read and check a complete run folder (see the module docstring)."""
    from .evaluation import resolve_dataset

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder: {str(folder)!r} is not a directory")
    config = _read(folder, "config.json")
    run = _read(folder, "run.json")
    if run["status"] != "complete":
        raise ValueError(f"{str(folder / 'run.json')!r}: status is {run['status']!r}; the run"
                         " has not finished")
    declared = config["dataset"].get("fingerprint") if isinstance(config["dataset"], dict) \
        else None
    if (folder / "dataset.json").is_file():
        spec = DatasetSpec.from_dict(_read(folder, "dataset.json"))
    else:
        spec = resolve_dataset(str(config["dataset"].get("name")))
    if declared != spec.fingerprint:
        raise FingerprintMismatchError(
            f"{str(folder / 'config.json')!r}: dataset fingerprint {str(declared)[:12]}..."
            f" differs from the dataset's {spec.fingerprint[:12]}...")
    weights = [folder / w for w in WEIGHTS if (folder / w).is_file()]
    if not weights:
        raise FileNotFoundError(f"run folder: no weights ({' or '.join(WEIGHTS)}) in"
                                f" {str(folder)!r}")
    evaluation = Evaluator(spec).evaluate_submission(folder / "predictions.json")
    stored = _read(folder, "evaluation.json")
    if not isinstance(stored, dict) or abs(stored.get("accuracy", -1) - evaluation.accuracy) \
            > 1e-9:
        raise ValueError(f"{str(folder / 'evaluation.json')!r}: accuracy"
                         f" {stored.get('accuracy') if isinstance(stored, dict) else stored!r}"
                         f" disagrees with predictions.json ({evaluation.accuracy!r})")
    return Run(folder, config, run, spec, evaluation, weights[0])
