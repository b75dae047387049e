"""One stationary Gaussian-process field per (length scale, seed), sampled by FFT.

The field is ``irfft2(sqrt(w * H * W) * Z)`` on the ``H x W`` torus, with ``w`` the kernel's
aliased spectral weights (:func:`gptextures.spectra.grid_weights`) and ``Z`` unit complex white
noise with Hermitian symmetry. Its covariance at every integer lag is the kernel periodised over
the torus, the zero-frequency mode included (no renormalisation here).

Band-limited fast path: noise is drawn only at the frequencies where the weights reach ``1e-14``
of their maximum (a disk for these isotropic kernels: for the squared exponential at ``l = 80``
px ~0.1% of a 1024x1024 grid, at ``l = 9.5`` px ~6%); elsewhere the spectrum is below float32
resolution (the variance left out is ~1e-14 of the total), so the field is unchanged in every
byte that matters while the noise costs a fraction. The inverse FFT only runs over the disk's
bounding box of columns.

Hermitian symmetry: columns ``kx = 0`` and ``kx = W/2`` (``W`` even) of a real-FFT half spectrum
are their own mirror images. Their entries are made conjugate-symmetric (``Z[-ky] = conj(Z[ky])``,
real at self-conjugate points, variance 1). Independent noise there would be silently symmetrised
by the inverse transform, halving the power of those columns (about 10% of the variance at
``l = N / 8``).

Non-periodic fields are drawn on a larger torus and cropped: each axis is padded by
``spectra.padding(kernel, l)`` pixels (where the kernel falls below 1e-3; ``3.72 l`` for the
squared exponential), rounded up to a fast FFT length, so the wrap-around correlation between
any two pixels of the crop is below 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import fft as _fft
from . import seeds as _seeds
from . import spectra

_SQRT_TWO = np.float32(math.sqrt(2.0))


def check_shape(shape: int | tuple[int, int]) -> tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)``, each side an int >= 8."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape), int(shape))
    try:
        h, w = (int(v) for v in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"shape: expected an int or (H, W), got {shape!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"shape: each side must be >= 8 px, got {(h, w)}")
    return h, w


def torus_shape(shape: tuple[int, int], pad: int) -> tuple[int, int]:
    """Torus on which a non-periodic ``shape`` field is drawn: ``shape + pad``, fast FFT lengths."""
    import scipy.fft  # here: importing it costs ~0.1 s, and periodic fields never need it

    h, w = shape
    return (
        scipy.fft.next_fast_len(h + pad, real=True),
        scipy.fft.next_fast_len(w + pad, real=True),
    )


@dataclass(frozen=True)
class FieldPlan:
    """Precomputed noise layout and amplitudes of one (kernel, torus shape, length scale).

    Coefficients live in a box of the real-FFT half spectrum, columns ``0..rx``: rows
    ``0..ry`` (``top``) then rows ``H - n_bottom .. H - 1`` (``bottom``). Inside it noise is
    drawn only where ``mask`` is set (the weights reach ``1e-14`` of their maximum: a disk for
    isotropic kernels, ~79% of the box), with the float32 amplitudes ``sqrt(w * H * W / 2)``
    (the ``1/2`` because the noise drawn has unit-variance real and imaginary parts).
    """

    shape: tuple[int, int]
    ry: int
    rx: int
    n_bottom: int
    nyquist: bool  # column rx is the Nyquist column W/2 of an even W
    mask: np.ndarray  # bool (ry + 1 + n_bottom, rx + 1)
    amplitudes: np.ndarray  # float32 (mask.sum(),), the masked entries in C order

    @property
    def noise_count(self) -> int:
        """Real normal deviates drawn per field."""
        return 2 * self.amplitudes.size

    def coefficients(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one field's Fourier coefficients: complex64 ``top`` and ``bottom`` blocks."""
        z = rng.standard_normal((self.amplitudes.size, 2), dtype=np.float32)
        z = z.view(np.complex64)[:, 0]  # unit-variance real and imaginary parts
        z *= self.amplitudes
        box = np.zeros(self.mask.shape, dtype=np.complex64)
        box[self.mask] = z
        top, bottom = box[: self.ry + 1], box[self.ry + 1 :]
        h = self.shape[0]
        for c in _mirrored_columns(self.rx, self.nyquist):
            # Conjugate-symmetric self-mirrored columns (the weights are symmetric); real
            # (variance 2, like |z|^2 elsewhere) at self-conjugate rows.
            bottom[:, c] = np.conj(top[1 : 1 + self.n_bottom, c][::-1])
            top[0, c] = top[0, c].real * _SQRT_TWO
            if h % 2 == 0 and self.ry == h // 2:
                top[h // 2, c] = top[h // 2, c].real * _SQRT_TWO
        return top, bottom

    def power(self, top: np.ndarray, bottom: np.ndarray) -> float:
        """``sum |C_k|^2`` over the *full* DFT grid, DC excluded (Parseval; float64)."""
        return half_spectrum_power(top, bottom, self.rx if self.nyquist else None)

    def place(self, spectrum: np.ndarray, top: np.ndarray, bottom: np.ndarray,
              scale: float = 1.0, *, add: bool = False) -> None:
        """Write (or add) ``scale *`` the blocks into low spectrum columns ``(H, >= rx + 1)``.

        With ``add=True`` the blocks themselves are scaled in place."""
        h = self.shape[0]
        s = np.float32(scale)
        dst_top = spectrum[: self.ry + 1, : self.rx + 1]
        dst_bot = spectrum[h - self.n_bottom :, : self.rx + 1] if self.n_bottom else None
        if add:  # scales the blocks in place (no temporaries), then adds them
            for src, dst in ((top, dst_top), (bottom, dst_bot)):
                if dst is not None:
                    if scale != 1.0:
                        src *= s
                    dst += src
        else:
            np.multiply(top, s, out=dst_top)
            if dst_bot is not None:
                np.multiply(bottom, s, out=dst_bot)


def _mirrored_columns(rx: int, nyquist: bool) -> list[int]:
    """Columns of a real-FFT half spectrum that are their own mirror images: 0 and, when the
    band reaches it, the Nyquist column ``rx = W/2``."""
    return [0, rx] if nyquist and rx > 0 else [0]


def half_spectrum_dot(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                      nyquist_col: int | None) -> float:
    """``Re sum_k A_k conj(B_k)`` over the full DFT grid of two real fields (float64).

    ``a`` and ``b`` are ``(top, bottom)`` pairs of equally shaped low-row and high-row blocks
    (columns ``0..rx``) of real-FFT half spectra; columns other than 0 and the Nyquist column
    stand for two mirrored columns.
    """
    total = 0.0
    for xa, xb in zip(a, b):
        if xa.size == 0:
            continue
        x = xa.view(np.float32).astype(np.float64)  # (rows, 2 cols): re, im interleaved
        x *= xb.view(np.float32)
        col = x.sum(axis=0)  # per real/imaginary column
        s = 2.0 * col.sum() - col[0] - col[1]
        if nyquist_col:
            s -= col[2 * nyquist_col] + col[2 * nyquist_col + 1]
        total += s
    return total


def half_spectrum_power(top: np.ndarray, bottom: np.ndarray, nyquist_col: int | None) -> float:
    """``sum |C_k|^2`` over the full DFT grid of a real field, DC excluded (float64).

    ``top``/``bottom`` are the low-row and high-row blocks (columns ``0..rx``) of a real-FFT
    half spectrum. Columns other than 0 and the Nyquist column stand for two mirrored columns.
    """
    total = 0.0
    for x in (top, bottom):
        if x.size == 0:
            continue
        sq = np.square(x.view(np.float32), dtype=np.float64)  # (rows, 2 cols): re, im
        total += 2.0 * float(sq.sum()) - float(sq[:, :2].sum())
        if nyquist_col:
            total -= float(sq[:, 2 * nyquist_col : 2 * nyquist_col + 2].sum())
    return total - float(abs(complex(top[0, 0])) ** 2)


def overlap_dot(pa: FieldPlan, a: tuple[np.ndarray, np.ndarray], pb: FieldPlan,
                b: tuple[np.ndarray, np.ndarray]) -> float:
    """:func:`half_spectrum_dot` of two fields' coefficient blocks (as drawn by their plans on
    the same torus) over the frequencies both hold: the cross term of a mix's power."""
    ry, rx = min(pa.ry, pb.ry), min(pa.rx, pb.rx)
    nb = min(pa.n_bottom, pb.n_bottom)
    (ta, ba), (tb, bb) = a, b
    nyquist = rx if pa.nyquist and pb.nyquist else None
    return half_spectrum_dot(
        (ta[: ry + 1, : rx + 1], ba[ba.shape[0] - nb :, : rx + 1]),
        (tb[: ry + 1, : rx + 1], bb[bb.shape[0] - nb :, : rx + 1]),
        nyquist,
    )


@lru_cache(maxsize=128)
def field_plan(kernel: str, shape: tuple[int, int], length_scale: float) -> FieldPlan:
    """The (cached) :class:`FieldPlan` of a kernel and length scale on an ``H x W`` torus."""
    h, w = shape
    weights = spectra.grid_weights(kernel, shape, float(length_scale))
    ry, rx = spectra.band_limit(weights)
    if 2 * ry + 1 >= h:  # full band: rows 0..H//2 on top, the rest below
        ry, n_bottom = h // 2, h - h // 2 - 1
    else:
        n_bottom = ry
    amp = np.sqrt(weights * (h * w / 2))
    rows = np.r_[0 : ry + 1, h - n_bottom : h]
    box = amp[rows, : rx + 1]
    mask = np.ascontiguousarray(weights[rows, : rx + 1] >= spectra.BAND_TOL * weights.max())
    # Self-mirrored columns: the lower rows are the conjugates of the upper ones (coefficients),
    # so their mask is the mirror of the upper rows' too, whatever rounding did at the cutoff.
    nyquist = w % 2 == 0 and rx == w // 2
    for c in _mirrored_columns(rx, nyquist):
        mask[ry + 1 :, c] = mask[1 : 1 + n_bottom, c][::-1]
    amplitudes = box[mask].astype(np.float32)
    for a in (mask, amplitudes):
        a.setflags(write=False)
    return FieldPlan(
        shape=shape, ry=ry, rx=rx, n_bottom=n_bottom, nyquist=nyquist,
        mask=mask, amplitudes=amplitudes,
    )


def sample_field(
    shape: int | tuple[int, int],
    length_scale: float,
    *,
    seed: int | np.random.SeedSequence,
    kernel: str = "squared_exponential",
    periodic: bool = True,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """One draw of a zero-mean, unit-variance stationary GP on a pixel grid.

    Args:
        shape: ``H`` or ``(H, W)`` in pixels.
        length_scale: kernel length scale ``l`` in pixels (see ``spectra.max_length_scale``).
        seed: int in ``[0, 2**63 - 1]`` or a ``numpy.random.SeedSequence``.
        kernel: ``"squared_exponential"``, ``"matern32"`` or ``"matern52"``.
        periodic: ``True``: a field on the torus (covariance ``k`` periodised over the image);
            ``False``: no wrap-around correlation (drawn on a padded torus, then cropped).
        threads: FFT threads.
        backend: FFT backend (``gptextures.fft.BACKENDS``), default the fastest installed.
    Returns:
        float32 ``(H, W)``; covariance ``k(r)`` at every lag ``r``, mean and variance not
        renormalised (the sample mean fluctuates around 0 by the zero-frequency mode).
    """
    shape = check_shape(shape)
    spectra.check_kernel(kernel)
    ell = spectra.check_length_scale(length_scale, kernel, shape)
    if not isinstance(periodic, (bool, np.bool_)):
        raise TypeError(f"periodic: expected a bool, got {periodic!r}")
    torus = shape if periodic else torus_shape(shape, spectra.padding(kernel, ell))
    rng = _seeds.rng(seed)
    return draw_field(field_plan(kernel, torus, ell), rng, shape, threads=threads, backend=backend)


def draw_field(plan: FieldPlan, rng: np.random.Generator, crop: tuple[int, int], *,
               threads: int = 1, backend: str | None = None) -> np.ndarray:
    """Draw a field from a plan and return its top-left ``crop`` (float32, C-contiguous)."""
    h, w = plan.shape
    spectrum = _fft.spectrum_buffer(plan.shape, plan.rx + 1, backend)
    top, bottom = plan.coefficients(rng)
    plan.place(spectrum, top, bottom, 1.0 / (h * w))  # the inverse FFT's normalisation
    out = _fft.irfft2(spectrum, plan.shape, threads=threads, backend=backend, normalise=False)
    if crop != plan.shape:
        out = np.ascontiguousarray(out[: crop[0], : crop[1]])
    return out
