"""Statistics over seeds for the paper's tables: means, t intervals, Welch tests, paired bootstrap.

Seeds are the unit: each seed is one trained model, so with 5 seeds a mean has 4 degrees of
freedom. Two configurations run with the same seeds start from the same initial weights (masks
have no parameters), so their per-seed differences are paired.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, std (ddof=1) and the two-sided t interval of the mean over seeds."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's t test of mean(a) > mean(b): t, degrees of freedom, one-sided p (greater)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.all(a == a[0]) and np.all(b == b[0]):  # no spread at all: the test is undefined
        d = float(a[0] - b[0])
        return {"t": float(np.sign(d)) * np.inf if d else 0.0, "df": float("nan"),
                "p_greater": 0.0 if d > 0 else 1.0}
    with warnings.catch_warnings():  # one group without spread: scipy warns, the test holds
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return {"t": float(res.statistic), "df": float(df), "p_greater": float(res.pvalue)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Bootstrap over seeds of the mean paired difference ``a - b`` (same seeds, same order).

    Returns the mean difference, its percentile interval and ``p_le0``, the bootstrap share of
    resampled mean differences ``<= 0`` (a one-sided p for ``a > b``).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same seeds: {a.shape} vs {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_le0": float(np.mean(means <= 0))}


def verdict(p_greater: float, p_less: float, alpha: float = 0.05) -> str:
    """``reproduced`` (the paper's direction at level alpha), ``contradicted`` (the opposite
    direction at level alpha) or ``not significant``."""
    if p_greater < alpha:
        return "reproduced"
    if p_less < alpha:
        return "contradicted"
    return "not significant"
