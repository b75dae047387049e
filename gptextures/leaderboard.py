"""Leaderboards: one per dataset fingerprint; validated entries, ranking, Markdown/JSON rendering.

The reference leaderboards ship with the package: ``gptextures/leaderboards/<preset>.json``
(and the rendered ``.md``), found with :func:`shipped_board_path` from any directory.

An entry is a JSON object (schema in docs/evaluation.md): what was run (method, backdrop masks,
number of parameters, training recipe), on which data (fingerprint, split, count), with which
seeds (>= 3) and results per seed, the aggregate over seeds (mean, std with ddof=1; recomputed
and checked on load), and provenance (hardware, train time, package version, date). Entries are
ranked by the primary metric, the mean joint accuracy over seeds.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import EvaluationResult, FingerprintMismatchError
from .io.meta import parse_json, read_text
from .spec import DatasetSpec

FORMAT = "gptextures-leaderboard"
FORMAT_VERSION = 1
PRIMARY_METRIC = "accuracy"
MIN_SEEDS = 3
README_START = "<!-- leaderboard:start -->"
README_END = "<!-- leaderboard:end -->"
_FP_RE = re.compile(r"^[0-9a-f]{64}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_REQUIRED = {
    "method", "backdrop_masks", "params", "training", "seeds", "per_seed", "aggregate",
    "hardware", "train_time_s", "package_version", "date", "dataset_fingerprint", "split",
    "count", "deterministic",
}
_OPTIONAL = {"description", "notes", "ci", "url", "reference"}
_AGG_TOL = 1e-9
#: Where the shipped leaderboards live: package data next to this module.
SHIPPED_DIR = Path(__file__).with_name("leaderboards")


def shipped_board_path(name: str) -> Path:
    """The shipped leaderboard JSON of preset ``name``: ``gptextures/leaderboards/<name>.json``
    inside the installed package (it may not exist yet for a new preset).

    Raises:
        ValueError: ``name`` is not a preset.
    """
    from . import presets

    if name not in presets.names():
        raise ValueError(f"name: {name!r} is not a preset; known presets:"
                         f" {', '.join(presets.names())}")
    return SHIPPED_DIR / f"{name}.json"


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def _is_num(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _metric_keys(level_names: Sequence[str]) -> list[str]:
    return ["accuracy", *[f"accuracy/{n}" for n in level_names], "mean_level_accuracy",
            "worst_level_accuracy"]


def seed_result(seed: int, result: EvaluationResult) -> dict[str, Any]:
    """One ``per_seed`` item from an :class:`EvaluationResult`."""
    return {"seed": int(seed), **result.metrics()}


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1) over seeds of every metric all seeds report."""
    if len(per_seed) < 2:
        raise ValueError(f"per_seed: need >= 2 seeds for a std with ddof=1, got {len(per_seed)}")
    keys = [k for k in per_seed[0] if k != "seed" and all(k in r for r in per_seed)]
    out = {}
    for k in keys:
        v = np.array([float(r[k]) for r in per_seed])
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1))}
    return out


