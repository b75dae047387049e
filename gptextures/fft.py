"""Inverse real 2-D FFT backends: pyFFTW (fast path, optional), scipy.fft (fallback), numpy.

pyFFTW plans are made with ``FFTW_ESTIMATE`` (deterministic: no timing-based planning, so the
same input gives the same bytes in every run) and cached per (shape, threads, thread of the
caller). Choose a backend with the environment variable ``GPTEXTURES_FFT`` (``pyfftw``,
``scipy`` or ``numpy``); the default is pyFFTW when importable, else scipy. The backend's name
and version are recorded in every file written (:func:`backend_name`).
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


def empty_spectrum(shape: tuple[int, int], backend: str | None = None) -> np.ndarray:
    """A zeroed complex64 half-spectrum ``(H, W // 2 + 1)`` suited to the backend (aligned)."""
    h, w = shape
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        return pyfftw.zeros_aligned((h, w // 2 + 1), dtype=np.complex64)
    return np.zeros((h, w // 2 + 1), dtype=np.complex64)


def _pyfftw_plan(shape: tuple[int, int], threads: int):
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    key = (shape, threads)
    plan = plans.get(key)
    if plan is None:
        h, w = shape
        src = pyfftw.empty_aligned((h, w // 2 + 1), dtype=np.complex64)
        dst = pyfftw.empty_aligned((h, w), dtype=np.float32)
        plan = pyfftw.FFTW(
            src, dst, axes=(0, 1), direction="FFTW_BACKWARD",
            flags=("FFTW_ESTIMATE", "FFTW_DESTROY_INPUT"), threads=threads,
        )
        plans[key] = plan
    return plan


def irfft2(
    spectrum: np.ndarray,
    shape: tuple[int, int],
    *,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """Inverse real 2-D DFT with numpy's normalisation (``1 / (H W)``).

    Args:
        spectrum: complex64 ``(H, W // 2 + 1)``; may be overwritten (pyFFTW destroys input).
        shape: output ``(H, W)``.
        threads: FFT threads (>= 1).
        backend: one of :data:`BACKENDS`, default :func:`default_backend`.
    Returns:
        float32 ``(H, W)``, a new array.
    """
    h, w = shape
    if spectrum.shape != (h, w // 2 + 1):
        raise ValueError(f"spectrum: expected shape {(h, w // 2 + 1)}, got {spectrum.shape}")
    if threads < 1:
        raise ValueError(f"threads: must be >= 1, got {threads}")
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        plan = _pyfftw_plan((h, w), threads)
        out = pyfftw.empty_aligned((h, w), dtype=np.float32)
        if not pyfftw.is_byte_aligned(spectrum, plan.input_alignment) or (
            spectrum.dtype != np.complex64
        ):
            src = plan.input_array
            src[...] = spectrum
            spectrum = src
        plan(spectrum, out, normalise_idft=True)
        return out
    if backend == "scipy":
        import scipy.fft

        return scipy.fft.irfft2(
            spectrum.astype(np.complex64, copy=False), s=(h, w), workers=threads
        ).astype(np.float32, copy=False)
    return np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
