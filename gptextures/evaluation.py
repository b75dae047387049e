"""Score predictions per scale: the Evaluator, submission files, evaluate_submission.

The primary metric is the joint accuracy (the paper's "Total": every level right). Per-level
accuracy decodes classes into levels with :mod:`gptextures.labels` (the code that wrote the
labels); when scores are given, each level's prediction is the argmax of the scores
marginalised over the other levels: ``P(level j = a) = sum of P(c) over classes c whose level-j
label is a``.

Submission file (JSON; see docs/evaluation.md)::

    {"format": "gptextures-predictions", "format_version": 1,
     "dataset": {"name": "tiny", "version": "1.0.0", "fingerprint": "<sha256>"},
     "split": "test", "metadata": {"method": "..."},
     "predictions": [{"id": 0, "class": 2}, ...]}

Each prediction row holds ``id`` (the sample's index in the split) and exactly one of
``class`` (int), ``scores`` (``num_classes`` probabilities or logits) or ``levels`` (level name ->
int). CSV: ``# key=value`` header lines (format, format_version, dataset, version, fingerprint,
split), then a header row ``id,class`` or ``id,<level names>`` or ``id,score_0,...``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import labels as _labels
from . import presets as _presets
from .io.meta import FingerprintMismatchError, parse_json, read_text
from .spec import DatasetSpec

__all__ = [
    "EvaluationResult", "Evaluator", "FingerprintMismatchError", "Submission",
    "evaluate_submission", "read_submission", "resolve_dataset", "write_submission",
]

FORMAT = "gptextures-predictions"
FORMAT_VERSION = 1
PREDICTION_TYPES: tuple[str, ...] = ("auto", "probabilities", "logits")
SCORE_TYPES = PREDICTION_TYPES  # the former name
#: Most bootstrap resamples: the Monte-Carlo error of a 95% percentile bound is already well
#: under 1% of the interval's width at 10 000.
MAX_BOOTSTRAP = 100_000
#: Probabilities are clipped to ``[LOG_LOSS_EPS, 1]`` before the log in the log-loss.
LOG_LOSS_EPS = 1e-15
_PROB_ATOL = 1e-4


# ---- resolving a dataset -----------------------------------------------------------------

def resolve_dataset(dataset: DatasetSpec | str | os.PathLike) -> DatasetSpec:
    """A :class:`DatasetSpec` from a spec, a preset name, a spec JSON file or a dataset path
    (:func:`gptextures.io.resolve_spec`, the package's one resolver)."""
    from .io.loading import resolve_spec

    return resolve_spec(dataset, name="dataset")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}"
        )
    return x


def _check_finite(a: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: contains NaN or infinite values (first at index {pos})")


def _check_int_labels(a: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(
            f"{name}: expected integer class indices, got dtype {a.dtype}"
            + (" (pass scores with shape (N, num_classes) instead)"
               if np.issubdtype(a.dtype, np.floating) else "")
        )
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}]: must be in [0, {n_classes - 1}], got {a[i]}")
    return a


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def prob_tolerance(dtype: Any, k: int) -> float:
    """How far from 1 the row sums of ``k`` probabilities stored as ``dtype`` may be.

    Storing each value rounds it by at most half an ulp (``eps / 2`` relative, so at most
    ``eps / 2`` in all over a row summing to 1), and summing the row in that dtype adds at most
    ``k - 1`` roundings of partial sums <= 1: ``k eps`` bounds both. Never below 1e-4, so that
    probabilities written with 4 decimals still count (float16, k = 4: 3.9e-3).
    """
    eps = float(np.finfo(dtype).eps) if np.issubdtype(np.dtype(dtype), np.floating) else 0.0
    return max(_PROB_ATOL, k * eps)


#: Rows of non-negative scores whose sums agree to this fraction look like (scaled)
#: probabilities, not logits: "auto" refuses to guess for them.
_CONSTANT_SUM = 0.05


