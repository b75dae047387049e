"""Generator speed: ``gptextures.render`` against a plain-numpy reference, the FFT floor and peers.

Run ``python -m benchmarks.speed.generator`` (``--quick`` for a smoke run, ``--repeats N``).
Everything is measured in one run and compared as ratios, so the figures survive a change of
machine better than absolute times. Results go to ``benchmarks/results/generator_speed.json``
and ``generator_speed.md``; docs/performance.md explains every number.

What is timed (medians of repeated calls; wall clock, and the calling thread's CPU time for
one-thread calls):

- ours: ``render(texture, class_index, seed=..., threads=t)`` for t = 1, 2, classes cycled.
- (a) reference: the same maths in plain numpy (:class:`ReferenceRenderer`): full-grid complex
  white noise per level, ``numpy.fft.irfft2``, one field per level, per-level normalisation,
  weighted sum, normalisation.
- (b) floor: one pyFFTW inverse real FFT of the image size (float32, ``FFTW_ESTIMATE``); numpy
  and scipy ``irfft2`` for context.
- (c) peers: powerbox and gstools (optional extra ``bench``), one field per level with the
  kernel ``k(r) = exp(-r^2 / (2 l^2))`` matched (see :func:`gstools_len_scale`,
  :func:`powerbox_pk`).

The timings of one thread count are interleaved (every repeat calls each function once, in
turn) so that load from other processes on a shared machine hits ours, the reference and the
floor alike.
"""

from __future__ import annotations

import os

# pyFFTW's wheel runs FFTW's threads with OpenMP, whose idle threads spin for a while after each
# threaded floor FFT and would steal the core from the next timing (ours with 2 threads). Must
# be set before libgomp loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as _dt
import functools
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

import gptextures
from gptextures import fft as gfft
from gptextures import presets
from gptextures.spec import TextureSpec

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
MAIN_PRESET = "golkar2018"
CONTEXT_PRESETS = ("golkar2018-mini", "gp3-512")
#: Calls per turn in the main interleaved timings (the first of each turn is a warm-up).
BLOCK = 5
#: Targets of the issue, as (ratio key, comparison, bound).
TARGETS = (
    ("reference_over_ours_1t", ">=", 10.0),
    ("ours_over_floor_1t", "<=", 1.5),
)
#: gstools' Fourier method keeps the modes inside the radius where the missing variance of the
#: squared-exponential spectrum, exp(-(k l)^2 / 2), is below 1e-6 (k l <= 5.26). That is fewer
#: modes than our band limit (weights below 1e-14 of the peak; k l <= 8.0): it favours gstools.
GSTOOLS_KL = math.sqrt(2.0 * math.log(1e6))


# ---------------------------------------------------------------------------------------------
# (a) the plain-numpy reference


def reference_amplitude(shape: tuple[int, int], length_scale: float) -> np.ndarray:
    """``sqrt(S(f) * H * W)`` of the squared-exponential kernel on the real-FFT grid.

    ``S(f) = 2 pi l^2 exp(-2 pi^2 l^2 |f|^2)`` (frequencies in cycles per pixel, ``l`` in
    pixels), not aliased (negligible for ``l >= 1`` px). Returns float32 ``(H, W // 2 + 1)``.
    """
    h, w = shape
    f2 = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2
    s = 2.0 * math.pi * length_scale**2 * np.exp(-2.0 * math.pi**2 * length_scale**2 * f2)
    return np.sqrt(s * h * w).astype(np.float32)


