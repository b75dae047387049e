"""Inverse real 2-D FFT of band-limited spectra: pyFFTW (fast path, optional), scipy, numpy.

Fields and textures only have power in the low columns ``kx = 0..rx`` of the real-FFT half
spectrum (``rx ~ 140`` of 513 at 1024 px for the paper's textures), so the inverse transform is
done in two 1-D stages: complex inverse FFTs down the ``rx + 1`` non-zero columns only, then
complex-to-real FFTs along every row. With pyFFTW the row stage runs in blocks of rows copied
into a cache-sized zero-padded buffer, so the zero columns are never streamed through memory.
At 1024 px that is ~0.8x the time of pyFFTW's best full 2-D inverse FFT (``FFTW_PATIENT``).

pyFFTW plans are deterministic, so the same input gives the same bytes in every run:

- Each stage is split into fixed parts (2 column groups; row blocks of a power of two of rows,
  64 at 1024 px, chosen from the shape alone) with one single-threaded plan each. ``threads``
  only decides how many parts run at once, so the bytes never depend on it.
- Plans come from the FFTW wisdom shipped in ``gptextures/fftw_wisdom.txt`` (made once with
  ``FFTW_EXHAUSTIVE`` for the presets' shapes: ``python -m gptextures.wisdom``) when it applies to
  this FFTW build and CPU, else from ``FFTW_ESTIMATE``. Never from timing at run time
  (``FFTW_MEASURE`` may pick different algorithms in different runs).

Choose a backend with ``GPTEXTURES_FFT`` (``pyfftw``, ``scipy`` or ``numpy``); the default is
pyFFTW when importable, else scipy. ``GPTEXTURES_FFT_WISDOM=0`` ignores the shipped wisdom.
Backends and plans round differently, so :func:`backend_name` (which names the wisdom in use) is
recorded in every file written.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("pyfftw", "scipy", "numpy")

# pyFFTW is imported on first use (it takes ~0.15 s and pulls in dask.array when installed),
# not when gptextures is imported.
pyfftw: Any = None
_pyfftw_checked = False


def _have_pyfftw() -> bool:
    """Import pyFFTW once; whether it is installed."""
    global pyfftw, _pyfftw_checked
    if not _pyfftw_checked:
        try:  # pragma: no cover - depends on the optional extra
            import pyfftw as module

            pyfftw = module
        except ImportError:  # pragma: no cover
            pyfftw = None
        _pyfftw_checked = True
    return pyfftw is not None

_local = threading.local()

WISDOM_PATH = Path(__file__).with_name("fftw_wisdom.txt")
# Plan only from wisdom made at least as thoroughly as FFTW_PATIENT (the shipped file), or fail.
_WISDOM_ONLY = ("FFTW_PATIENT", "FFTW_WISDOM_ONLY")
_ESTIMATE = ("FFTW_ESTIMATE",)
_wisdom_lock = threading.Lock()
_wisdom_state: dict[str, str | None] = {}


def available_backends() -> tuple[str, ...]:
    """Backends importable here, fastest first."""
    return tuple(b for b in BACKENDS if b != "pyfftw" or _have_pyfftw())


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


def wisdom_id() -> str | None:
    """Short hash of the shipped FFTW wisdom if it is in use here, else ``None``.

    Decided once per process, before the first plan (FFTW keeps imported wisdom for good, so
    the answer cannot change later). It is not used when ``GPTEXTURES_FFT_WISDOM=0`` at that
    moment, when pyFFTW is missing, or when FFTW rejects it (another FFTW build or a CPU without
    the SIMD codelets it names).
    """
    if not _have_pyfftw():
        return None
    with _wisdom_lock:
        if "id" not in _wisdom_state:
            _wisdom_state["id"] = None
            if os.environ.get("GPTEXTURES_FFT_WISDOM", "1") == "0":
                return None
            try:
                data = WISDOM_PATH.read_bytes()
            except OSError:
                data = b""
            if data and pyfftw.import_wisdom((b"", data, b""))[1]:
                _wisdom_state["id"] = hashlib.sha256(data).hexdigest()[:8]
        return _wisdom_state["id"]


def backend_name(backend: str | None = None) -> str:
    """Name, version and planning of a backend, e.g. ``'pyfftw-0.15.1/FFTW_ESTIMATE'`` or
    ``'pyfftw-0.15.1/FFTW_ESTIMATE+wisdom-1a2b3c4d'`` (shapes the wisdom covers use it)."""
    backend = check_backend(backend) if backend else default_backend()
    if backend == "pyfftw":
        wid = wisdom_id()
        suffix = f"+wisdom-{wid}" if wid else ""
        return f"pyfftw-{pyfftw.__version__}/FFTW_ESTIMATE{suffix}"
    if backend == "scipy":
        import scipy

        return f"scipy-{scipy.__version__}"
    return f"numpy-{np.__version__}"


def spectrum_buffer(shape: tuple[int, int], ncols: int, backend: str | None = None
                    ) -> np.ndarray:
    """A zeroed complex64 ``(H, ncols)`` input block for :func:`irfft2` of ``shape``.

    With pyFFTW this is the calling thread's reusable, aligned plan input (passing it back to
    :func:`irfft2` saves a copy); it is valid until the next call for the same shape and
    ``ncols`` in this thread, and zeroed in full on every call. Other backends get a new array.
    """
    backend = check_backend(backend) if backend else default_backend()
    if backend != "pyfftw":
        return np.zeros((shape[0], ncols), dtype=np.complex64)
    buf = _pyfftw_plans(tuple(shape), ncols).cols_in
    buf.fill(0)
    return buf


def _parts(n: int, k: int, align: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``k`` parts whose starts are multiples of ``align``."""
    size = -(-n // k)
    size = -(-size // align) * align
    if size >= n:
        return [(0, n)]
    return [(a, min(n, a + size)) for a in range(0, n, size)]


_MAX_PARTS = 2  # parts per stage: up to 2 threads help one image (workers scale further)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_MAX_PARTS - 1, thread_name_prefix="gptextures-fft")
        return _pool


def _forget_pool_after_fork() -> None:
    """A forked child (e.g. a multiprocessing worker) has none of the parent's threads."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


_BLOCK_BYTES = 2**18  # row-stage output per block; its padded input is as large (L2: 512 KiB)


def _row_block(h: int, w: int) -> int:
    """Rows per row-stage block: the largest power of two whose float32 output rows take at
    most ``_BLOCK_BYTES``, but at least 8 and at most ``h`` (64 rows at 1024 px)."""
    rows = 8
    while 2 * rows * 4 * w <= _BLOCK_BYTES:
        rows *= 2
    return min(h, rows)


class _RowLane:
    """One thread's row-stage buffers: a zero-padded ``(block, W/2 + 1)`` spectrum block whose
    columns ``ncols..`` stay zero (the plans preserve their input) and its c2r plans."""

    def __init__(self, block: int, rest: int, w: int, flags: tuple[str, ...]) -> None:
        self.padded = pyfftw.zeros_aligned((block, w // 2 + 1), dtype=np.complex64)
        out = pyfftw.empty_aligned((block, w), dtype=np.float32)
        self.plans = {
            n: pyfftw.FFTW(self.padded[:n], out[:n], axes=(1,), direction="FFTW_BACKWARD",
                           flags=flags, threads=1)
            for n in {block, rest} if n
        }


class _PyfftwPlans:
    """The two 1-D stages for one (shape, ncols), split into fixed parts, with work buffers.

    Column stage: complex inverse FFTs down the ``ncols`` columns (2 column groups, 4-column
    aligned), into a compact ``(H, ncols)`` array. Row stage: fixed blocks of rows (a multiple
    of 8) are copied into a zero-padded block that stays in cache and transformed from there,
    so the ``W/2 + 1 - ncols`` zero columns are never streamed through memory (~15% faster
    than transforming a full ``(H, W/2 + 1)`` array). Every part has a single-threaded plan;
    ``threads`` only decides how many parts run at once, so the bytes never depend on it.
    ``planner`` is ``"wisdom"`` (shipped wisdom only, raises ``RuntimeError`` where it has
    none), ``"estimate"``, or an FFTW flag used to make wisdom.
    """

    def __init__(self, shape: tuple[int, int], ncols: int, planner: str = "wisdom") -> None:
        h, w = shape
        flags = {"wisdom": _WISDOM_ONLY, "estimate": _ESTIMATE}.get(planner, (planner,))
        self.shape, self.ncols = shape, ncols
        self.cols_in = pyfftw.empty_aligned((h, ncols), dtype=np.complex64)
        self.mid = pyfftw.empty_aligned((h, ncols), dtype=np.complex64)
        self.col_parts = _parts(ncols, _MAX_PARTS, 4) if h * ncols >= 2**14 else [(0, ncols)]
        self.cols = [
            pyfftw.FFTW(self.cols_in[:, a:b], self.mid[:, a:b], axes=(0,),
                        direction="FFTW_BACKWARD", flags=flags, threads=1)
            for a, b in self.col_parts
        ]
        block = _row_block(h, w)
        self.blocks = [(a, min(h, a + block)) for a in range(0, h, block)]
        n_lanes = min(_MAX_PARTS, len(self.blocks))
        self.lanes = [_RowLane(block, h % block, w, flags) for _ in range(n_lanes)]

    def _col(self, j: int) -> None:
        self.cols[j].execute()

    def _rows(self, lane: int, k: int, out: np.ndarray) -> None:
        """Row blocks ``lane, lane + k, ...`` into ``out``, with lane ``lane``'s buffers."""
        buffers = self.lanes[lane]
        padded, ncols = buffers.padded, self.ncols
        for a, b in self.blocks[lane::k]:
            padded[: b - a, :ncols] = self.mid[a:b]
            plan = buffers.plans[b - a]
            plan.update_arrays(padded[: b - a], out[a:b])
            plan.execute()

    def __call__(self, threads: int) -> np.ndarray:
        """Unnormalised inverse transform of ``cols_in`` (a new float32 array)."""
        out = pyfftw.empty_aligned((self.shape[0], self.shape[1]), dtype=np.float32)
        _run_parallel(self._col, [(j,) for j in range(len(self.cols))], threads)
        k = min(threads, len(self.lanes))
        _run_parallel(self._rows, [(i, k, out) for i in range(k)], k)
        return out


def _run_parallel(fn, args: list[tuple], threads: int) -> None:
    """Run ``fn(*a)`` for every ``a``: this thread takes every ``threads``-th part, pool threads
    the rest (pyFFTW releases the GIL while executing)."""
    k = min(threads, len(args))
    if k <= 1:
        for a in args:
            fn(*a)
        return

    def lane(i: int) -> None:
        for a in args[i::k]:
            fn(*a)

    futures = [_thread_pool().submit(lane, i) for i in range(1, k)]
    lane(0)
    for f in futures:
        f.result()


def _pyfftw_plans(shape: tuple[int, int], ncols: int) -> _PyfftwPlans:
    """This thread's plans for (shape, ncols): from the shipped wisdom where it covers them."""
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    key = (shape, ncols)
    plan = plans.get(key)
    if plan is None:
        if wisdom_id() is not None:
            try:
                plan = _PyfftwPlans(shape, ncols, "wisdom")
            except RuntimeError:  # no wisdom for these problems
                pass
        if plan is None:
            plan = _PyfftwPlans(shape, ncols, "estimate")
        plans[key] = plan
    return plan


def irfft2(
    block: np.ndarray,
    shape: tuple[int, int],
    *,
    threads: int = 1,
    backend: str | None = None,
    normalise: bool = True,
) -> np.ndarray:
    """Inverse real 2-D DFT of a band-limited spectrum.

    Args:
        block: complex64 ``(H, ncols)``, columns ``kx = 0..ncols-1`` of the real-FFT half
            spectrum (``ncols <= W // 2 + 1``); the higher columns are zero. May be overwritten.
        shape: output ``(H, W)``.
        threads: FFT threads (>= 1); the bytes do not depend on it.
        backend: one of :data:`BACKENDS`, default :func:`default_backend`.
        normalise: ``True``: numpy's ``1 / (H W)`` normalisation. ``False``: no normalisation
            (``H W`` times larger), for callers that fold the factor into their own scaling.
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
    scale = np.float32(1.0 / (h * w)) if normalise else None
    if backend == "pyfftw":
        plans = _pyfftw_plans((h, w), ncols)
        if block is plans.cols_in:
            if scale is not None:
                block *= scale
        else:
            if scale is not None:
                np.multiply(block, scale, out=plans.cols_in)
            else:
                plans.cols_in[...] = block
        return plans(threads)
    norm = "backward" if normalise else "forward"
    if backend == "scipy":
        import scipy.fft as sfft

        cols = sfft.ifft(block.astype(np.complex64, copy=False), axis=0, workers=threads,
                         norm=norm)
        full = np.zeros((h, w // 2 + 1), dtype=np.complex64)
        full[:, :ncols] = cols
        return sfft.irfft(full, n=w, axis=1, workers=threads, norm=norm).astype(
            np.float32, copy=False)
    full = np.zeros((h, w // 2 + 1), dtype=np.complex128)
    full[:, :ncols] = np.fft.ifft(block, axis=0, norm=norm)
    return np.fft.irfft(full, n=w, axis=1, norm=norm).astype(np.float32)