def make_entry(*, method: str, seeds: Sequence[int], results: Sequence[EvaluationResult],
               params: int, training: Mapping[str, Any], hardware: str,
               train_time_s: float | None, backdrop_masks: Sequence[Mapping[str, Any]] = (),
               deterministic: bool = False, description: str = "", notes: str = "",
               split: str = "test", ci: Mapping[str, Any] | None = None,
               date: str | None = None, package_version: str | None = None,
               reference: bool = False) -> dict[str, Any]:
    """Build (and validate) a leaderboard entry from one :class:`EvaluationResult` per seed.

    Args:
        method: short name shown in the table.
        seeds: the seeds run (>= 3, distinct), same order as ``results``.
        results: the evaluation of each seed (same dataset).
        params: number of trainable parameters (0 for methods without any).
        training: the training recipe (optimizer, lr, epochs, batch size, data used, ...).
        hardware: where it ran, e.g. ``"2 CPU cores (x86_64)"``.
        train_time_s: mean wall-clock training time per seed in seconds (``None``: not measured).
        backdrop_masks: one ``{"name": str, "p": float in [0, 1)}`` (more keys allowed) per
            backdrop mask; empty for none.
        deterministic: the method has no randomness given the dataset (per-seed results equal).
        ci: optional bootstrap interval information, e.g. on the first seed's predictions.
        reference: a reference entry (chance, baseline, oracle) rather than a submitted model.
    """
    from . import __version__

    if len(results) != len(seeds):
        raise ValueError(f"results: expected one per seed ({len(seeds)}), got {len(results)}")
    fps = {r.fingerprint for r in results}
    if len(fps) != 1:
        raise FingerprintMismatchError(f"results: come from several datasets {sorted(fps)}")
    counts = {r.count for r in results}
    if len(counts) != 1:
        raise ValueError(f"results: every seed must be scored on the same samples, got counts"
                         f" {sorted(counts)}")
    per_seed = [seed_result(s, r) for s, r in zip(seeds, results)]
    entry: dict[str, Any] = {
        "method": method, "description": description,
        "backdrop_masks": [dict(m) for m in backdrop_masks], "params": params,
        "training": dict(training), "seeds": [int(s) for s in seeds], "per_seed": per_seed,
        "aggregate": aggregate(per_seed), "hardware": hardware, "train_time_s": train_time_s,
        "package_version": package_version or __version__,
        "date": date or _dt.datetime.now(_dt.timezone.utc).date().isoformat(),
        "dataset_fingerprint": fps.pop(), "split": split, "count": counts.pop(),
        "deterministic": bool(deterministic), "notes": notes,
    }
    if ci is not None:
        entry["ci"] = dict(ci)
    if reference:
        entry["reference"] = True
    level_names = list(results[0].level_accuracy)
    return validate_entry(entry, level_names=level_names)


