"""Measure what a field looks like: radial autocorrelation and effective correlation length."""

from __future__ import annotations

import numpy as np


def radial_autocorrelation(image: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Periodic autocorrelation of a 2-D image, averaged over directions.

    Args:
        image: ``(H, W)`` array (any real dtype); its mean is removed.
        max_lag: largest lag in pixels (default ``min(H, W) // 4``).
    Returns:
        float64 ``(max_lag + 1,)``: correlation at integer distances ``0..max_lag`` (bins of
        width 1 px around each integer), normalised so that lag 0 is 1.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"image: expected a 2-D array (H, W), got shape {x.shape}")
    h, w = x.shape
    if max_lag is None:
        max_lag = min(h, w) // 4
    if not 1 <= max_lag < min(h, w) // 2 + 1:
        raise ValueError(f"max_lag: must be in [1, {min(h, w) // 2}], got {max_lag}")
    x = x - x.mean()
    spec = np.fft.rfft2(x)
    acf = np.fft.irfft2(spec.real**2 + spec.imag**2, s=(h, w))
    if acf[0, 0] <= 0:
        raise ValueError("image: constant image has no correlation structure")
    acf /= acf[0, 0]
    dy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    dx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    r = np.rint(np.hypot(dy, dx)).astype(np.int64)
    keep = r <= max_lag
    sums = np.bincount(r[keep], weights=acf[keep], minlength=max_lag + 1)
    counts = np.bincount(r[keep], minlength=max_lag + 1)
    return sums / counts


def correlation_length(image: np.ndarray, max_lag: int | None = None) -> float:
    """Effective correlation length in pixels: where the autocorrelation falls to ``exp(-1/2)``.

    For a squared-exponential field this is its length scale ``l`` (``k(l) = exp(-1/2)``), so
    it puts fields made another way (for example the authors' sums of Gaussian-enveloped
    patches) on the same axis as this package's labels. Linear interpolation between lags.
    """
    acf = radial_autocorrelation(image, max_lag)
    target = np.exp(-0.5)
    below = np.flatnonzero(acf < target)
    if below.size == 0:
        raise ValueError("max_lag: the autocorrelation stays above exp(-1/2); raise max_lag")
    i = int(below[0])
    a, b = acf[i - 1], acf[i]
    return float(i - 1 + (a - target) / (a - b))
