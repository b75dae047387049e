"""A learned non-deep baseline: radially averaged log power spectra + one classifier per level.

Features: the image's power spectrum ``|rfft2(x)|^2 / (H W)`` averaged over rings of equal width
in radial frequency ``|f|`` (cycles per pixel, ``0 < |f| <= 0.5``), floored at ``1e-10`` of the
image's mean power per mode, then ``log``. The floor keeps the classifier off float32 rounding:
above the generator's band limit an image holds only rounding noise (~1e-15 of its power per
mode), whose level depends on the FFT plan that made it, not on the texture. Per level, an
L2-regularised multinomial logistic regression (the objective of scikit-learn's
``LogisticRegression(C=C)``: ``0.5 ||W||^2 + C sum_i -log p(y_i | x_i)``, intercept not
penalised) is fit on standardised features of the training split. Class scores are the product
of the per-level probabilities (levels treated as independent), normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.optimize

from . import labels as _labels
from .spec import DatasetSpec, TextureSpec

#: Ring powers are floored at this fraction of the image's mean power per mode (its variance).
POWER_FLOOR = 1e-10
#: Features whose standard deviation over the training images is at most this (nats) are
#: constant: left out of the classifier.
_CONSTANT_STD = 1e-6


def radial_log_power(images: np.ndarray, n_bins: int = 32, *, threads: int = 1,
                     floor: float = POWER_FLOOR) -> np.ndarray:
    """Radially averaged log power spectrum.

    Args:
        images: ``(B, H, W)`` or ``(H, W)`` float array.
        n_bins: number of rings of equal width over ``0 < |f| <= 0.5`` cycles per pixel.
        threads: FFT workers.
        floor: ring powers below ``floor`` times the image's mean power per mode (its
            variance, DC excluded) are raised to it; ``0`` disables the floor.
    Returns:
        float64 ``(B, n_bins)`` (``(n_bins,)`` for one image): ``log`` of the mean of
        ``|X_k|^2 / (H W)`` over each ring, floored (``log(1e-300)`` for an empty ring or a
        constant image).
    """
    x = np.asarray(images)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images: expected float (B, H, W) or (H, W), got {x.dtype} {x.shape}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected an int >= 1, got {n_bins!r}")
    h, w = x.shape[1:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.sqrt(fy**2 + fx**2)
    mult = np.full((h, w // 2 + 1), 2.0)
    mult[:, 0] = 1.0
    if w % 2 == 0:
        mult[:, -1] = 1.0
    # Ring b holds b / n_bins < |f| / 0.5 <= (b + 1) / n_bins; DC and |f| > 0.5 get -1.
    ring = np.where((r > 0) & (r <= 0.5), np.minimum(np.ceil(r / 0.5 * n_bins) - 1, n_bins - 1),
                    -1).astype(np.int64).reshape(-1)
    valid = ring >= 0
    counts = np.bincount(ring[valid], weights=mult.reshape(-1)[valid], minlength=n_bins)
    out = np.empty((x.shape[0], n_bins))
    for b in range(x.shape[0]):
        spec = scipy.fft.rfft2(x[b].astype(np.float64), workers=threads).reshape(-1)
        p = (spec.real**2 + spec.imag**2) * mult.reshape(-1) / (h * w)
        sums = np.bincount(ring[valid], weights=p[valid], minlength=n_bins)
        low = floor * (p.sum() - p[0]) / (h * w)  # floor x variance (Parseval, DC excluded)
        out[b] = np.log(np.maximum(sums / np.maximum(counts, 1), max(low, 1e-300)))
    return out[0] if single else out


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0) -> np.ndarray:
    """L2-regularised multinomial logistic regression (L-BFGS); returns ``(F + 1, K)`` weights.

    Minimises ``0.5 ||W||^2 + c * sum_i -log softmax(x_i W + b)[y_i]`` (``b``, the last row,
    is not penalised): scikit-learn's ``LogisticRegression(C=c)`` objective.
    """
    n, f = x.shape
    onehot = np.eye(n_classes)[y]
    xb = np.hstack([x, np.ones((n, 1))])

    def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
        wmat = theta.reshape(f + 1, n_classes)
        z = xb @ wmat
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -c * float((onehot * logp).sum()) + 0.5 * float((wmat[:-1] ** 2).sum())
        grad = c * xb.T @ (np.exp(logp) - onehot)
        grad[:-1] += wmat[:-1]
        return loss, grad.reshape(-1)

    res = scipy.optimize.minimize(obj, np.zeros((f + 1) * n_classes), jac=True,
                                  method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    return res.x.reshape(f + 1, n_classes)


class SpectralBaseline:
    """Per-level logistic regression on radially averaged log power spectra.

    Args:
        texture: the dataset's :class:`TextureSpec` (or :class:`DatasetSpec`).
        n_bins: rings of the radial spectrum (features).
        c: inverse L2 regularisation strength (> 0).
    """

    def __init__(self, texture: TextureSpec | DatasetSpec, *, n_bins: int = 32,
                 c: float = 1.0) -> None:
        if isinstance(texture, DatasetSpec):
            texture = texture.texture
        if not isinstance(texture, TextureSpec):
            raise TypeError(f"texture: expected a TextureSpec or DatasetSpec, got"
                            f" {type(texture).__name__}")
        if not np.isfinite(c) or c <= 0:
            raise ValueError(f"c: must be finite and > 0, got {c!r}")
        self.texture = texture
        self.n_bins = int(n_bins)
        self.c = float(c)
        self._weights: list[np.ndarray] | None = None

    @property
    def num_params(self) -> int:
        """Learned parameters: weights and intercepts of every level's classifier."""
        return sum((self.n_bins + 1) * r for r in self.texture.radices)

    def fit(self, images: np.ndarray, y: Sequence[int] | np.ndarray) -> SpectralBaseline:
        """Fit on ``(N, H, W)`` images with int ``(N,)`` class indices (N >= 1)."""
        if np.ndim(images) == 3 and np.shape(images)[0] == 0:
            raise ValueError("images: no training images (N = 0); fit needs at least one")
        feats = radial_log_power(images, self.n_bins)
        y = np.asarray(y)
        if y.shape != (feats.shape[0],):
            raise ValueError(f"y: expected shape ({feats.shape[0]},), got {y.shape}")
        levels = _labels.decode_array(y, self.texture.radices)
        self._mean = feats.mean(axis=0)
        std = feats.std(axis=0)
        # A feature constant over the training images (floored rings vary by ~1e-7 with each
        # image's variance) carries nothing: drop it (z = 0) rather than blow its noise up.
        self._std = np.where(std > _CONSTANT_STD, std, np.inf)
        z = (feats - self._mean) / self._std
        self._weights = [fit_logistic(z, levels[:, j], r, self.c)
                         for j, r in enumerate(self.texture.radices)]
        return self

    def level_proba(self, images: np.ndarray) -> list[np.ndarray]:
        """Per-level probabilities: a list of float64 ``(N, r_j)``."""
        if self._weights is None:
            raise ValueError("SpectralBaseline: call fit() before predicting")
        z = (radial_log_power(images, self.n_bins) - self._mean) / self._std
        z = np.atleast_2d(z)
        zb = np.hstack([z, np.ones((z.shape[0], 1))])
        out = []
        for wmat in self._weights:
            s = zb @ wmat
            s -= s.max(axis=1, keepdims=True)
            p = np.exp(s)
            out.append(p / p.sum(axis=1, keepdims=True))
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``: product of the per-level probabilities."""
        per_level = self.level_proba(images)
        table = _labels.decode_array(np.arange(self.texture.num_classes), self.texture.radices)
        p = np.ones((per_level[0].shape[0], self.texture.num_classes))
        for j, pl in enumerate(per_level):
            p *= pl[:, table[:, j]]
        return p / p.sum(axis=1, keepdims=True)