def validate_entry(entry: Any, *, level_names: Sequence[str] | None = None,
                   fingerprint: str | None = None, where: str = "entry") -> dict[str, Any]:
    """Check an entry against the schema; return it (as a plain dict). Raises ValueError."""
    if not isinstance(entry, Mapping):
        raise _err(where, f"expected a JSON object, got {type(entry).__name__}")
    missing = sorted(_REQUIRED - set(entry))
    if missing:
        raise _err(where, f"missing field(s) {missing}")
    unknown = sorted(set(entry) - _REQUIRED - _OPTIONAL)
    if unknown:
        raise _err(where, f"unknown field(s) {unknown}; allowed: {sorted(_REQUIRED | _OPTIONAL)}")
    e = dict(entry)
    if not isinstance(e["method"], str) or not e["method"].strip():
        raise _err(f"{where}.method", f"expected a non-empty string, got {e['method']!r}")
    where = f"{where} {e['method']!r}"
    masks = e["backdrop_masks"]
    if not isinstance(masks, list):
        raise _err(f"{where}.backdrop_masks", f"expected a list of masks, got {masks!r}")
    for i, m in enumerate(masks):
        if not isinstance(m, Mapping) or not isinstance(m.get("name"), str) \
                or not _is_num(m.get("p")) or not 0 <= m["p"] < 1:
            raise _err(f"{where}.backdrop_masks[{i}]",
                       f"expected {{'name': str, 'p': float in [0, 1)}}, got {m!r}")
    if isinstance(e["params"], bool) or not isinstance(e["params"], int) or e["params"] < 0:
        raise _err(f"{where}.params", f"expected an int >= 0, got {e['params']!r}")
    if not isinstance(e["training"], Mapping):
        raise _err(f"{where}.training", f"expected an object (the recipe), got {e['training']!r}")
    seeds = e["seeds"]
    if not isinstance(seeds, list) or any(isinstance(s, bool) or not isinstance(s, int)
                                          for s in seeds):
        raise _err(f"{where}.seeds", f"expected a list of ints, got {seeds!r}")
    if len(seeds) < MIN_SEEDS:
        raise _err(f"{where}.seeds", f"expected >= {MIN_SEEDS} seeds, got {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise _err(f"{where}.seeds", f"seeds must be distinct, got {seeds}")
    per_seed = e["per_seed"]
    if not isinstance(per_seed, list) or len(per_seed) != len(seeds):
        raise _err(f"{where}.per_seed", f"expected one result per seed ({len(seeds)}), got"
                   f" {len(per_seed) if isinstance(per_seed, list) else per_seed!r}")
    keys = _metric_keys(level_names) if level_names is not None else ["accuracy"]
    for i, (s, r) in enumerate(zip(seeds, per_seed)):
        w = f"{where}.per_seed[{i}]"
        if not isinstance(r, Mapping) or r.get("seed") != s:
            raise _err(w, f"expected an object with seed {s} (same order as seeds), got"
                       f" {r.get('seed') if isinstance(r, Mapping) else r!r}")
        for k in keys:
            if k not in r:
                raise _err(w, f"missing metric {k!r}")
        for k, v in r.items():
            if k == "seed":
                continue
            if not _is_num(v):
                raise _err(f"{w}.{k}", f"expected a finite number, got {v!r}")
            if k.startswith("accuracy") or k.endswith("level_accuracy"):
                if not 0 <= v <= 1:
                    raise _err(f"{w}.{k}", f"an accuracy must be in [0, 1], got {v}")
            if k.startswith("log_loss") and v < 0:
                raise _err(f"{w}.{k}", f"a log-loss must be >= 0, got {v}")
    agg = e["aggregate"]
    expected = aggregate(per_seed)
    if not isinstance(agg, Mapping) or set(agg) != set(expected):
        raise _err(f"{where}.aggregate", f"expected metrics {sorted(expected)}, got"
                   f" {sorted(agg) if isinstance(agg, Mapping) else agg!r}")
    for k, ms in expected.items():
        got = agg[k]
        for stat in ("mean", "std"):
            if not isinstance(got, Mapping) or not _is_num(got.get(stat)) \
                    or abs(got[stat] - ms[stat]) > _AGG_TOL:
                raise _err(f"{where}.aggregate.{k}.{stat}",
                           f"does not match per_seed: expected {ms[stat]!r} (ddof=1 for std), got"
                           f" {got.get(stat) if isinstance(got, Mapping) else got!r}")
    if e["deterministic"] not in (True, False):
        raise _err(f"{where}.deterministic", f"expected true or false, got {e['deterministic']!r}")
    if "reference" in e and e["reference"] not in (True, False):
        raise _err(f"{where}.reference", f"expected true or false, got {e['reference']!r}")
    if "ci" in e and not isinstance(e["ci"], Mapping):
        raise _err(f"{where}.ci", f"expected an object, got {e['ci']!r}")
    for k in ("hardware", "package_version", "split"):
        if not isinstance(e[k], str) or not e[k]:
            raise _err(f"{where}.{k}", f"expected a non-empty string, got {e[k]!r}")
    t = e["train_time_s"]
    if t is not None and (not _is_num(t) or t < 0):
        raise _err(f"{where}.train_time_s", f"expected seconds >= 0 or null, got {t!r}")
    if not isinstance(e["date"], str) or not _DATE_RE.match(e["date"]):
        raise _err(f"{where}.date", f"expected YYYY-MM-DD, got {e['date']!r}")
    try:
        _dt.date.fromisoformat(e["date"])
    except ValueError:
        raise _err(f"{where}.date", f"not a valid date: {e['date']!r}") from None
    fp = e["dataset_fingerprint"]
    if not isinstance(fp, str) or not _FP_RE.match(fp):
        raise _err(f"{where}.dataset_fingerprint", f"expected 64 hex digits, got {fp!r}")
    if fingerprint is not None and fp != fingerprint:
        raise FingerprintMismatchError(
            f"{where}.dataset_fingerprint: this leaderboard is for {fingerprint[:16]}..., the entry"
            f" was scored on {fp[:16]}..."
        )
    if isinstance(e["count"], bool) or not isinstance(e["count"], int) or e["count"] < 1:
        raise _err(f"{where}.count", f"expected an int >= 1, got {e['count']!r}")
    return e


class Leaderboard:
    """The entries of one dataset (one fingerprint), ranked by mean joint accuracy.

    Args:
        dataset: ``{"name", "version", "fingerprint"}`` of the dataset.
        level_names: the dataset's levels (columns of the table).
        split: the split scored (``"test"``).
        entries: validated entries.
    """

    def __init__(self, dataset: Mapping[str, str], level_names: Sequence[str],
                 split: str = "test", entries: Sequence[Mapping[str, Any]] = ()) -> None:
        if not isinstance(dataset, Mapping) or not _FP_RE.match(str(dataset.get("fingerprint"))):
            raise ValueError(f"dataset: expected {{'name', 'version', 'fingerprint'}}, got"
                             f" {dataset!r}")
        self.dataset = {k: str(dataset.get(k, "")) for k in ("name", "version", "fingerprint")}
        self.level_names = [str(n) for n in level_names]
        self.split = split
        self.entries: list[dict[str, Any]] = []
        for i, e in enumerate(entries):
            self.add(e, where=f"entries[{i}]")

    @classmethod
    def for_dataset(cls, spec: DatasetSpec, split: str = "test") -> Leaderboard:
        """An empty leaderboard for a dataset spec."""
        spec.check_split(split)
        return cls({"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint},
                   spec.texture.level_names, split)

    @property
    def fingerprint(self) -> str:
        return self.dataset["fingerprint"]

    def add(self, entry: Mapping[str, Any], *, replace: bool = False,
            where: str = "entry") -> dict[str, Any]:
        """Validate and add an entry; an entry with the same method needs ``replace=True``."""
        e = validate_entry(entry, level_names=self.level_names, fingerprint=self.fingerprint,
                           where=where)
        if e["split"] != self.split:
            raise ValueError(f"{where}.split: this leaderboard scores split {self.split!r}, got"
                             f" {e['split']!r}")
        same = [i for i, old in enumerate(self.entries) if old["method"] == e["method"]]
        if same and not replace:
            raise ValueError(f"{where}.method: {e['method']!r} is already on this leaderboard;"
                             " use replace=True (CLI: --replace) to overwrite it")
        for i in reversed(same):
            del self.entries[i]
        self.entries.append(e)
        return e

    def ranked(self) -> list[tuple[int, dict[str, Any]]]:
        """``(rank, entry)`` best first: mean joint accuracy, then mean level accuracy, then name.

        Entries with equal mean joint accuracy share a rank.
        """
        def key(e: Mapping[str, Any]) -> tuple[float, float, str]:
            a = e["aggregate"]
            return (-a[PRIMARY_METRIC]["mean"], -a["mean_level_accuracy"]["mean"], e["method"])

        ordered = sorted(self.entries, key=key)
        out, rank, prev = [], 0, None
        for i, e in enumerate(ordered):
            v = e["aggregate"][PRIMARY_METRIC]["mean"]
            if v != prev:
                rank, prev = i + 1, v
            out.append((rank, e))
        return out

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "dataset": self.dataset,
                "level_names": self.level_names, "split": self.split,
                "primary_metric": PRIMARY_METRIC, "entries": [e for _, e in self.ranked()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "leaderboard") -> Leaderboard:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{where}: expected a JSON object with \"format\": \"{FORMAT}\"")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}: format_version must be {FORMAT_VERSION}, got"
                             f" {data.get('format_version')!r}")
        for k in ("dataset", "level_names", "split", "entries"):
            if k not in data:
                raise ValueError(f"{where}: missing field {k!r}")
        if not isinstance(data["entries"], list):
            raise ValueError(f"{where}.entries: expected a list, got {data['entries']!r}")
        board = cls(data["dataset"], data["level_names"], data["split"])
        for i, e in enumerate(data["entries"]):
            board.add(e, where=f"{where}.entries[{i}]")
        return board

    @classmethod
    def load(cls, path: str | os.PathLike) -> Leaderboard:
        """Read and validate a leaderboard JSON file."""
        path = Path(path)
        data = parse_json(read_text(path, "leaderboard"), path, "leaderboard")
        return cls.from_dict(data, where=f"leaderboard {str(path)!r}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (temporary file, then rename)."""
        return _atomic_write(Path(path), self.to_json())

    def to_markdown(self, *, heading: str | None = None) -> str:
        """A Markdown table, best first: mean ± std over seeds, in percent."""
        def pm(agg: Mapping[str, Any], key: str, scale: float = 100.0, digits: int = 1) -> str:
            if key not in agg:
                return "–"
            m, s = agg[key]["mean"] * scale, agg[key]["std"] * scale
            return f"{m:.{digits}f} ± {s:.{digits}f}"

        d = self.dataset
        lines = []
        if heading is not None:
            lines += [heading, ""]
        lines += [
            f"Dataset `{d['name']}` v{d['version']} (fingerprint `{d['fingerprint'][:12]}`),"
            f" split `{self.split}`; accuracy in %, mean ± std over seeds (ddof=1); ranked by"
            " Total (joint accuracy).",
            "",
        ]
        cols = ["Rank", "Method", "Total", *self.level_names, "Mean level", "Worst level",
                "Log-loss (nats)", "Seeds", "Params", "Backdrop", "Train time", "Date"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join(["---:" if c not in ("Method", "Backdrop") else ":---"
                                      for c in cols]) + "|")
        for rank, e in self.ranked():
            a = e["aggregate"]
            masks = ", ".join(f"{m['name']} p={m['p']:g}" for m in e["backdrop_masks"]) or "none"
            t = e["train_time_s"]
            row = [
                str(rank), e["method"].replace("|", "\\|"), pm(a, "accuracy"),
                *[pm(a, f"accuracy/{n}") for n in self.level_names],
                pm(a, "mean_level_accuracy"), pm(a, "worst_level_accuracy"),
                pm(a, "log_loss", 1.0, 3), str(len(e["seeds"])) + (" (det.)" if
                                                                   e["deterministic"] else ""),
                f"{e['params']:,}", masks, "–" if t is None else f"{t:.3g} s", e["date"],
            ]
            lines.append("| " + " | ".join(row) + " |")
        if not self.entries:
            lines.append("| – | (no entries yet) |" + " |" * (len(cols) - 2))
        return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def update_readme(readme: str | os.PathLike, sections: Sequence[str]) -> Path:
    """Replace the text between :data:`README_START` and :data:`README_END` with ``sections``.

    The markers must each occur exactly once, start before end; everything outside them is
    kept byte for byte. The file is rewritten atomically.
    """
    path = Path(readme)
    if not path.is_file():
        raise FileNotFoundError(f"readme: no such file {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    n_start, n_end = text.count(README_START), text.count(README_END)
    if n_start != 1 or n_end != 1:
        raise ValueError(
            f"readme: {str(path)!r} must contain {README_START!r} and {README_END!r} exactly once"
            f" each, found {n_start} and {n_end}"
        )
    a = text.index(README_START) + len(README_START)
    b = text.index(README_END)
    if b < a:
        raise ValueError(f"readme: {README_END!r} comes before {README_START!r} in {str(path)!r}")
    body = "\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections)
    body += ("" if body.endswith("\n") else "\n")
    return _atomic_write(path, text[:a] + body + text[b:])