def _scores_to_logp(a: np.ndarray, prediction_type: str, name: str) -> tuple[np.ndarray, str]:
    """(N, K) float scores -> log-probabilities (float64) and the prediction type used.

    ``"auto"``: probabilities when every row is in [0, 1] and sums to 1 within
    :func:`prob_tolerance` of the input's dtype; logits when some score is negative or the row
    sums differ; anything else (non-negative rows that all sum to about the same value other
    than 1: percentages, coarsely rounded probabilities) is refused as ambiguous.
    """
    tol = prob_tolerance(a.dtype, a.shape[1])
    s = a.astype(np.float64)
    sums = s.sum(axis=1)
    nonneg = bool(s.size and (s >= 0).all())
    looks_prob = nonneg and bool((s <= 1).all() and np.allclose(sums, 1.0, rtol=0, atol=tol))
    how = ("say what they are with prediction_type='probabilities' (rows in [0, 1] summing to"
           " 1: divide percentages by 100 first) or prediction_type='logits' (command line:"
           " --prediction-type)")
    if prediction_type == "auto":
        med = float(np.median(sums)) if s.size else 0.0
        if looks_prob:
            prediction_type = "probabilities"
        elif nonneg and med > 0 and float(sums.max() - sums.min()) <= _CONSTANT_SUM * med:
            hint = "percentages?" if 50 < med < 200 else f"not 1 within {tol:g} for {a.dtype}"
            raise ValueError(
                f"{name}: the scores are non-negative and every row sums to about {med:.6g}"
                f" ({hint}), so they could be probabilities or logits; {how}")
        else:
            prediction_type = "logits"
    if prediction_type == "probabilities":
        if not looks_prob:
            rows = np.flatnonzero((s < 0).any(axis=1) | (s > 1).any(axis=1)
                                  | ~np.isclose(sums, 1.0, rtol=0, atol=tol))
            i = int(rows[0])
            raise ValueError(
                f"{name}[{i}]: probabilities must be in [0, 1] and sum to 1 (+-{tol:g} for"
                f" {a.dtype}), got row sum {sums[i]:.6g}, min {s[i].min():.6g}"
            )
        p = s / sums[:, None]
        with np.errstate(divide="ignore"):
            return np.log(np.clip(p, LOG_LOSS_EPS, 1.0)), prediction_type
    return np.minimum(_log_softmax(s), 0.0), prediction_type


# ---- results -----------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationResult:
    """Scores of one set of predictions (raw floats; :meth:`summary` rounds).

    Attributes:
        accuracy: joint accuracy (every level right; the primary metric, the paper's "Total").
        level_accuracy: level name -> accuracy of that level.
        mean_level_accuracy, worst_level_accuracy, worst_level: over levels.
        confusion: level name -> int64 ``(r, r)`` confusion matrix, rows true, columns predicted.
        class_confusion: int64 ``(C, C)`` confusion matrix of the joint classes.
        log_loss: mean negative log-likelihood (nats) of the true class, when joint scores were
            given (else ``None``); level_log_loss: the same per level when scores were given.
        count: number of predictions scored.
        ci: metric -> ``(low, high)`` bootstrap percentile interval when requested, else ``None``.
    """

    accuracy: float
    level_accuracy: dict[str, float]
    mean_level_accuracy: float
    worst_level_accuracy: float
    worst_level: str
    confusion: dict[str, np.ndarray]
    class_confusion: np.ndarray
    log_loss: float | None
    level_log_loss: dict[str, float] | None
    count: int
    prediction_type: str
    dataset: str
    fingerprint: str
    ci: dict[str, tuple[float, float]] | None = None
    ci_info: dict[str, Any] | None = field(default=None)

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics: ``accuracy``, ``accuracy/<level>``, ``mean_level_accuracy``..."""
        out = {"accuracy": self.accuracy}
        out.update({f"accuracy/{k}": v for k, v in self.level_accuracy.items()})
        out["mean_level_accuracy"] = self.mean_level_accuracy
        out["worst_level_accuracy"] = self.worst_level_accuracy
        if self.log_loss is not None:
            out["log_loss"] = self.log_loss
        if self.level_log_loss is not None:
            out.update({f"log_loss/{k}": v for k, v in self.level_log_loss.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (confusion matrices as nested lists)."""
        return {
            "accuracy": self.accuracy,
            "level_accuracy": dict(self.level_accuracy),
            "mean_level_accuracy": self.mean_level_accuracy,
            "worst_level_accuracy": self.worst_level_accuracy,
            "worst_level": self.worst_level,
            "log_loss": self.log_loss,
            "level_log_loss": None if self.level_log_loss is None else dict(self.level_log_loss),
            "count": self.count,
            "confusion": {k: v.tolist() for k, v in self.confusion.items()},
            "class_confusion": self.class_confusion.tolist(),
            "prediction_type": self.prediction_type,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "ci": None if self.ci is None else {k: list(v) for k, v in self.ci.items()},
            "ci_info": self.ci_info,
        }

    def summary(self, digits: int = 4) -> str:
        """Human-readable lines, rounded to ``digits``."""
        def fmt(name: str, v: float) -> str:
            s = f"{name:<24s} {v:.{digits}f}"
            if self.ci and name in self.ci:
                lo, hi = self.ci[name]
                s += f"  [{lo:.{digits}f}, {hi:.{digits}f}]"
            return s

        lines = [f"{self.dataset} ({self.fingerprint[:12]}), {self.count} predictions"
                 f" ({self.prediction_type})"]
        lines += [fmt(k, v) for k, v in self.metrics().items()]
        if self.ci_info:
            lines.append(
                f"intervals: {self.ci_info['confidence']:.0%} bootstrap percentile,"
                f" {self.ci_info['resamples']} resamples, seed {self.ci_info['seed']}"
            )
        return "\n".join(lines)