def reference_field(amplitude: np.ndarray, shape: tuple[int, int],
                    rng: np.random.Generator) -> np.ndarray:
    """One unit-variance GP field, plain numpy: full-grid noise, ``numpy.fft.irfft2``.

    Args:
        amplitude: float32 ``(H, W // 2 + 1)`` from :func:`reference_amplitude`.
        shape: ``(H, W)``.
        rng: the noise source (standard normals, float32).
    Returns:
        float32 ``(H, W)`` with covariance ``k(r)`` (not renormalised).
    """
    h, w = shape
    z = rng.standard_normal((h, w // 2 + 1, 2), dtype=np.float32).view(np.complex64)[..., 0]
    z *= np.float32(math.sqrt(0.5))
    # Columns 0 and W/2 are their own mirror images: make them Hermitian, or irfft2 drops the
    # imaginary parts and those columns lose half their power.
    for c in (0, w // 2) if w % 2 == 0 else (0,):
        col = z[:, c]
        col[h // 2 + 1:] = np.conj(col[1:(h + 1) // 2][::-1])
        col[0] = col[0].real * np.float32(math.sqrt(2.0))
        if h % 2 == 0:
            col[h // 2] = col[h // 2].real * np.float32(math.sqrt(2.0))
    z *= amplitude
    return np.fft.irfft2(z, s=(h, w)).astype(np.float32, copy=False)


class ReferenceRenderer:
    """The whole image in plain numpy: one field per level, normalised, summed, normalised.

    Amplitudes are computed once per length scale (as gptextures caches its plans), so the
    timed call is noise + FFT + normalisation only. Only the ``sum`` mix of periodic
    squared-exponential textures is implemented (the benchmark's textures).
    """

    def __init__(self, texture: TextureSpec):
        if texture.mix != "sum" or texture.kernel != "squared_exponential" or not texture.periodic:
            raise ValueError(
                "texture: the reference implements only periodic squared_exponential sum mixes,"
                f" got mix={texture.mix!r}, kernel={texture.kernel!r},"
                f" periodic={texture.periodic!r}"
            )
        self.texture = texture
        self.shape = tuple(texture.size)
        self._amps: dict[float, np.ndarray] = {}

    def amplitude(self, length_scale: float) -> np.ndarray:
        amp = self._amps.get(length_scale)
        if amp is None:
            amp = self._amps[length_scale] = reference_amplitude(self.shape, length_scale)
        return amp

    def __call__(self, class_index: int, seed: int) -> np.ndarray:
        """float32 ``(H, W)`` image, mean 0, std 1."""
        rng = np.random.default_rng(seed)
        image = np.zeros(self.shape, dtype=np.float32)
        for level, ell in zip(self.texture.levels, self.texture.length_scales(class_index)):
            f = reference_field(self.amplitude(ell), self.shape, rng)
            f -= f.mean()
            f /= f.std()
            image += np.float32(level.weight) * f
        image -= image.mean()
        image /= image.std()
        return image


# ---------------------------------------------------------------------------------------------
# timing helpers: a timed function is ``f(i) -> (wall seconds, CPU seconds of the calling thread)``

Timed = Callable[[int], tuple[float, float]]


def timed(f: Callable[[int], object]) -> Timed:
    """``f(i)`` made to return its own wall and calling-thread CPU seconds."""

    def call(i: int) -> tuple[float, float]:
        c0, t0 = time.thread_time(), time.perf_counter()
        f(i)
        return time.perf_counter() - t0, time.thread_time() - c0

    return call


def _stats(samples: Sequence[tuple[float, float]]) -> dict:
    """Summary in ms of ``(wall, cpu)`` samples: median, min, quartiles of wall; median CPU."""
    ms = sorted(1e3 * w for w, _ in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    med = statistics.median(ms)
    return {
        "median_ms": med, "min_ms": ms[0], "p25_ms": q[0], "p75_ms": q[2],
        "cpu_median_ms": statistics.median(1e3 * c for _, c in samples), "n": len(ms),
        "per_s": 1e3 / med if med > 0 else float("inf"),
    }


def time_interleaved(funcs: dict[str, Timed], repeats: int, warmup: int = 1,
                     block: int = 1) -> dict[str, dict]:
    """Call each timed ``f(i)`` ``repeats`` times, round-robin; :func:`_stats` per name.

    Round-robin, so that a burst of load from other processes hits every function alike. With
    ``block > 1`` each turn is ``block`` calls in a row of which the first only warms the caches
    (after the other functions evicted them) and is not counted: ``repeats * (block - 1)``
    samples, the steady state of calling one function again and again.
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    if block < 1:
        raise ValueError(f"block: must be >= 1, got {block}")
    for i in range(warmup):
        for f in funcs.values():
            f(-1 - i)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in funcs}
    k = 0
    for _ in range(repeats):
        for name, f in funcs.items():
            for j in range(block):
                r = f(k)
                k += 1
                if block == 1 or j > 0:
                    samples[name].append(r)
    return {name: _stats(v) for name, v in samples.items()}


def _render_fn(texture: TextureSpec, threads: int) -> Callable[[int], object]:
    n = texture.num_classes

    def call(i: int) -> object:
        return gptextures.render(texture, i % n, seed=1000 + abs(i), threads=threads)

    return call


# ---------------------------------------------------------------------------------------------
# (b) the FFT floor


def _random_half_spectrum(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    rng = np.random.default_rng(0)
    z = rng.standard_normal((h, w // 2 + 1, 2), dtype=np.float32).view(np.complex64)[..., 0]
    return np.ascontiguousarray(z)


def _pyfftw_floor(pyfftw, spectrum: np.ndarray, shape: tuple[int, int], threads: int,
                  planner: str) -> Timed:
    src = pyfftw.empty_aligned(spectrum.shape, dtype=np.complex64)
    dst = pyfftw.empty_aligned(shape, dtype=np.float32)
    plan = pyfftw.FFTW(src, dst, axes=(0, 1), direction="FFTW_BACKWARD",
                       flags=(planner, "FFTW_DESTROY_INPUT"), threads=threads)

    def pyfftw_call(i: int) -> tuple[float, float]:
        src[...] = spectrum
        c0, t0 = time.thread_time(), time.perf_counter()
        plan.execute()
        return time.perf_counter() - t0, time.thread_time() - c0

    return pyfftw_call


def fft_functions(shape: tuple[int, int], threads: int) -> dict[str, Timed]:
    """Timed inverse real 2-D FFTs of ``shape`` with ``threads`` threads, per library.

    ``pyfftw_<t>t``: complex64 -> float32, ``FFTW_ESTIMATE``, the plan made once; the plan
    destroys its input, so the input is restored before each call, untimed, and only the
    execution is timed. ``pyfftw-patient_<t>t``: the same with an ``FFTW_PATIENT`` plan (FFTW
    times candidate algorithms here and keeps the fastest: the best floor pyFFTW offers).
    ``scipy_<t>t``: ``scipy.fft.irfft2(workers=t)``; ``numpy`` (one thread only):
    ``numpy.fft.irfft2``. Both time the whole call, complex64 input.
    """
    spectrum = _random_half_spectrum(shape)
    funcs: dict[str, Timed] = {}
    try:
        import pyfftw
    except ImportError:  # pragma: no cover - optional extra
        pyfftw = None
    if pyfftw is not None:
        for name, planner in (("pyfftw", "FFTW_ESTIMATE"), ("pyfftw-patient", "FFTW_PATIENT")):
            funcs[f"{name}_{threads}t"] = _pyfftw_floor(pyfftw, spectrum, shape, threads, planner)
    if threads == 1:
        funcs["numpy"] = timed(lambda i: np.fft.irfft2(spectrum, s=shape))
    funcs[f"scipy_{threads}t"] = timed(
        lambda i: scipy.fft.irfft2(spectrum, s=shape, workers=threads)
    )
    return funcs


# ---------------------------------------------------------------------------------------------
# components of our render, timed inside real render calls


def _timed(func: Callable, spent: list[float]) -> Callable:
    """``func`` wrapped to add the CPU seconds of the calling thread spent in it to ``spent[0]``.

    A plain function, so it binds like a method when set on a class.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        c0 = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - c0

    return wrapper


def measure_components(texture: TextureSpec, repeats: int) -> dict:
    """Median CPU ms per image of the noise draw, the inverse FFT and the rest of ``render``.

    One-thread ``render`` runs unmodified while ``gptextures.fft.irfft2`` and
    ``gptextures.fields.FieldPlan.coefficients`` (normal deviates, Hermitian symmetry and the
    amplitudes of one level) are wrapped by timers of the calling thread's CPU time (steadier
    than wall time on a shared machine); ``rest`` is the total minus both, per call. These are
    internals, not a stable API: if they are gone, returns ``{"available": False, ...}``.
    """
    from gptextures import fields

    names = [(gfft, "irfft2"), (fields.FieldPlan, "coefficients")]
    missing = [f"{getattr(o, '__name__', o)}.{n}" for o, n in names if not hasattr(o, n)]
    if missing:
        return {"available": False, "reason": f"internals changed: no {', '.join(missing)}"}
    originals = [getattr(o, n) for o, n in names]
    fft_spent, noise_spent = [0.0], [0.0]
    render = _render_fn(texture, 1)
    render(-1)
    totals, walls, ffts, noises = [], [], [], []
    try:
        gfft.irfft2 = _timed(originals[0], fft_spent)
        fields.FieldPlan.coefficients = _timed(originals[1], noise_spent)
        for i in range(repeats):
            fft_spent[0] = noise_spent[0] = 0.0
            c0, t0 = time.thread_time(), time.perf_counter()
            render(i)
            walls.append(time.perf_counter() - t0)
            totals.append(time.thread_time() - c0)
            ffts.append(fft_spent[0])
            noises.append(noise_spent[0])
    finally:
        for (o, n), f in zip(names, originals):
            setattr(o, n, f)
    if not any(ffts) or not any(noises):
        return {"available": False,
                "reason": "render no longer calls fft.irfft2 / FieldPlan.coefficients"}
    rests = [t - f - z for t, f, z in zip(totals, ffts, noises)]
    try:  # normal deviates drawn per image (band-limited), averaged over the classes
        deviates = float(np.mean([
            sum(fields.field_plan(texture.kernel, tuple(texture.size), ell).noise_count
                for ell in texture.length_scales(c))
            for c in range(texture.num_classes)
        ]))
    except Exception:  # noqa: BLE001 - internals are not a stable API
        deviates = None
    h, w = texture.size
    return {"available": True, "clock": "thread CPU time", "threads": 1, "n": repeats,
            "normal_deviates_per_image": deviates,
            "reference_normal_deviates_per_image": 2 * h * (w // 2 + 1) * texture.depth,
            "wall_total_ms": 1e3 * statistics.median(walls),
            **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in
               (("total", totals), ("noise", noises), ("fft", ffts), ("rest", rests))}}


# ---------------------------------------------------------------------------------------------
# (c) peers


def gstools_len_scale(length_scale: float) -> float:
    """gstools ``Gaussian(len_scale=L)`` equal to our ``exp(-r^2 / (2 l^2))``.

    gstools' Gaussian is ``exp(-(s r / L)^2)`` with ``s = sqrt(pi) / 2`` (default rescale), so
    ``s^2 / L^2 = 1 / (2 l^2)``, i.e. ``L = sqrt(pi / 2) * l``.
    """
    return math.sqrt(math.pi / 2.0) * length_scale


def powerbox_pk(length_scale: float) -> Callable[[np.ndarray], np.ndarray]:
    """powerbox power spectrum of our kernel (angular wavenumber ``k``, default ``a = b = 1``).

    ``P(k) = 2 pi l^2 exp(-k^2 l^2 / 2)``: the 2-D Fourier transform of ``exp(-r^2 / (2 l^2))``;
    with ``size = (H, W)`` in pixels, powerbox's ``delta_x`` then has covariance ``k(r)``.
    """
    ell = float(length_scale)
    return lambda k: 2.0 * math.pi * ell**2 * np.exp(-0.5 * (k * ell) ** 2)


def _field_check(field: np.ndarray, length_scale: float) -> dict:
    """Empirical variance and correlation at lag round(l) along rows (sanity of the matching)."""
    lag = max(1, int(round(length_scale)))
    f = field.astype(np.float64)
    var = float(np.mean(f * f))
    corr = float(np.mean(f * np.roll(f, lag, axis=-1)) / var) if var > 0 else float("nan")
    return {"lag": lag, "variance": var, "corr_at_lag": corr,
            "kernel_at_lag": math.exp(-0.5 * (lag / length_scale) ** 2)}


def measure_powerbox(shape: tuple[int, int], length_scales: Sequence[float], repeats: int,
                     threads: Sequence[int] = (1,)) -> dict:
    """Median ms of ``PowerBox(...).delta_x()`` per length scale and ``nthreads``."""
    try:
        import powerbox
    except ImportError:
        return {"available": False, "reason": "not installed (pip install 'gptextures[bench]')"}
    out: dict = {"available": True, "version": powerbox.__version__, "fields": {}}
    for t in threads:
        funcs, checks = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for ell in length_scales:
                box = powerbox.PowerBox(shape=tuple(shape), pk=powerbox_pk(ell),
                                        size=tuple(float(s) for s in shape), seed=1, nthreads=t)
                checks[ell] = _field_check(box.delta_x(), ell)
                funcs[ell] = timed(lambda i, box=box: box.delta_x())
            res = time_interleaved(funcs, repeats, warmup=0)
        for ell, entry in res.items():
            entry.update(threads=t, length_scale=ell, check=checks[ell],
                         fft="numpy.fft" if t <= 1 else f"pyFFTW, {t} threads")
            out["fields"][f"l={ell:g},threads={t}"] = entry
    return out


def gstools_mode_no(shape: tuple[int, int], length_scale: float) -> list[int]:
    """Even number of Fourier modes per axis covering ``|k| l <= GSTOOLS_KL`` (period = image)."""
    return [2 * math.ceil(GSTOOLS_KL * n / (2.0 * math.pi * length_scale)) for n in shape]


def measure_gstools(shape: tuple[int, int], length_scales: Sequence[float],
                    point_mode_budget: float) -> dict:
    """ms per full field of gstools ``SRF(Gaussian, generator="Fourier")``, one thread.

    gstools sums every mode at every point (cost proportional to points x modes), so the
    small scales would take minutes on a 1024x1024 grid: each field is evaluated on the first
    ``rows`` rows, with ``rows * W * modes <= point_mode_budget``, and the time is scaled by
    ``H / rows`` (``extrapolated`` says when). One repeat.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import gstools
    except ImportError:
        return {"available": False, "reason": "not installed (pip install 'gptextures[bench]')"}
    h, w = shape
    out: dict = {"available": True, "version": gstools.__version__, "fields": {}}
    saved_threads = gstools.config.NUM_THREADS
    gstools.config.NUM_THREADS = 1
    try:
        for ell in length_scales:
            out["fields"][f"l={ell:g},threads=1"] = _gstools_field(
                gstools, shape, ell, point_mode_budget
            )
    finally:
        gstools.config.NUM_THREADS = saved_threads
    return out


def _gstools_field(gstools, shape: tuple[int, int], ell: float, point_mode_budget: float) -> dict:
    """Time one gstools field at length scale ``ell`` (see :func:`measure_gstools`)."""
    h, w = shape
    model = gstools.Gaussian(dim=2, var=1.0, len_scale=gstools_len_scale(ell))
    r = np.array([0.0, ell, 2.0 * ell])
    model_err = float(np.max(np.abs(model.correlation(r) - np.exp(-0.5 * (r / ell) ** 2))))
    modes = gstools_mode_no(shape, ell)
    rows = int(max(1, min(h, point_mode_budget // (modes[0] * modes[1] * w))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srf = gstools.SRF(model, generator="Fourier", period=[float(h), float(w)],
                          mode_no=modes, seed=7)
        c0, t0 = time.thread_time(), time.perf_counter()
        field = srf.structured((np.arange(rows, dtype=float), np.arange(w, dtype=float)))
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    full_ms = 1e3 * dt * h / rows
    return {
        "median_ms": full_ms, "min_ms": full_ms, "cpu_median_ms": 1e3 * cpu * h / rows,
        "n": 1, "per_s": 1e3 / full_ms, "threads": 1, "length_scale": ell,
        "len_scale": gstools_len_scale(ell), "mode_no": modes, "rows_measured": rows,
        "measured_ms": 1e3 * dt, "extrapolated": rows < h, "model_max_abs_error": model_err,
        "check": _field_check(np.asarray(field), ell),
    }


# ---------------------------------------------------------------------------------------------
# the whole run


def _machine() -> dict:
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover
        load = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    try:
        import pyfftw

        pyfftw_version = pyfftw.__version__
    except ImportError:  # pragma: no cover
        pyfftw_version = None
    return {
        "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "pyfftw": pyfftw_version, "fft_backend": gfft.backend_name(),
        "gptextures": gptextures.__version__, "algorithm_version": gptextures.ALGORITHM_VERSION,
        "loadavg_start": load,
    }


def _texture_info(texture: TextureSpec, name: str) -> dict:
    return {
        "name": name, "size": list(texture.size), "kernel": texture.kernel, "mix": texture.mix,
        "periodic": texture.periodic,
        "levels": [{"name": lv.name, "length_scales": list(lv.length_scales),
                    "weight": lv.weight} for lv in texture.levels],
    }


def run(*, quick: bool = False, repeats: int | None = None, texture: TextureSpec | None = None,
        texture_name: str = MAIN_PRESET, context: Sequence[str] = CONTEXT_PRESETS,
        peers: bool = True, threads: Sequence[int] = (1, 2)) -> dict:
    """Measure everything once; return the report (see docs/performance.md for the fields).

    Args:
        quick: fewer repeats and smaller gstools samples (a smoke run; numbers are noisier).
        repeats: repeats of the fast timings (ours, FFTs); slower ones use fewer.
        texture: the texture to time, default the ``texture_name`` preset's.
        context: presets whose ms/image is reported for context.
        peers: time powerbox and gstools when installed.
        threads: thread counts for ours and the FFT floor (the first is the baseline).
    """
    if repeats is None:
        repeats = 7 if quick else 41
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    threads = tuple(threads)
    if not threads or threads[0] != 1 or any(t < 1 for t in threads):
        raise ValueError(f"threads: must start with 1 and be >= 1, got {threads}")
    if texture is None:
        texture = presets.get(texture_name).texture
    shape = tuple(texture.size)
    t_start = time.time()
    report: dict = {
        "benchmark": "generator_speed",
        "schema": 1,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick,
        "machine": _machine(),
        "texture": _texture_info(texture, texture_name),
        "repeats": {"fast": repeats, "powerbox": max(3, repeats // 4), "gstools": 1},
    }

    # ours, the reference and the floor, interleaved per thread count (so that load hits them
    # alike, and the worker threads of a multi-threaded call never overlap a 1-thread one), in
    # turns of BLOCK calls of which the first is a warm-up: the steady state of making images
    # one after another, as a dataset run does.
    ref = ReferenceRenderer(texture)
    n = texture.num_classes
    timings: dict[str, dict] = {}
    for t in threads:
        funcs = {f"ours_{t}t": timed(_render_fn(texture, t))}
        if t == threads[0]:
            funcs["reference"] = timed(lambda i: ref(i % n, 1000 + abs(i)))
        funcs.update(fft_functions(shape, t))
        timings.update(time_interleaved(funcs, repeats, block=BLOCK))
    report["block"] = BLOCK
    report["ours"] = {f"threads_{t}": timings.pop(f"ours_{t}t") for t in threads}
    report["reference"] = timings.pop("reference")
    report["fft"] = timings
    # The same two, one call each per turn: every render call starts with caches the
    # reference has just filled with its own ~30 MB (the harshest case for ours).
    cold = time_interleaved({"ours": timed(_render_fn(texture, threads[0])),
                             "reference": timed(lambda i: ref(i % n, 1000 + abs(i)))}, repeats)
    report["cold"] = cold
    report["components"] = measure_components(texture, repeats)

    # peers: one field per level, at the last class's length scales (the largest ones, which
    # need the fewest gstools modes: favourable to the peers)
    peer_scales = list(texture.length_scales(texture.num_classes - 1))
    report["peer_length_scales"] = peer_scales
    if peers:
        report["peers"] = {
            "powerbox": measure_powerbox(shape, peer_scales, max(3, repeats // 4),
                                         threads=tuple(threads)),
            "gstools": measure_gstools(shape, peer_scales, 1e7 if quick else 1e8),
        }
    else:
        report["peers"] = {}

    report["context"] = {}
    for name in context:
        tex = presets.get(name).texture
        entry = {"size": list(tex.size), "depth": tex.depth}
        for t in threads:
            entry[f"threads_{t}"] = time_interleaved({"r": timed(_render_fn(tex, t))},
                                                     repeats)["r"]
        report["context"][name] = entry

    report["ratios"] = _ratios(report, threads)
    report["targets"] = _targets(report)
    try:
        report["machine"]["loadavg_end"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    report["wall_s"] = time.time() - t_start
    return report


def _ratios(report: dict, threads: Sequence[int]) -> dict:
    """Ratios of medians (wall clock); ``*_cpu`` keys: the same from calling-thread CPU time."""
    t0 = threads[0]
    ours = {t: report["ours"][f"threads_{t}"] for t in threads}
    r: dict = {}
    for suffix, key in (("", "median_ms"), ("_cpu", "cpu_median_ms")):
        r[f"reference_over_ours_1t{suffix}"] = report["reference"][key] / ours[t0][key]
        if "cold" in report:
            r[f"reference_over_ours_1t_cold{suffix}"] = (report["cold"]["reference"][key]
                                                        / report["cold"]["ours"][key])
        for lib, label in (("pyfftw", "estimate"), ("pyfftw-patient", "patient")):
            floor = report["fft"].get(f"{lib}_{t0}t")
            if floor:
                r[f"ours_over_floor_{label}_1t{suffix}"] = ours[t0][key] / floor[key]
        # The target compares with the floor planned like ours: FFTW_PATIENT when our plans
        # come from the shipped (FFTW_PATIENT) wisdom, FFTW_ESTIMATE otherwise.
        matched = "patient" if "+wisdom" in report["machine"].get("fft_backend", "") else "estimate"
        if f"ours_over_floor_{matched}_1t{suffix}" in r:
            r[f"ours_over_floor_1t{suffix}"] = r[f"ours_over_floor_{matched}_1t{suffix}"]
    for t in threads[1:]:
        for lib, label in (("pyfftw", "estimate"), ("pyfftw-patient", "patient")):
            floor = report["fft"].get(f"{lib}_{t}t")
            if floor:
                r[f"ours_over_floor_{label}_{t}t"] = ours[t]["median_ms"] / floor["median_ms"]
    r["ours_over_numpy_fft_1t"] = ours[t0]["median_ms"] / report["fft"]["numpy"]["median_ms"]
    for name, peer in report.get("peers", {}).items():
        if not peer.get("available"):
            continue
        one = [f for f in peer["fields"].values() if f["threads"] == 1]
        if not one:
            continue
        r[f"{name}_field_over_ours_1t"] = min(f["median_ms"] for f in one) / ours[t0]["median_ms"]
        r[f"{name}_image_over_ours_1t"] = (
            sum(f["median_ms"] for f in one) / ours[t0]["median_ms"]
        )
    return r


def _targets(report: dict) -> list[dict]:
    """The issue's targets, judged on wall-clock medians (CPU-time ratio alongside)."""
    ratios = report["ratios"]
    checks = [(key, op, bound) for key, op, bound in TARGETS]
    checks += [(f"{name}_field_over_ours_1t", ">", 1.0)
               for name, peer in report.get("peers", {}).items() if peer.get("available")]
    out = []
    for key, op, bound in checks:
        v = ratios.get(key)
        met = None if v is None else bool(
            v >= bound if op == ">=" else v <= bound if op == "<=" else v > bound
        )
        out.append({"ratio": key, "target": f"{op} {bound:g}", "value": v,
                    "cpu_value": ratios.get(f"{key}_cpu"), "met": met})
    return out


# ---------------------------------------------------------------------------------------------
# output


def _fmt(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def _plural(t: int | str) -> str:
    return f"{t} thread{'' if str(t) == '1' else 's'}"


def rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """Table rows: what, median wall time, median CPU time (1-thread rows), per s, vs ours."""
    ours1 = report["ours"].get("threads_1", {}).get("median_ms")
    name = report["texture"]["name"]
    h, w = report["texture"]["size"]
    out = []

    def add(label: str, st: dict, threads: int | str = 1, note: str = "",
            compare: bool = True) -> None:
        ms = st["median_ms"]
        cpu = _fmt(st.get("cpu_median_ms")) if str(threads) == "1" else "-"
        ratio = f"{ms / ours1:.2f}x" if ours1 and compare else "-"
        out.append((label, _fmt(ms), cpu, f"{1e3 / ms:.1f}" if ms > 0 else "-", ratio + note))

    for key, st in report["ours"].items():
        t = key.split("_")[1]
        add(f"**gptextures render, {name}, {_plural(t)}**", st, t)
    c = report.get("components", {})
    if c.get("available"):
        for part, label in (("noise", "noise draw, all levels (FieldPlan.coefficients)"),
                            ("fft", "inverse FFT (gptextures.fft.irfft2)"),
                            ("rest", "the rest (placement, normalisation, allocation)")):
            ms = c[f"{part}_ms"]
            out.append((f"&nbsp;&nbsp;of which {label}", "-", _fmt(ms), "-",
                        f"{ms / c['total_ms']:.0%} of render's CPU" if c["total_ms"] > 0 else "-"))
    add("(a) plain numpy reference: full-grid noise, numpy.fft, 1 thread", report["reference"])
    cold = report.get("cold")
    if cold:
        ratio = cold["reference"]["median_ms"] / cold["ours"]["median_ms"]
        out.append(("one call per turn (caches cold after the reference): render, 1 thread",
                    _fmt(cold["ours"]["median_ms"]), _fmt(cold["ours"].get("cpu_median_ms")),
                    f"{1e3 / cold['ours']['median_ms']:.1f}", "-"))
        out.append(("one call per turn: reference", _fmt(cold["reference"]["median_ms"]),
                    _fmt(cold["reference"].get("cpu_median_ms")),
                    f"{1e3 / cold['reference']['median_ms']:.1f}",
                    f"{ratio:.2f}x of render in the same turns"))
    for key, st in report["fft"].items():
        if key == "numpy":
            add(f"one {h}x{w} numpy.fft.irfft2 (1 thread)", st)
            continue
        lib, t = key.split("_")
        t = t[:-1]
        label = {"pyfftw": "(b) floor: one pyFFTW", "pyfftw-patient": "(b) floor: one pyFFTW"
                 }.get(lib, "one scipy.fft")
        plan = {"pyfftw": ", FFTW_ESTIMATE", "pyfftw-patient": ", FFTW_PATIENT"}.get(lib, "")
        add(f"{label} {h}x{w} irfft2, float32{plan} ({_plural(t)})", st, t)
    for pname, peer in report.get("peers", {}).items():
        if not peer.get("available"):
            out.append((f"(c) {pname}", "-", "-", "-", peer.get("reason", "not available")))
            continue
        for f in peer["fields"].values():
            note = (f" (extrapolated from {f['rows_measured']} of {h} rows)"
                    if f.get("extrapolated") else "")
            add(f"(c) {pname} {peer['version']}, one field, l = {f['length_scale']:g} px"
                f" ({_plural(f['threads'])})", f, f["threads"], note)
    for cname, ctx in report.get("context", {}).items():
        for key, st in ctx.items():
            if key.startswith("threads_"):
                t = key.split("_")[1]
                add(f"context: render {cname} ({ctx['size'][0]} px, depth {ctx['depth']}),"
                    f" {_plural(t)}", st, t, compare=False)
    return out


HEADER = ("what", "median wall", "median CPU", "per second", "time vs ours (1 thread)")


def format_text(report: dict) -> str:
    """A plain-text table for the terminal."""
    body = [tuple(c.replace("**", "").replace("&nbsp;", " ") for c in r) for r in rows(report)]
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    lines.append("")
    lines += _target_lines(report)
    return "\n".join(lines)


def _target_lines(report: dict) -> list[str]:
    out = []
    for t in report["targets"]:
        v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        cpu = "" if t.get("cpu_value") is None else f" (CPU-time ratio {t['cpu_value']:.2f})"
        met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        out.append(f"target {t['ratio']} {t['target']}: {v}{cpu} -> {met}")
    cold = report.get("ratios", {}).get("reference_over_ours_1t_cold")
    if cold is not None:
        out.append(f"(same ratio with one call per turn, caches cold after the reference:"
                   f" {cold:.2f})")
    return out


def format_markdown(report: dict, command: str) -> str:
    """The Markdown results page (README and docs/performance.md copy its table)."""
    m = report["machine"]
    tex = report["texture"]
    levels = ", ".join(f"{lv['name']} {{{', '.join(f'{s:g}' for s in lv['length_scales'])}}}"
                       for lv in tex["levels"])
    lines = [
        "# Generator speed",
        "",
        f"`{command}` on {report['date_utc']}: {m['cpu']}, {m['cpu_count']} cores (shared;"
        f" load average {_load(m.get('loadavg_start'))} at the start,"
        f" {_load(m.get('loadavg_end'))} at the end), Python {m['python']}, numpy {m['numpy']},"
        f" scipy {m['scipy']}, FFT backend `{m['fft_backend']}`, gptextures {m['gptextures']}"
        f" (algorithm {m['algorithm_version']}).",
        "",
        f"Texture `{tex['name']}`: {tex['size'][0]}x{tex['size'][1]}, levels {levels},"
        f" {tex['mix']} mix, {tex['kernel']}. Medians over {report['repeats']['fast']}"
        f" interleaved turns of {report.get('block', 1)} calls each, the first of each turn a"
        f" warm-up (powerbox: {report['repeats']['powerbox']} calls; gstools: 1). Peers draw one"
        f" field per level at"
        f" l = {', '.join(f'{s:g}' for s in report['peer_length_scales'])} px.",
        "",
        *_load_note(m),
        "| " + " | ".join(HEADER) + " |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", "Targets (ratios measured in this run):", ""]
    lines += [f"- {line}" for line in _target_lines(report)]
    lines += ["", "See docs/performance.md for what each number means and how peers were matched.",
              ""]
    return "\n".join(lines)


def _load_note(machine: dict) -> list[str]:
    """A warning paragraph when other processes competed for the cores during the run."""
    loads = [x[0] for x in (machine.get("loadavg_start"), machine.get("loadavg_end")) if x]
    cores = machine.get("cpu_count") or 1
    if not loads or max(loads) <= 1.5:
        return []
    return [
        f"Load: the 1-minute load average reached {max(loads):.1f} on {cores} cores, so other"
        " processes competed for the cores: wall times include waiting for a core (compare the"
        " CPU-time column) and the two-thread rows mostly measure scheduling delays.",
        "",
    ]


def _load(load) -> str:
    return "n/a" if not load else f"{load[0]:.2f}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(report: dict, out_dir: Path, command: str) -> tuple[Path, Path]:
    """Write ``generator_speed.json`` and ``generator_speed.md`` to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    jpath = out_dir / "generator_speed.json"
    mpath = out_dir / "generator_speed.md"
    _write_atomic(jpath, json.dumps(report, indent=2, sort_keys=False) + "\n")
    _write_atomic(mpath, format_markdown(report, command))
    return jpath, mpath


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.generator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of the fast timings (default 41; --quick 7)")
    parser.add_argument("--no-peers", action="store_true", help="skip powerbox and gstools")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                        help=f"where the JSON and Markdown go (default {RESULTS_DIR})")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    report = run(quick=args.quick, repeats=args.repeats, peers=not args.no_peers)
    command = "python -m benchmarks.speed.generator" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:]) else "")
    print(format_text(report))
    jpath, mpath = write_results(report, args.out_dir, command)
    print(f"\nwrote {jpath} and {mpath} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
