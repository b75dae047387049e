"""Stationary kernels, each defined once as a 2-D spectral density, and their DFT-grid weights.

Frequencies are in cycles per pixel, length scales ``l`` in pixels, unit variance ``k(0) = 1``.
The continuous 2-D spectral densities (Fourier transform of ``k(r)`` over the plane):

- squared exponential, ``k(r) = exp(-r^2 / (2 l^2))``:
  ``S(f) = 2 pi l^2 exp(-2 pi^2 l^2 |f|^2)``
- Matern nu (nu = 3/2, 5/2), ``k(r) = Matern_nu(r / l)``:
  ``S(f) = 4 pi nu (2 nu)^nu / l^(2 nu) * (2 nu / l^2 + 4 pi^2 |f|^2)^-(nu + 1)``

The weights that make a field on the ``H x W`` pixel torus have *exactly* the kernel's
covariance at every integer lag (periodised over the torus) are, by Poisson summation, the
spectrum aliased over integer frequency shifts: ``w(f_k) = sum_j S(f_k + j)``. Only kernel-free
code lives elsewhere; adding a kernel means adding its spectral density here.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np

KERNELS: tuple[str, ...] = ("squared_exponential", "matern32", "matern52")
#: Kernel correlation allowed at half the image size (periodic wrap-around error bound).
WRAP_TOLERANCE = 0.01
#: Kernel correlation allowed across the padding of non-periodic fields.
PAD_TOLERANCE = 1e-3
#: Smallest length scale (pixels): below half a pixel the pixel grid does not resolve the kernel.
MIN_LENGTH_SCALE = 0.5


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel: unknown kernel {kernel!r}; known kernels: {', '.join(KERNELS)}")
    return kernel


def _matern_nu(kernel: str) -> float:
    return {"matern32": 1.5, "matern52": 2.5}[kernel]


def spectral_density(kernel: str, f2: np.ndarray, length_scale: float) -> np.ndarray:
    """Continuous 2-D spectral density ``S(|f|)`` of a unit-variance kernel.

    Args:
        kernel: one of :data:`KERNELS`.
        f2: squared frequency ``|f|^2`` in (cycles / pixel)^2, any shape.
        length_scale: ``l`` in pixels.
    Returns:
        ``S`` with the shape of ``f2`` (float64); integrates to ``k(0) = 1`` over the plane.
    """
    check_kernel(kernel)
    f2 = np.asarray(f2, dtype=np.float64)
    ell = float(length_scale)
    if kernel == "squared_exponential":
        return 2.0 * math.pi * ell**2 * np.exp(-2.0 * math.pi**2 * ell**2 * f2)
    nu = _matern_nu(kernel)
    a = 2.0 * nu / ell**2
    return 4.0 * math.pi * nu * (2.0 * nu) ** nu / ell ** (2 * nu) * (
        a + 4.0 * math.pi**2 * f2
    ) ** (-(nu + 1.0))


def correlation(kernel: str, r: np.ndarray | float, length_scale: float) -> np.ndarray:
    """Kernel value ``k(r)`` at distance ``r`` pixels, derived from the spectral density.

    The isotropic 2-D inverse Fourier transform (a Hankel transform,
    ``k(r) = 2 pi int_0^inf S(f) J0(2 pi f r) f df``) by the trapezoid rule, so the spectral
    density stays the single definition of each kernel. Accurate to ~1e-5 for ``r <= 12 l``.
    """
    from scipy import special  # here: importing it costs ~0.15 s, and few callers need it

    check_kernel(kernel)
    r = np.asarray(r, dtype=np.float64)
    ell = float(length_scale)
    # In units of l: S is negligible beyond f = 6 / l (squared exponential: exp(-710)) or has
    # an f^-(2 nu + 2) tail whose mass beyond 60 / l is < 1e-7 (Matern).
    fmax = (6.0 if kernel == "squared_exponential" else 60.0) / ell
    f = np.linspace(0.0, fmax, 60_001)
    sf = spectral_density(kernel, f**2, ell) * f
    flat = r.reshape(-1)
    out = np.array(
        [2.0 * math.pi * np.trapezoid(sf * special.j0(2.0 * math.pi * f * ri), f) for ri in flat]
    )
    return out.reshape(r.shape)


#: ``_distance_where`` of the kernels at the two tolerances used, so that validating a spec
#: (every preset, at every start) needs no Hankel transforms and no scipy.special; a test
#: recomputes them from the spectral densities.
_DISTANCES: dict[tuple[str, float], float] = {
    ("squared_exponential", 0.01): 3.0348531747440575,
    ("squared_exponential", 0.001): 3.7169133379356936,
    ("matern32", 0.01): 3.8324358311838296,
    ("matern32", 0.001): 5.32881198783798,
    ("matern52", 0.01): 3.587364804774552,
    ("matern52", 0.001): 4.845909705232771,
}


@cache
def _distance_where(kernel: str, tol: float) -> float:
    """Distance in units of ``l`` beyond which ``k(r) <= tol``."""
    known = _DISTANCES.get((kernel, tol))
    return known if known is not None else distance_where_bisection(kernel, tol)


def distance_where_bisection(kernel: str, tol: float) -> float:
    """:func:`_distance_where` by bisection on :func:`correlation` (40 steps from [0, 12])."""
    lo, hi = 0.0, 12.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if correlation(kernel, mid, 1.0) > tol:
            lo = mid
        else:
            hi = mid
    return hi


def max_length_scale(kernel: str, shape: tuple[int, int]) -> float:
    """Largest length scale (pixels) allowed for an ``H x W`` image.

    The kernel's correlation at half the smaller side must be at most :data:`WRAP_TOLERANCE`
    (1%): beyond that, one image holds too few independent correlation lengths, a periodic
    field's covariance is visibly distorted by wrap-around (``k(r) + k(N - r)``), and the padding
    of a non-periodic field grows without bound. Squared exponential: ``l <= min(H, W) / 6.07``.
    """
    return min(shape) / 2.0 / _distance_where(check_kernel(kernel), WRAP_TOLERANCE)


def padding(kernel: str, length_scale: float) -> int:
    """Pixels of padding per axis for a non-periodic field (``k(pad) <= PAD_TOLERANCE``)."""
    return int(math.ceil(_distance_where(check_kernel(kernel), PAD_TOLERANCE) * length_scale))


def check_length_scale(
    length_scale: object, kernel: str, shape: tuple[int, int], name: str = "length_scale"
) -> float:
    """Validate one length scale in pixels for a kernel and image shape; return it as float."""
    if isinstance(length_scale, bool) or not isinstance(length_scale, (int, float, np.number)):
        raise TypeError(f"{name}: expected a number of pixels, got {length_scale!r}")
    ell = float(length_scale)
    if not math.isfinite(ell) or ell <= 0:
        raise ValueError(f"{name}: must be a finite positive number of pixels, got {ell}")
    if ell < MIN_LENGTH_SCALE:
        raise ValueError(
            f"{name}: {ell} px is below {MIN_LENGTH_SCALE} px; the pixel grid cannot resolve it"
        )
    limit = max_length_scale(kernel, shape)
    if ell > limit:
        raise ValueError(
            f"{name}: {ell:g} px is too large for a {shape[0]}x{shape[1]} image with the {kernel}"
            f" kernel; the limit is {limit:.1f} px (the correlation at half the image size,"
            f" {min(shape) / 2:g} px, must be <= {WRAP_TOLERANCE:g}, so that the image spans"
            " several correlation lengths and wrap-around does not distort the covariance)"
        )
    return ell


def _alias_order(kernel: str, length_scale: float) -> int:
    """How many integer frequency shifts to sum so the aliased spectrum is exact to ~1e-15."""
    if kernel == "squared_exponential":
        # 2 pi^2 l^2 (J + 1/2)^2 > 35  ->  S(J + 1/2) / S(0) < 1e-15.
        return max(1, math.ceil(math.sqrt(35.0 / (2.0 * math.pi**2)) / length_scale + 0.5))
    # Matern: polynomial tail; the shifts beyond the box are added as a constant (below).
    return max(3, math.ceil(6.0 / length_scale))


def _matern_far_alias(kernel: str, length_scale: float, order: int) -> float:
    """``sum S(j)`` over integer shifts ``j`` outside the box ``|j|_inf <= order``.

    Far from the origin ``S(f + j)`` is nearly constant over one frequency cell, so the far
    aliases add a constant to every weight: white noise, i.e. a correction at lag 0 only.
    Summed directly out to ``|j| <= 64 order``; the rest (a relative ~1e-5 of this) is dropped.
    """
    far = 64 * order
    j = np.arange(-far, far + 1, dtype=np.float64)
    total = 0.0
    for jy in j:
        row = spectral_density(kernel, jy**2 + j**2, length_scale)
        if abs(jy) <= order:
            row[far - order : far + order + 1] = 0.0
        total += row.sum()
    return float(total)


def _se_aliased_1d(freqs: np.ndarray, length_scale: float, order: int) -> np.ndarray:
    """1-D factor of the separable squared-exponential spectrum, aliased over shifts."""
    ell = float(length_scale)
    out = np.zeros_like(freqs, dtype=np.float64)
    for j in range(-order, order + 1):
        out += math.sqrt(2.0 * math.pi) * ell * np.exp(-2.0 * math.pi**2 * ell**2 * (freqs + j)**2)
    return out


@lru_cache(maxsize=64)
def grid_weights(kernel: str, shape: tuple[int, int], length_scale: float) -> np.ndarray:
    """Spectral weights on the real-FFT grid: shape ``(H, W // 2 + 1)``, float64, read-only.

    With ``C = sqrt(w * H * W) * Z`` (``Z`` unit complex Hermitian white noise), ``irfft2(C)``
    is a field whose covariance at integer lag ``r`` is ``sum_m k(r + m * (H, W))``: the kernel
    periodised over the torus, exactly (Poisson summation over the aliased spectrum).
    """
    check_kernel(kernel)
    h, w = shape
    fy = np.fft.fftfreq(h)
    fx = np.fft.rfftfreq(w)
    order = _alias_order(kernel, length_scale)
    if kernel == "squared_exponential":
        out = np.outer(
            _se_aliased_1d(fy, length_scale, order), _se_aliased_1d(fx, length_scale, order)
        )
    else:
        out = np.zeros((h, w // 2 + 1))
        for jy in range(-order, order + 1):
            gy = (fy + jy) ** 2
            for jx in range(-order, order + 1):
                f2 = gy[:, None] + ((fx + jx) ** 2)[None, :]
                out += spectral_density(kernel, f2, length_scale)
        out += _matern_far_alias(kernel, length_scale, order)
    out.setflags(write=False)
    return out


BAND_TOL = 1e-14  # weights below this fraction of the maximum get no noise (float32 level)


def band_limit(weights: np.ndarray, rel_tol: float = BAND_TOL) -> tuple[int, int]:
    """Half-widths ``(ry, rx)`` of the frequency box outside which ``w < rel_tol * max(w)``.

    Rows ``[0, ry] U [H - ry, H)`` and columns ``[0, rx]`` of the real-FFT grid hold all the
    power that matters (dropped variance <= ``rel_tol * H * W / 2`` relative to ``k(0)``).
    """
    h = weights.shape[0]
    keep = weights >= rel_tol * weights.max()
    rows = np.flatnonzero(keep.any(axis=1))
    cols = np.flatnonzero(keep.any(axis=0))
    ky = np.minimum(rows, h - rows)
    return int(min(ky.max(), h // 2)), int(cols.max())