# ---- the evaluator -----------------------------------------------------------------------

class Evaluator:
    """Per-scale scores of predictions on a gptextures dataset.

    Args:
        dataset: a :class:`DatasetSpec`, a preset name, a spec JSON file, or a dataset file or
            folder (read with ``gptextures.io.read_spec``).

    Example::

        ev = Evaluator("tiny")
        y_true = ev.true_labels("test")
        result = ev.evaluate(y_true=y_true, y_pred=model_scores)  # (N, 4) scores
        print(result.summary())
    """

    def __init__(self, dataset: DatasetSpec | str | os.PathLike) -> None:
        self.spec = resolve_dataset(dataset)
        t = self.spec.texture
        self.level_names: tuple[str, ...] = t.level_names
        self.radices: tuple[int, ...] = t.radices
        self.num_classes: int = t.num_classes
        self._level_table = _labels.decode_array(np.arange(self.num_classes), self.radices)

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    @property
    def expected_input_format(self) -> str:
        levels = ", ".join(f"'{n}': ({r} labels)" for n, r in zip(self.level_names, self.radices))
        return (
            "Evaluator.evaluate(*, y_true, y_pred): numpy arrays or torch tensors.\n"
            f"  y_true: int (N,) class indices in [0, {self.num_classes - 1}]"
            " (Evaluator.true_labels(split) gives them).\n"
            "  y_pred: one of\n"
            f"    - int (N,) predicted class indices in [0, {self.num_classes - 1}];\n"
            f"    - float (N, {self.num_classes}) scores: probabilities (rows in [0, 1] summing to"
            " 1 within the dtype's rounding) or logits (softmax is applied);"
            " prediction_type= says which (required when non-negative rows all sum to about"
            " the same value other than 1, e.g. percentages);\n"
            f"    - a mapping level name -> int (N,) labels or float (N, r) scores: {{{levels}}}.\n"
            "  No broadcasting: (N, 1) is refused; NaN/inf are refused.\n"
            f"  Classes are mixed radix over levels {list(self.level_names)} (first most"
            " significant): gptextures.labels.decode."
        )

    @property
    def expected_output_format(self) -> str:
        levels = ", ".join(self.level_names)
        return (
            "Evaluator.evaluate returns an EvaluationResult with raw floats:\n"
            "  accuracy (joint, primary), level_accuracy {" + levels + "},\n"
            "  mean_level_accuracy, worst_level_accuracy, worst_level, confusion {level: (r, r)"
            " rows true / columns predicted}, class_confusion (C, C), log_loss and level_log_loss"
            " (nats; scores only, else None), count, ci {metric: (low, high)} when"
            " bootstrap > 0. .metrics() flat dict, .to_dict() JSON, .summary() rounded text."
        )

    def true_labels(self, split: str = "test") -> np.ndarray:
        """True class indices of a split, int64 ``(N,)`` (no images needed)."""
        return self.spec.labels(split)

    # -- input parsing ----------------------------------------------------------------------
    def _parse_pred(self, y_pred: Any, n: int, prediction_type: str) -> dict[str, Any]:
        """-> dict(kind, classes (N,) or None, levels (N, D), logp (N, C) or None,
        level_logp [ (N, r) ] or None)."""
        if isinstance(y_pred, Mapping):
            missing = [k for k in self.level_names if k not in y_pred]
            extra = [k for k in y_pred if k not in self.level_names]
            if missing or extra:
                raise ValueError(
                    f"y_pred: expected exactly the levels {list(self.level_names)},"
                    f" missing {missing}, unknown {extra}"
                )
            levels = np.empty((n, len(self.level_names)), dtype=np.int64)
            level_logp: list[np.ndarray] | None = []
            kinds = set()
            for j, (name, r) in enumerate(zip(self.level_names, self.radices)):
                a = _to_numpy(y_pred[name], f"y_pred[{name!r}]")
                if a.ndim == 1:
                    if a.shape[0] != n:
                        raise ValueError(f"y_pred[{name!r}]: expected shape ({n},) like y_true,"
                                         f" got {a.shape}")
                    levels[:, j] = _check_int_labels(a, r, f"y_pred[{name!r}]")
                    kinds.add("labels")
                elif a.ndim == 2 and a.shape == (n, r) and np.issubdtype(a.dtype, np.floating):
                    _check_finite(a, f"y_pred[{name!r}]")
                    lp, _ = _scores_to_logp(a, prediction_type, f"y_pred[{name!r}]")
                    levels[:, j] = np.argmax(lp, axis=1)
                    level_logp.append(lp)  # type: ignore[union-attr]
                    kinds.add("scores")
                else:
                    raise ValueError(
                        f"y_pred[{name!r}]: expected int ({n},) labels or float ({n}, {r})"
                        f" scores, got {a.dtype} {a.shape}"
                    )
            if kinds != {"scores"}:
                level_logp = None
            return {"kind": "levels:" + "+".join(sorted(kinds)), "levels": levels,
                    "classes": _labels.encode_array(levels, self.radices), "logp": None,
                    "level_logp": level_logp}
        a = _to_numpy(y_pred, "y_pred")
        if a.ndim == 1:
            if a.shape[0] != n:
                raise ValueError(f"y_pred: expected shape ({n},) like y_true, got {a.shape}")
            classes = _check_int_labels(a, self.num_classes, "y_pred")
            return {"kind": "classes", "classes": classes,
                    "levels": self._level_table[classes], "logp": None, "level_logp": None}
        if a.ndim == 2 and a.shape == (n, self.num_classes):
            if not np.issubdtype(a.dtype, np.floating):
                raise TypeError(
                    f"y_pred: scores of shape {a.shape} must be floats, got dtype {a.dtype}"
                )
            _check_finite(a, "y_pred")
            logp, used = _scores_to_logp(a, prediction_type, "y_pred")
            classes = np.argmax(logp, axis=1)
            level_logp = []
            for j, r in enumerate(self.radices):
                # log P(level j = a) = logsumexp of log P(c) over classes c with label a.
                cols = []
                for lab in range(r):
                    sel = logp[:, self._level_table[:, j] == lab]
                    mx = sel.max(axis=1, keepdims=True)
                    cols.append((mx + np.log(np.exp(sel - mx).sum(axis=1, keepdims=True)))[:, 0])
                level_logp.append(np.minimum(np.stack(cols, axis=1), 0.0))  # rounding
            levels = np.stack([np.argmax(lp, axis=1) for lp in level_logp], axis=1)
            return {"kind": f"scores:{used}", "classes": classes, "levels": levels,
                    "logp": logp, "level_logp": level_logp}
        raise ValueError(
            f"y_pred: expected int ({n},) class indices, float ({n}, {self.num_classes}) scores"
            f" or a mapping level name -> (N,), got {a.dtype} array of shape {a.shape}"
            + (" (no broadcasting: squeeze the last axis)" if a.shape == (n, 1) else "")
        )

    # -- scoring ---------------------------------------------------------------------------
    def evaluate(self, *, y_true: Any, y_pred: Any, prediction_type: str = "auto",
                 bootstrap: int = 0, confidence: float = 0.95, seed: int = 0,
                 score_type: str | None = None) -> EvaluationResult:
        """Score predictions (see :attr:`expected_input_format`).

        Args:
            y_true: int ``(N,)`` true class indices.
            y_pred: int ``(N,)`` classes, float ``(N, C)`` scores, or level name -> ``(N,)``.
            prediction_type: ``"auto"``, ``"probabilities"`` or ``"logits"``: what float
                scores are (``score_type`` is the former name of this argument).
            bootstrap: number of bootstrap resamples for confidence intervals (0: none).
            confidence: two-sided level of the percentile intervals, in (0, 1).
            seed: seed of the bootstrap resampling.
        Returns:
            :class:`EvaluationResult`.
        """
        if score_type is not None:
            if prediction_type not in ("auto", score_type):
                raise ValueError("score_type: the former name of prediction_type; pass one")
            prediction_type = score_type
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type: expected one of {PREDICTION_TYPES}, got"
                             f" {prediction_type!r}")
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) \
                or not 0 <= bootstrap <= MAX_BOOTSTRAP:
            raise ValueError(f"bootstrap: expected an int in [0, {MAX_BOOTSTRAP}] (resamples),"
                             f" got {bootstrap!r}")
        if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
            raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
        yt = _to_numpy(y_true, "y_true")
        if yt.ndim != 1:
            raise ValueError(
                f"y_true: expected shape (N,) class indices, got {yt.shape}"
                + (" (no broadcasting: squeeze the last axis)" if yt.ndim == 2
                   and yt.shape[1] == 1 else "")
            )
        n = yt.shape[0]
        if n == 0:
            raise ValueError("y_true: expected at least one sample, got N = 0")
        yt = _check_int_labels(yt, self.num_classes, "y_true")
        pred = self._parse_pred(y_pred, n, prediction_type)
        true_levels = self._level_table[yt]

        joint_ok = pred["classes"] == yt
        level_ok = pred["levels"] == true_levels  # (N, D)
        nll = None if pred["logp"] is None else -pred["logp"][np.arange(n), yt]
        level_nll = None
        if pred["level_logp"] is not None:
            level_nll = np.stack(
                [-lp[np.arange(n), true_levels[:, j]] for j, lp in enumerate(pred["level_logp"])],
                axis=1,
            )
        level_acc = level_ok.mean(axis=0)
        worst = int(np.argmin(level_acc))
        confusion = {}
        for j, (name, r) in enumerate(zip(self.level_names, self.radices)):
            cm = np.zeros((r, r), dtype=np.int64)
            np.add.at(cm, (true_levels[:, j], pred["levels"][:, j]), 1)
            confusion[name] = cm
        cc = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(cc, (yt, pred["classes"]), 1)

        ci = ci_info = None
        if bootstrap:
            ci = self._bootstrap(joint_ok, level_ok, nll, level_nll, int(bootstrap),
                                 float(confidence), seed)
            ci_info = {"method": "percentile", "resamples": int(bootstrap),
                       "confidence": float(confidence), "seed": seed}
        return EvaluationResult(
            accuracy=float(joint_ok.mean()),
            level_accuracy={k: float(v) for k, v in zip(self.level_names, level_acc)},
            mean_level_accuracy=float(level_acc.mean()),
            worst_level_accuracy=float(level_acc[worst]),
            worst_level=self.level_names[worst],
            confusion=confusion,
            class_confusion=cc,
            log_loss=None if nll is None else float(nll.mean()),
            level_log_loss=None if level_nll is None else {
                k: float(v) for k, v in zip(self.level_names, level_nll.mean(axis=0))
            },
            count=n,
            prediction_type=pred["kind"],
            dataset=self.spec.name,
            fingerprint=self.fingerprint,
            ci=ci,
            ci_info=ci_info,
        )

    def _bootstrap(self, joint_ok: np.ndarray, level_ok: np.ndarray, nll: np.ndarray | None,
                   level_nll: np.ndarray | None, b: int, confidence: float,
                   seed: int) -> dict[str, tuple[float, float]]:
        """Percentile intervals over ``b`` resamples of the N predictions (with replacement)."""
        n = joint_ok.shape[0]
        cols = {"accuracy": joint_ok.astype(np.float64)}
        for j, name in enumerate(self.level_names):
            cols[f"accuracy/{name}"] = level_ok[:, j].astype(np.float64)
        if nll is not None:
            cols["log_loss"] = nll
        if level_nll is not None:
            for j, name in enumerate(self.level_names):
                cols[f"log_loss/{name}"] = level_nll[:, j]
        data = np.stack(list(cols.values()), axis=1)  # (N, M)
        rng = np.random.default_rng(seed)
        stats = np.empty((b, data.shape[1]))
        chunk = max(1, 2_000_000 // n)
        for start in range(0, b, chunk):
            idx = rng.integers(0, n, size=(min(chunk, b - start), n))
            stats[start:start + idx.shape[0]] = data[idx].mean(axis=1)
        level_stats = stats[:, 1:1 + len(self.level_names)]
        extra = {"mean_level_accuracy": level_stats.mean(axis=1),
                 "worst_level_accuracy": level_stats.min(axis=1)}
        alpha = (1.0 - confidence) / 2.0
        out = {}
        for k, col in list(zip(cols, stats.T)) + list(extra.items()):
            lo, hi = np.quantile(col, [alpha, 1.0 - alpha])
            out[k] = (float(lo), float(hi))
        return out

    def evaluate_submission(self, path: str | os.PathLike, **kwargs: Any) -> EvaluationResult:
        """Read a submission file, check it against this dataset and score it (see module doc)."""
        sub = read_submission(path)
        if sub.fingerprint != self.fingerprint:
            raise FingerprintMismatchError(
                f"predictions: {str(path)!r} was made for dataset {sub.dataset!r} with fingerprint"
                f" {sub.fingerprint[:16]}..., but this dataset ({self.spec.name!r}) has"
                f" {self.fingerprint[:16]}...; score it against the dataset it was made for"
            )
        n = self.spec.num_samples(self.spec.check_split(sub.split))
        ids = sub.ids
        seen = np.zeros(n, dtype=bool)
        for row, i in enumerate(ids):
            if not 0 <= i < n:
                raise ValueError(
                    f"predictions[{row}].id: must be a sample index in [0, {n - 1}] of split"
                    f" {sub.split!r}, got {i}"
                )
            if seen[i]:
                raise ValueError(f"predictions[{row}].id: duplicate id {i}")
            seen[i] = True
        if not seen.all():
            missing = np.flatnonzero(~seen)
            shown = ", ".join(str(int(i)) for i in missing[:10])
            raise ValueError(
                f"predictions: expected one prediction for each of the {n} samples of split"
                f" {sub.split!r}, got {len(ids)}; missing ids ({missing.size}): {shown}"
                + (", ..." if missing.size > 10 else "")
            )
        order = np.argsort(ids)
        if isinstance(sub.y_pred, dict):
            y_pred: Any = {k: v[order] for k, v in sub.y_pred.items()}
        else:
            y_pred = sub.y_pred[order]
        y_true = self.true_labels(sub.split)
        if kwargs.get("prediction_type", "auto") == "auto":
            kwargs["prediction_type"] = sub.prediction_type
        return self.evaluate(y_true=y_true, y_pred=y_pred, **kwargs)


# ---- submission files --------------------------------------------------------------------

@dataclass(frozen=True)
class Submission:
    """A parsed submission: ``ids`` int64 ``(N,)``, ``y_pred`` in one of the evaluator's forms."""

    dataset: str
    version: str
    fingerprint: str
    split: str
    ids: np.ndarray
    y_pred: Any
    metadata: dict[str, Any]
    prediction_type: str = "auto"


def write_submission(path: str | os.PathLike, dataset: DatasetSpec | str, y_pred: Any, *,
                     split: str = "test", ids: Any = None,
                     metadata: Mapping[str, Any] | None = None,
                     prediction_type: str | None = None) -> Path:
    """Write predictions to a submission file (``.json`` or ``.csv``, by suffix), atomically.

    Args:
        path: output file; the format follows the suffix.
        dataset: the dataset the predictions are for (spec or preset name).
        y_pred: int ``(N,)`` classes, float ``(N, C)`` scores or level name -> int ``(N,)``.
        split: the split predicted.
        ids: sample indices ``(N,)`` (default ``0..N-1``).
        metadata: free JSON-serialisable information (method, model, ...).
        prediction_type: for scores, ``"probabilities"`` or ``"logits"``: recorded in the
            file, so that scoring it never has to guess.
    Returns:
        The path written.
    """
    if prediction_type not in (None, "probabilities", "logits"):
        raise ValueError(f"prediction_type: expected 'probabilities', 'logits' or None, got"
                         f" {prediction_type!r}")
    spec = resolve_dataset(dataset)
    spec.check_split(split)
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in (".json", ".csv"):
        raise ValueError(f"path: suffix must be .json or .csv, got {path.suffix!r}")
    names = spec.texture.level_names
    if isinstance(y_pred, Mapping):
        cols = {k: _to_numpy(v, f"y_pred[{k!r}]") for k, v in y_pred.items()}
        if sorted(cols) != sorted(names):
            raise ValueError(f"y_pred: expected the levels {list(names)}, got {list(cols)}")
        n = len(cols[names[0]])
        kind = "levels"
    else:
        arr = _to_numpy(y_pred, "y_pred")
        if arr.ndim == 0:
            raise ValueError("y_pred: expected (N,) classes or (N, C) scores, got a scalar")
        n = arr.shape[0]
        kind = "class" if arr.ndim == 1 else "scores"
    if n == 0:
        raise ValueError("y_pred: no predictions (N = 0); a submission holds one per sample of"
                         f" split {split!r} ({spec.num_samples(split)})")
    ids_arr = np.arange(n) if ids is None else _to_numpy(ids, "ids").astype(np.int64)
    if ids_arr.shape != (n,):
        raise ValueError(f"ids: expected shape ({n},), got {ids_arr.shape}")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "dataset": {"name": spec.name, "version": spec.version,
                          "fingerprint": spec.fingerprint},
              "split": split, "metadata": dict(metadata or {})}
    if prediction_type is not None:
        header["prediction_type"] = prediction_type
    if fmt == ".json":
        rows = []
        for r in range(n):
            row: dict[str, Any] = {"id": int(ids_arr[r])}
            if kind == "class":
                row["class"] = int(arr[r])
            elif kind == "scores":
                row["scores"] = [float(v) for v in arr[r]]
            else:
                row["levels"] = {k: int(cols[k][r]) for k in names}
            rows.append(row)
        text = json.dumps({**header, "predictions": rows}, indent=1)
    else:
        buf = io.StringIO()
        buf.write(f"# format={FORMAT}\n# format_version={FORMAT_VERSION}\n")
        buf.write(f"# dataset={spec.name}\n# version={spec.version}\n")
        buf.write(f"# fingerprint={spec.fingerprint}\n# split={split}\n")
        buf.write(f"# metadata={json.dumps(header['metadata'])}\n")
        if prediction_type is not None:
            buf.write(f"# prediction_type={prediction_type}\n")
        w = csv.writer(buf, lineterminator="\n")
        if kind == "class":
            w.writerow(["id", "class"])
            w.writerows([int(i), int(c)] for i, c in zip(ids_arr, arr))
        elif kind == "scores":
            w.writerow(["id"] + [f"score_{c}" for c in range(arr.shape[1])])
            w.writerows([int(i)] + [repr(float(v)) for v in row] for i, row in zip(ids_arr, arr))
        else:
            w.writerow(["id", *names])
            w.writerows([int(ids_arr[r])] + [int(cols[k][r]) for k in names] for r in range(n))
        text = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def read_submission(path: str | os.PathLike) -> Submission:
    """Parse a submission file (``.json`` or ``.csv``); checks structure, not the dataset."""
    path = Path(path)
    text = read_text(path, "predictions")
    if path.suffix.lower() == ".csv":
        return _read_csv(path, text)
    doc = parse_json(text, path, "predictions")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"predictions: expected a JSON object with \"format\": \"{FORMAT}\","
                         f" got {str(doc)[:80]!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"predictions: format_version must be {FORMAT_VERSION}, got"
                         f" {doc.get('format_version')!r}")
    ds = doc.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("fingerprint"), str):
        raise ValueError("predictions: missing dataset.fingerprint (the sha256 of the dataset"
                         " spec the predictions were made for)")
    split = doc.get("split")
    if not isinstance(split, str):
        raise ValueError(f"predictions: expected a split name, got {split!r}")
    rows = doc.get("predictions")
    if not isinstance(rows, list) or not rows:
        raise ValueError("predictions: expected a non-empty list under \"predictions\"")
    kinds = {k for k in ("class", "scores", "levels") if k in rows[0]}
    if len(kinds) != 1:
        raise ValueError("predictions[0]: expected exactly one of 'class', 'scores', 'levels',"
                         f" got keys {sorted(rows[0])}")
    kind = kinds.pop()
    ids = []
    vals: list[Any] = []
    for r, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != {"id", kind}:
            raise ValueError(f"predictions[{r}]: expected keys ['id', {kind!r}] like row 0, got"
                             f" {sorted(row) if isinstance(row, dict) else row!r}")
        ids.append(_int(row["id"], f"predictions[{r}].id"))
        v = row[kind]
        if kind == "class":
            vals.append(_int(v, f"predictions[{r}].class"))
        elif kind == "scores":
            if not isinstance(v, list) or any(
                    isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
                raise ValueError(f"predictions[{r}].scores: expected a list of numbers, got {v!r}")
            if len(v) != len(rows[0]["scores"]):
                raise ValueError(f"predictions[{r}].scores: expected {len(rows[0]['scores'])}"
                                 f" scores like row 0, got {len(v)}")
            vals.append(v)
        else:
            if not isinstance(v, dict) or set(v) != set(rows[0]["levels"]):
                raise ValueError(f"predictions[{r}].levels: expected levels"
                                 f" {sorted(rows[0]['levels'])} like row 0, got {v!r}")
            vals.append({k: _int(x, f"predictions[{r}].levels.{k}") for k, x in v.items()})
    if kind == "levels":
        y_pred: Any = {k: np.array([v[k] for v in vals], dtype=np.int64) for k in vals[0]}
    elif kind == "class":
        y_pred = np.array(vals, dtype=np.int64)
    else:
        y_pred = np.array(vals, dtype=np.float64)
    return Submission(dataset=str(ds.get("name", "")), version=str(ds.get("version", "")),
                      fingerprint=ds["fingerprint"], split=split,
                      ids=np.array(ids, dtype=np.int64), y_pred=y_pred,
                      metadata=dict(doc.get("metadata") or {}),
                      prediction_type=_stated_type(doc.get("prediction_type"), path))


def _stated_type(value: Any, path: Path) -> str:
    if value is None:
        return "auto"
    if value not in ("probabilities", "logits"):
        raise ValueError(f"predictions: {str(path)!r} states prediction_type {value!r}; expected"
                         " 'probabilities' or 'logits'")
    return str(value)


def _read_csv(path: Path, text: str) -> Submission:
    meta: dict[str, str] = {}
    body = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition("=")
            if sep:
                meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    if meta.get("format") != FORMAT:
        raise ValueError(f"predictions: CSV header must contain '# format={FORMAT}', got"
                         f" {meta.get('format')!r}")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"predictions: format_version must be {FORMAT_VERSION}, got"
                         f" {meta.get('format_version')!r}")
    for key in ("fingerprint", "split"):
        if key not in meta:
            raise ValueError(f"predictions: CSV header is missing '# {key}=...'")
    rows = list(csv.reader(body))
    if len(rows) < 2 or rows[0][0] != "id":
        raise ValueError("predictions: expected a header row starting with 'id' and >= 1 row")
    head = rows[0][1:]
    ids, vals = [], []
    for r, row in enumerate(rows[1:]):
        if len(row) != len(head) + 1:
            raise ValueError(f"predictions row {r}: expected {len(head) + 1} columns like the"
                             f" header, got {len(row)}")
        try:
            ids.append(int(row[0]))
            if head == ["class"] or not head[0].startswith("score_"):
                vals.append([int(v) for v in row[1:]])
            else:
                vals.append([float(v) for v in row[1:]])
        except ValueError:
            raise ValueError(f"predictions row {r}: cannot parse {row!r}") from None
    if head == ["class"]:
        y_pred: Any = np.array([v[0] for v in vals], dtype=np.int64)
    elif head[0].startswith("score_"):
        y_pred = np.array(vals, dtype=np.float64)
    else:
        y_pred = {k: np.array([v[j] for v in vals], dtype=np.int64) for j, k in enumerate(head)}
    try:
        metadata = json.loads(meta.get("metadata", "{}"))
    except json.JSONDecodeError:
        raise ValueError("predictions: '# metadata=' must be a JSON object") from None
    return Submission(dataset=meta.get("dataset", ""), version=meta.get("version", ""),
                      fingerprint=meta["fingerprint"], split=meta["split"],
                      ids=np.array(ids, dtype=np.int64), y_pred=y_pred, metadata=metadata,
                      prediction_type=_stated_type(meta.get("prediction_type"), path))


def evaluate_submission(path: str | os.PathLike,
                        dataset: DatasetSpec | str | os.PathLike | None = None,
                        **kwargs: Any) -> EvaluationResult:
    """Score a submission file.

    Args:
        path: the submission (``.json`` or ``.csv``).
        dataset: the dataset to score against; default: the preset whose fingerprint the file
            names (a :class:`FingerprintMismatchError` if ``dataset`` has another fingerprint).
        **kwargs: passed to :meth:`Evaluator.evaluate` (``bootstrap``, ``seed``, ...).
    """
    if dataset is None:
        fp = read_submission(path).fingerprint
        matches = [n for n in _presets.names() if _presets.get(n).fingerprint == fp]
        if not matches:
            raise ValueError(
                f"dataset: {str(path)!r} names fingerprint {fp[:16]}..., which is no preset's;"
                " pass the dataset it was made for"
            )
        dataset = matches[0]
    return Evaluator(dataset).evaluate_submission(path, **kwargs)
