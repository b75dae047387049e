"""The likelihood oracle: exact Gaussian log-likelihood of each class, in Fourier space.

For the ``sum`` mix on the torus every class is (up to per-sample normalisation) a zero-mean
stationary Gaussian field, so the discrete Fourier coefficients ``X_k`` of an image are
independent with variance ``s^2 P_c(k)``. ``P_c`` is built from the generator's own spectra:
level ``i`` contributes ``weight_i^2 * w_i(k) / sum_{k != 0} w_i(k)`` (the kernel's aliased grid
weights :func:`gptextures.spectra.grid_weights`, restricted to where the generator draws noise
and normalised as the per-sample level normalisation does on average), plus a white floor for
the float32 rounding noise of the generator; frequencies where no class rises above
``min_snr`` times that floor are dominated by rounding and are left out. Over the remaining
modes of the full DFT grid (``M`` real degrees of freedom, no DC term):

    log p(x | c, s) = -1/2 sum_{k != 0} [ log(s^2 P_c(k)) + |X_k|^2 / (s^2 P_c(k)) ] + const.

The image is normalised to std 1, so the overall scale ``s`` is unknown: it is profiled out
(``s^2 = Q_c / M`` with ``Q_c = sum_k |X_k|^2 / P_c(k)``), which gives

    L_c = -1/2 [ M log(Q_c / M) + sum_k log P_c(k) + M ],

exactly the log-density (up to a class-independent constant) of the *direction* of a Gaussian
vector, i.e. of a Gaussian image normalised to mean 0 and std 1. It is therefore the
Bayes-optimal classifier for images whose levels are not normalised one by one; the generator
also normalises each level field per sample, which the model replaces by its expectation (see
docs/evaluation.md for the measured gap). With balanced classes the posterior is
``softmax(L)``. Supports ``mix="sum"`` with ``periodic=True`` (every preset); any kernel.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from .fields import field_plan
from .spec import DatasetSpec, TextureSpec
from .spectra import grid_weights

#: Variance per pixel of the generator's float32 rounding noise (measured on presets: the power
#: far outside every class's band is 1.3e-14 to 1.6e-14 per pixel for unit-variance images).
DEFAULT_NOISE_FLOOR = 2e-14
#: Frequencies where no class's signal variance exceeds ``DEFAULT_MIN_SNR * floor`` are left out:
#: below that the generator's float32 rounding (neither white nor modelled) misleads the likelihood.
#: Chosen on fresh draws (not the test splits): with it the oracle is calibrated on images from
#: its own model (tiny: accuracy 0.936, mean confidence 0.935 over 2000 images); with 1e2 it is
#: not (0.869 vs 0.941). See docs/evaluation.md and benchmarks/results/oracle_calibration.json.
DEFAULT_MIN_SNR = 1e8


def _multiplicity(shape: tuple[int, int]) -> np.ndarray:
    """How often each real-FFT half-spectrum entry occurs in the full DFT grid: ``(H, W//2+1)``."""
    h, w = shape
    m = np.full((h, w // 2 + 1), 2.0)
    m[:, 0] = 1.0
    if w % 2 == 0:
        m[:, -1] = 1.0
    return m


def _band_mask(kernel: str, shape: tuple[int, int], length_scale: float) -> np.ndarray:
    """Where the generator draws noise for one level: its field plan's mask, on the half grid."""
    plan = field_plan(kernel, shape, float(length_scale))
    h = shape[0]
    mask = np.zeros((h, shape[1] // 2 + 1), dtype=bool)
    mask[: plan.ry + 1, : plan.rx + 1] = plan.mask[: plan.ry + 1]
    if plan.n_bottom:
        mask[h - plan.n_bottom :, : plan.rx + 1] = plan.mask[plan.ry + 1 :]
    return mask


class LikelihoodOracle:
    """Per-class Gaussian log-likelihood of images of a ``sum``-mix periodic texture.

    Args:
        texture: a :class:`TextureSpec` (or a :class:`DatasetSpec`, whose texture is used) with
            ``mix="sum"`` and ``periodic=True``.
        noise_floor: variance per pixel of white rounding noise added to every class spectrum
            (>= 0; default :data:`DEFAULT_NOISE_FLOOR`).
        min_snr: frequencies where no class's signal variance exceeds ``min_snr * floor`` are
            left out (they hold rounding noise only); default :data:`DEFAULT_MIN_SNR`.
    """

    def __init__(self, texture: TextureSpec | DatasetSpec, *,
                 noise_floor: float = DEFAULT_NOISE_FLOOR,
                 min_snr: float = DEFAULT_MIN_SNR) -> None:
        if isinstance(texture, DatasetSpec):
            texture = texture.texture
        if not isinstance(texture, TextureSpec):
            raise TypeError(
                f"texture: expected a TextureSpec or DatasetSpec, got {type(texture).__name__}"
            )
        if texture.mix != "sum":
            raise ValueError(
                f"texture.mix: the likelihood oracle needs mix='sum' (a Gaussian image), got"
                f" {texture.mix!r}; a 'product' image is not Gaussian"
            )
        if not texture.periodic:
            raise ValueError(
                "texture.periodic: the likelihood oracle needs periodic=True (Fourier modes are"
                " independent only on the torus), got False"
            )
        floor = float(noise_floor)
        if not np.isfinite(floor) or floor <= 0:
            raise ValueError(f"noise_floor: must be finite and > 0, got {noise_floor!r}")
        snr = float(min_snr)
        if not np.isfinite(snr) or snr < 0:
            raise ValueError(f"min_snr: must be finite and >= 0, got {min_snr!r}")
        self.texture = texture
        self.noise_floor = floor
        self.min_snr = snr
        h, w = texture.size
        n = h * w
        mult = _multiplicity(texture.size)
        mult[0, 0] = 0.0  # the mean is removed: no DC term
        mult = mult.reshape(-1)
        total_w2 = sum(lv.weight**2 for lv in texture.levels)
        # Per class and level: that level's signal variance per mode, E|X_k|^2 (full-grid sum of
        # the whole image's signal = (H W)^2, i.e. a unit-variance image).
        levels = np.zeros((texture.num_classes, texture.depth, mult.size))
        for c in range(texture.num_classes):
            for i, (lv, ell) in enumerate(zip(texture.levels, texture.length_scales(c))):
                wk = np.where(_band_mask(texture.kernel, texture.size, ell),
                              grid_weights(texture.kernel, texture.size, ell), 0.0).reshape(-1)
                wk = wk * (mult > 0)
                levels[c, i] = (n * n * lv.weight**2 / total_w2) * wk / float((wk * mult).sum())
        keep = levels.sum(axis=1).max(axis=0) > snr * n * floor
        keep &= mult > 0
        if not keep.any():
            raise ValueError(f"min_snr: {min_snr:g} leaves out every frequency; lower it")
        self._index = np.flatnonzero(keep)
        self._mult = mult[keep]
        p = levels[:, :, keep].sum(axis=1) + n * floor  # (C, K) variance of each kept mode
        self._inv = self._mult / p
        self._logdet = (self._mult * np.log(p)).sum(axis=1)
        #: Real degrees of freedom used (full-grid modes kept).
        self.dof = int(self._mult.sum())

    @property
    def num_classes(self) -> int:
        return self.texture.num_classes

    def _power(self, images: np.ndarray, threads: int) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(self.texture.size):
            raise ValueError(
                f"images: expected shape (B, {self.texture.size[0]}, {self.texture.size[1]})"
                f" or (H, W), got {tuple(np.shape(images))}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"images: expected a float array, got dtype {x.dtype}")
        out = np.empty((x.shape[0], self._index.size))
        for b in range(x.shape[0]):
            if not np.all(np.isfinite(x[b])):
                raise ValueError(f"images[{b}]: contains NaN or infinite values")
            spec = scipy.fft.rfft2(x[b].astype(np.float64), workers=threads).reshape(-1)
            spec = spec[self._index]
            out[b] = spec.real**2 + spec.imag**2
        return out

    def log_likelihood(self, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Profiled log-likelihood of each image under each class.

        Args:
            images: ``(H, W)`` or ``(B, H, W)`` real array (any float dtype).
            threads: FFT workers.
        Returns:
            float64 ``(B, num_classes)`` (``(num_classes,)`` for one image), in nats, up to a
            constant shared by all classes.
        """
        single = np.ndim(images) == 2
        power = self._power(images, threads)
        q = power @ self._inv.T  # (B, C): sum_k m_k |X_k|^2 / P_c(k)
        m = self.dof
        out = -0.5 * (m * np.log(q / m) + self._logdet + m)
        return out[0] if single else out

    def predict_proba(self, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Posterior class probabilities with a uniform prior: float64 ``(B, num_classes)``."""
        ll = self.log_likelihood(images, threads=threads)
        ll = ll - ll.max(axis=-1, keepdims=True)
        p = np.exp(ll)
        return p / p.sum(axis=-1, keepdims=True)

    def predict(self, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """Most likely class of each image: int64 ``(B,)``."""
        return np.argmax(self.log_likelihood(images, threads=threads), axis=-1)
