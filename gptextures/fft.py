"""Inverse real 2-D FFT of band-limited spectra: pyFFTW (fast path, optional), scipy, numpy.

Fields and textures only have power in the low columns ``kx = 0..rx`` of the real-FFT half
spectrum (``rx ~ 140`` of 513 at 1024 px for the paper's textures), so the inverse transform is
done in two 1-D stages: complex inverse FFTs down the ``rx + 1`` non-zero columns only, then
complex-to-real FFTs along every row. That is ~0.6x the work of a full 2-D inverse FFT.

pyFFTW plans use ``FFTW_ESTIMATE`` (no timing-based planning, so the same input gives the same
bytes in every run and for any thread count) and are cached per (shape, columns, threads) in each
calling thread. Choose a backend with ``GPTEXTURES_FFT`` (``pyfftw``, ``scipy`` or ``numpy``);
the default is pyFFTW when importable, else scipy. Different backends round differently, so
:func:`backend_name` is recorded in every file written.
"""

from __future__ import annotations

import os
import threading

import numpy as np

BACKENDS = ("pyfftw", "scipy", "numpy")

try:  # pragma: no cover - depends on the optional extra
    import pyfftw

    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _HAVE_PYFFTW = False

_local = threading.local()


def available_backends() -> tuple[str, ...]:
    """Backends importable here, fastest first."""
    return tuple(b for b in BACKENDS if b != "pyfftw" or _HAVE_PYFFTW)


def default_backend() -> str:
    """The backend used when none is given: ``$GPTEXTURES_FFT`` or the fastest available."""
    env = os.environ.get("GPTEXTURES_FFT")
    if env:
        return check_backend(env)
    return available_backends()[0]


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown FFT backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend not in available_backends():
        raise ValueError(
            f"backend: {backend!r} is not installed (pip install 'gptextures[fftw]');"
            f" available: {', '.join(available_backends())}"
        )
    return backend


def backend_name(backend: str | None = None) -> str:
    """Name and version of a backend, e.g. ``'pyfftw-0.15.1/FFTW_ESTIMATE'``."""
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        return f"pyfftw-{pyfftw.__version__}/FFTW_ESTIMATE"
    if backend == "scipy":
        import scipy

        return f"scipy-{scipy.__version__}"
    return f"numpy-{np.__version__}"


def zeros_columns(height: int, ncols: int, backend: str | None = None) -> np.ndarray:
    """A zeroed complex64 ``(H, ncols)`` block of low spectrum columns (aligned for pyFFTW)."""
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        return pyfftw.zeros_aligned((height, ncols), dtype=np.complex64)
    return np.zeros((height, ncols), dtype=np.complex64)


class _PyfftwPlans:
    """The two 1-D stages for one (shape, ncols, threads), with their work buffers."""

    def __init__(self, shape: tuple[int, int], ncols: int, threads: int) -> None:
        h, w = shape
        flags = ("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT")
        self.cols_in = pyfftw.empty_aligned((h, ncols), dtype=np.complex64)
        self.rows_in = pyfftw.zeros_aligned((h, w // 2 + 1), dtype=np.complex64)
        self.cols = pyfftw.FFTW(
            self.cols_in, self.rows_in[:, :ncols], axes=(0,), direction="FFTW_BACKWARD",
            flags=flags, threads=threads,
        )
        self.out_template = pyfftw.empty_aligned((h, w), dtype=np.float32)
        self.rows = pyfftw.FFTW(
            self.rows_in, self.out_template, axes=(1,), direction="FFTW_BACKWARD",
            flags=flags, threads=threads,
        )
        self.ncols = ncols

    def __call__(self, block: np.ndarray) -> np.ndarray:
        self.cols(block, self.rows_in[:, : self.ncols], normalise_idft=True)
        self.rows_in[:, self.ncols :] = 0  # the row stage destroys its input
        out = pyfftw.empty_aligned(self.out_template.shape, dtype=np.float32)
        self.rows(self.rows_in, out, normalise_idft=True)
        return out


def _pyfftw_plans(shape: tuple[int, int], ncols: int, threads: int) -> _PyfftwPlans:
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    key = (shape, ncols, threads)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _PyfftwPlans(shape, ncols, threads)
    return plan


def irfft2(
    block: np.ndarray,
    shape: tuple[int, int],
    *,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Inverse real 2-D DFT (numpy's ``1 / (H W)`` normalisation) of a band-limited spectrum.

    Args:
        block: complex64 ``(H, ncols)``, columns ``kx = 0..ncols-1`` of the real-FFT half
            spectrum (``ncols <= W // 2 + 1``); the higher columns are zero. May be overwritten.
        shape: output ``(H, W)``.
        threads: FFT threads (>= 1).
        backend: one of :data:`BACKENDS`, default :func:`default_backend`.
    Returns:
        float32 ``(H, W)``, a new array.
    """
    h, w = shape
    ncols = block.shape[1]
    if block.ndim != 2 or block.shape[0] != h or not 1 <= ncols <= w // 2 + 1:
        raise ValueError(
            f"block: expected shape ({h}, ncols) with 1 <= ncols <= {w // 2 + 1}, got {block.shape}"
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: must be an int >= 1, got {threads!r}")
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        plans = _pyfftw_plans((h, w), ncols, threads)
        if block.dtype != np.complex64 or not pyfftw.is_byte_aligned(
            block, plans.cols.input_alignment
        ):
            plans.cols_in[...] = block
            block = plans.cols_in
        return plans(block)
    if backend == "scipy":
        import scipy.fft as sfft

        cols = sfft.ifft(block.astype(np.complex64, copy=False), axis=0, workers=threads)
        full = np.zeros((h, w // 2 + 1), dtype=np.complex64)
        full[:, :ncols] = cols
        return sfft.irfft(full, n=w, axis=1, workers=threads).astype(np.float32, copy=False)
    full = np.zeros((h, w // 2 + 1), dtype=np.complex128)
    full[:, :ncols] = np.fft.ifft(block, axis=0)
    return np.fft.irfft(full, n=w, axis=1).astype(np.float32)
