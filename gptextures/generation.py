"""Orchestration: turn a spec into files with worker processes, shards, resume, merge, Dask.

Every sample is independent and seeded by (dataset seed, split, index), so the work splits
into units any worker can do. Each format's writer (:mod:`gptextures.io.formats`) says what
the units are and takes their results back in order: HDF5 renders and checksums blocks of
images that the one writing process stores (worker processes hand them over through a
memory-mapped scratch file, :mod:`gptextures.io.slots`); the Hugging Face folder's workers
write whole Parquet files.
Output bytes do not depend on the number of workers, on shards (``shard=(i, n)`` writes the
``i``-th contiguous part of every split; see :func:`merge`) or on resumes.

Executors: in-process (``workers=1``); ``workers > 1`` threads of this process, which hand the
remaining tasks to a pool of worker processes (``forkserver``/``spawn`` start method, never
``fork``) only when the timed work left says the pool repays its start; or a
``dask.distributed.Client`` (``client=`` or ``scheduler=`` address); for the HF format Dask
workers must see the output folder (shared filesystem).

Worker processes stop with their parent: an interrupted run (Ctrl-C, or SIGTERM/SIGHUP through
the command line) stops them before it returns, and a parent killed outright (``kill -9``)
leaves workers that notice within a fraction of a second and exit.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import select
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import lock as _lock
from .io.formats import (
    FormatWriter,
    Task,
    check_formats,
    check_target,
    detect_format,
    get_format,
    shard_range,
)
from .io.meta import check_disk_space, ensure_writable_dir, write_error
from .memory import keep_freed_memory
from .spec import DatasetSpec

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: Seconds to wait for a Dask scheduler before giving up.
SCHEDULER_TIMEOUT_S = 5


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``'I/N'`` (or ``(I, N)``) -> ``(I, N)`` with ``0 <= I < N``; ``None`` -> ``(0, 1)``."""
    if text is None:
        return (0, 1)
    if isinstance(text, tuple):
        i, n = text
    else:
        m = _SHARD_RE.match(str(text))
        if not m:
            raise ValueError(f"shard: expected 'I/N' with integers 0 <= I < N (e.g. '0/4'), "
                             f"got {text!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if isinstance(i, bool) or isinstance(n, bool) or not isinstance(i, (int, np.integer)) \
            or not isinstance(n, (int, np.integer)):
        raise TypeError(f"shard: expected two ints (I, N), got {text!r}")
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard: need N >= 1 and 0 <= I < N, got {i}/{n}")
    return int(i), int(n)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_workers(workers: Any) -> int:
    """Validate a worker count (an int >= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
        raise TypeError(f"workers: expected an int >= 1, got {workers!r}")
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    return int(workers)


# ---- worker processes ---------------------------------------------------------------------
def _worker_init(parent: int, stop: Any) -> None:
    """Set up a worker process: one thread per library, freed buffers kept, and a thread that
    ends the process when its parent is gone or asks it to stop."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    keep_freed_memory()  # a worker process only renders: reuse image buffers (see memory.py)
    threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True,
                     name="gptextures-watch-parent").start()


def _watch_parent(parent: int, stop: Any, period: float = 0.2) -> None:
    """Exit this worker as soon as ``parent`` has exited or ``stop`` is set (an interrupted
    run): the task being run is abandoned; the parent's writer keeps only finished blocks."""
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll the PID instead
        pidfd = None
    while True:
        if pidfd is not None:
            gone = bool(select.select([pidfd], [], [], period)[0])
        else:
            time.sleep(period)
            try:
                os.kill(parent, 0)
                gone = False
            except ProcessLookupError:
                gone = True
            except PermissionError:
                gone = False
        if gone or stop.is_set():
            os._exit(0)


# ---- executors ----------------------------------------------------------------------------
class _Inline:
    """Runs tasks in this process (``workers=1``)."""

    kind = "inline"

    def submit(self, fn: Any, *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by .result()
            fut.set_exception(exc)
        return fut

    def shutdown(self, interrupted: bool = False) -> None:
        pass


class _Dask:
    kind = "dask"

    def __init__(self, client: Any, own: bool):
        self.client = client
        self.own = own

    def submit(self, fn: Any, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def shutdown(self, interrupted: bool = False) -> None:
        if self.own:
            self.client.close()


#: What starting a local pool of worker processes costs, in seconds of this run's wall time:
#: a forkserver importing numpy, pyFFTW (and pyarrow for Parquet) while this process works on
#: the same cores, then each worker's first FFT plans (~0.5 s to the first worker up, measured
#: here). Threads cost nothing to start, so ``--workers N`` begins with N threads and starts a
#: pool only when the time it is expected to save is at least this (:func:`pool_saving`).
POOL_START_S = 1.0
#: Local workers begin as threads of this process. False sends every task to worker
#: processes (the io benchmark and the tests set it to measure and check them).
LOCAL_THREADS = True
#: Seconds of work the threads are timed for before extrapolating to the work left: the first
#: tasks carry one-time costs (FFT plans, file creation) that would make the rest look longer
#: than it is.
POOL_TIMED_S = 0.25


def pool_saving(work_left_s: float, busy_cores: float, workers: int, cores: int,
                spare_cores: float | None = None) -> float:
    """Seconds a pool of ``workers`` processes is expected to save on ``work_left_s`` seconds
    of work (at the speed measured so far) during which this process keeps ``busy_cores`` cores
    busy (its threads and write-behind threads together: CPU time over wall time) and the
    machine leaves ``spare_cores`` idle (``None``: unknown, taken as all the others). The same
    work spread over the cores processes could use (``min(workers, cores, busy + spare)``)
    would take ``busy / usable`` of the time: nothing is saved when the threads already fill
    the cores, or when other jobs hold the rest (never negative)."""
    busy = max(1.0, busy_cores)
    usable = min(workers, cores)
    if spare_cores is not None:
        usable = min(usable, busy + max(0.0, spare_cores))
    return max(0.0, work_left_s * (1.0 - busy / max(1.0, usable)))


def _machine_idle() -> tuple[int, int] | None:
    """``(idle, total)`` CPU time of the whole machine since boot, in clock ticks (Linux
    ``/proc/stat``: idle + iowait, and every state but guest time); ``None`` elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + ticks[4], sum(ticks)


class _Pool:
    """Local worker processes, started on demand (:meth:`start`): the first one comes up in a
    background thread while this process keeps working; tasks wait for it."""

    kind = "pool"

    def __init__(self, workers: int, preload: Sequence[str]):
        self.workers = workers
        self._preload = list(preload)
        self.pool: cf.ProcessPoolExecutor | None = None
        self._started: threading.Thread | None = None
        self._stop: Any = None

    def start(self) -> None:
        """Make the pool and bring its first worker up in the background."""
        if self.pool is not None:
            return
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":  # import numpy/pyFFTW once, not per worker
            ctx.set_forkserver_preload(self._preload)
        self._stop = ctx.Event()
        self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                           initializer=_worker_init,
                                           initargs=(os.getpid(), self._stop))
        self._started = threading.Thread(target=self._first_worker, daemon=True,
                                         name="gptextures-pool-start")
        self._started.start()

    def _first_worker(self) -> None:
        try:
            self.pool.submit(os.getpid).result()  # type: ignore[union-attr]
        except BaseException:  # noqa: BLE001 - a broken start shows in the tasks' results
            pass

    def ready(self) -> bool:
        """Whether the pool's first worker is up (tasks submitted now start at once)."""
        return self._started is not None and not self._started.is_alive()

    def submit(self, fn: Any, *args: Any) -> cf.Future:
        self.start()
        self._started.join()  # type: ignore[union-attr]
        return self.pool.submit(fn, *args)  # type: ignore[union-attr]

    def stop(self) -> None:
        """Make the workers exit now, abandoning their tasks (an interrupted run)."""
        if self._stop is not None:
            self._stop.set()

    def shutdown(self, interrupted: bool = False) -> None:
        if self.pool is None:
            return
        if interrupted:
            self.stop()
        self._started.join()  # type: ignore[union-attr]
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Local:
    """``--workers N`` on this machine: N threads of this process (nothing to start: rendering,
    checksums and Parquet encoding release the GIL). When :func:`_ordered`'s timing says a
    pool repays its start, N worker processes (:class:`_Pool`) take the tasks submitted once
    the first of them is up (the threads finish those they have)."""

    kind = "pool"

    def __init__(self, workers: int, preload: Sequence[str]):
        self.workers = workers
        self.threads = cf.ThreadPoolExecutor(workers, thread_name_prefix="gptextures-worker")
        self.processes = _Pool(workers, preload)
        self.ran = {"threads": 0, "worker processes": 0}  # tasks submitted to each

    def describe(self) -> str:
        """How the tasks ran: ``"N threads"``, ``"N worker processes"`` or both."""
        return ", then ".join(f"{self.workers} {k}" for k, v in self.ran.items() if v) \
            or f"{self.workers} threads"

    def submit(self, fn: Any, *args: Any) -> cf.Future:
        return self.processes.submit(fn, *args)

    def shutdown(self, interrupted: bool = False) -> None:
        """Stop the workers: worker processes at once when interrupted; running threads
        finish their task (a block, or one Parquet file) and waiting ones are cancelled. A
        second Ctrl-C while the threads finish is held until they have, then raised."""
        if interrupted:
            self.processes.stop()
        again = False
        try:
            while True:
                try:
                    self.threads.shutdown(wait=True, cancel_futures=True)
                    break
                except KeyboardInterrupt:
                    again = True
        finally:
            self.processes.shutdown(interrupted)
        if again:
            raise KeyboardInterrupt


def _preload(formats: Iterable[str]) -> list[str]:
    """Modules a worker pool imports once, before forking its workers: what the formats' tasks
    need, and pyFFTW when it renders (importing it takes ~0.2-0.7 s)."""
    from . import fft

    mods = [m for f in formats for m in get_format(f).worker_modules]
    return list(dict.fromkeys(mods + (["pyfftw"] if fft.default_backend() == "pyfftw" else [])))


def _dask_client(scheduler: str) -> Any:
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - optional extra
        raise ImportError("scheduler: Dask needs the 'dask' extra: "
                          "pip install 'gptextures[dask]'") from None
    try:
        return Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(
            f"scheduler: cannot reach a Dask scheduler at {scheduler!r} within"
            f" {SCHEDULER_TIMEOUT_S} s ({type(exc).__name__}: {exc}); check the address and that"
            " the scheduler is running") from None


class _Timing:
    """Wall and CPU time of this process, and idle time of the machine, since the first
    threaded task, and the samples of the threaded tasks finished since: what
    :func:`pool_saving` extrapolates from. The clocks are parameters for tests."""

    def __init__(self, wall: Any = time.perf_counter, cpu: Any = time.process_time,
                 idle: Any = _machine_idle, cores: Any = cpu_count) -> None:
        self._wall, self._cpu, self._idle, self._cores = wall, cpu, idle, cores
        self.wall0 = self.cpu0 = self.idle0 = None
        self.done = 0
        self._lock = threading.Lock()

    def started(self, fut: cf.Future, samples: int) -> None:
        if self.wall0 is None:
            self.wall0, self.cpu0, self.idle0 = self._wall(), self._cpu(), self._idle()
        fut.add_done_callback(lambda _f: self._finished(samples))

    def _finished(self, samples: int) -> None:
        with self._lock:
            self.done += samples

    def pool_pays(self, left: int, workers: int) -> bool:
        """Whether a pool of ``workers`` processes is expected to save at least
        ``POOL_START_S`` on the ``left`` samples not yet submitted."""
        if self.wall0 is None or not self.done:
            return False
        wall = self._wall() - self.wall0
        if wall < POOL_TIMED_S or wall <= 0:
            return False
        busy = (self._cpu() - self.cpu0) / wall
        cores = self._cores()
        spare = None
        now = self._idle()
        if self.idle0 is not None and now is not None and now[1] > self.idle0[1]:
            spare = cores * (now[0] - self.idle0[0]) / (now[1] - self.idle0[1])
        saving = pool_saving(wall / self.done * left, busy, workers, cores, spare)
        return saving >= POOL_START_S


def _ordered(executor: Any, writer: FormatWriter, tasks: Iterable[Task],
             window: int) -> Iterator[tuple[Task, Any]]:
    """Submit tasks with at most ``window`` in flight; yield ``(task, result)`` in order.

    In-process (:class:`_Inline`) each task runs just before its result is yielded. Locally
    (:class:`_Local`) tasks run on this process's threads (``writer.threaded`` says how) while
    the run is timed; a pool of worker processes is started only when the time it is expected
    to save on the work left (:func:`pool_saving`) is at least ``POOL_START_S``, and takes the
    tasks submitted once its first worker is up. So ``--workers`` never costs a pool's start on
    a run too small to repay it, nor on a machine whose cores the threads already fill. Tasks
    for worker processes go through ``writer.prepare`` (it may wait for a free transfer slot).
    """
    prepare = getattr(writer, "prepare", lambda t: t)
    if isinstance(executor, _Inline):
        for task in tasks:
            yield task, executor.submit(task.fn, *task.args).result()
        return
    tasks = list(tasks)
    it = iter(tasks)
    left = sum(t.samples for t in tasks)
    timing = _Timing()
    pending: deque = deque()

    def submit_next() -> bool:
        nonlocal left
        task = next(it, None)
        if task is None:
            return False
        left -= task.samples
        if isinstance(executor, _Local) and LOCAL_THREADS and not executor.processes.ready():
            if executor.processes.pool is None and timing.pool_pays(left + task.samples,
                                                                    executor.workers):
                executor.processes.start()
            task = writer.threaded(task)
            fut = executor.threads.submit(task.fn, *task.args)
            timing.started(fut, task.samples)
            executor.ran["threads"] += 1
        else:
            task = prepare(task)
            fut = executor.submit(task.fn, *task.args)
            if isinstance(executor, _Local):
                executor.ran["worker processes"] += 1
        pending.append((task, fut))
        return True

    while len(pending) < window and submit_next():
        pass
    while pending:
        task, fut = pending.popleft()
        result = fut.result()
        submit_next()
        yield task, result


# ---- results ------------------------------------------------------------------------------
@dataclass
class GenerateResult:
    """Summary of :func:`generate`.

    Attributes:
        paths: format -> written file or folder.
        counts: split -> samples held by the output (this shard).
        generated: samples rendered by this run (excludes resumed ones), per format summed.
        resumed: samples found already written (an interrupted run), per format summed.
        bytes: size on disk of the outputs.
        seconds: wall time of this run.
        fingerprint: the spec's fingerprint.
        workers: workers used: ``workers`` capped at the number of work units.
        executor: how they ran: ``"this process"``, ``"N threads"`` (of this process),
            ``"N threads, then N worker processes"`` (a pool was started: see
            ``POOL_START_S``), ``"N worker processes"`` (``LOCAL_THREADS`` off) or
            ``"Dask (N worker threads)"``.
    """

    paths: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    generated: int = 0
    resumed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    fingerprint: str = ""
    workers: int = 1
    executor: str = "this process"

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")


def output_paths(spec: DatasetSpec, out_dir: str | os.PathLike[str],
                 formats: str | Sequence[str] = ("hdf5",),
                 shard: str | tuple[int, int] | None = None) -> dict[str, Path]:
    """Where :func:`generate` writes each format."""
    shard = parse_shard(shard)
    return {f: get_format(f).default_path(out_dir, spec, shard) for f in check_formats(formats)}


def generate(
    spec: DatasetSpec,
    out_dir: str | os.PathLike[str],
    *,
    formats: str | Sequence[str] = ("hdf5",),
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    splits: Sequence[str] | None = None,
    overwrite: bool = False,
    compression: str | None = None,
    hf_compression: str = "zstd",
    rows_per_file: int | None = None,
    progress: bool = False,
    client: Any = None,
    scheduler: str | None = None,
) -> GenerateResult:
    """Write a dataset (or one shard of it) in one or more formats, resuming unfinished runs.

    Args:
        spec: the dataset.
        out_dir: output directory (created); see :func:`output_paths` for file names.
        formats: ``"hdf5"``, ``"hf"`` or both (``"hdf5,hf"``).
        workers: workers (``1``: this process alone): threads of this process, which hand
            the remaining tasks to worker processes when timing says those repay their start
            (``POOL_START_S``); capped at the number of work units, with a warning above the
            number of CPUs.
        shard: ``"I/N"`` or ``(I, N)``: write the ``I``-th contiguous part of every split.
        splits: splits to write (default: all).
        overwrite: replace complete outputs (the old one stays until the new one is complete)
            and discard unfinished ones instead of resuming them.
        compression: HDF5 compression (``None``, ``"gzip"``, ``"lzf"``).
        hf_compression: Parquet compression (``"zstd"``, ``"snappy"``, ``"none"``).
        rows_per_file: rows per Parquet file (default: ~256 MiB of images).
        progress: show a tqdm progress bar.
        client: a ``dask.distributed.Client`` to run the work on.
        scheduler: address of a Dask scheduler (``tcp://host:8786``) to connect to.
    Raises:
        FileExistsError: an output path exists and ``overwrite`` is false.
        OutputBusyError: another run is writing one of the outputs.
        OSError: (``ENOSPC``) the outputs cannot fit in the directory's free space.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"spec: expected a DatasetSpec, got {type(spec).__name__}")
    fmts = check_formats(formats)
    workers = check_workers(workers)
    shard = parse_shard(shard)
    splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
    if client is not None and scheduler is not None:
        raise ValueError("client/scheduler: pass one of them, not both")
    if client is not None and not hasattr(client, "submit"):
        raise TypeError(f"client: expected a dask.distributed.Client, got "
                        f"{type(client).__name__}")
    # The options of the formats that take some (any other format writes with its defaults).
    options = {"hdf5": {"compression": compression},
               "hf": {"compression": hf_compression, "rows_per_file": rows_per_file}}
    paths = output_paths(spec, out_dir, fmts, shard)
    ensure_writable_dir(out_dir)
    t0 = time.perf_counter()
    result = GenerateResult(fingerprint=spec.fingerprint, paths=paths)
    held: list[Path] = []
    try:
        for p in paths.values():  # refuse before touching anything
            _lock.acquire(p)
            held.append(p)
        for f, p in paths.items():
            check_target(p, spec, f, overwrite)
        _check_space(spec, splits, shard, paths, options, out_dir)
        _run(spec, paths, splits, shard, overwrite, options, workers, client, scheduler,
             progress, result)
    finally:
        for p in held:
            _lock.release(p)
    result.seconds = time.perf_counter() - t0
    result.bytes = sum(_size(p) for p in paths.values())
    return result


def _check_space(spec: DatasetSpec, splits: list[str], shard: tuple[int, int],
                 paths: dict[str, Path], options: dict[str, dict[str, Any]],
                 out_dir: str | os.PathLike[str]) -> None:
    """Refuse up front outputs that cannot fit (what a partial output holds counts as done)."""
    n = sum(b - a for a, b in (shard_range(spec.num_samples(s), shard) for s in splits))
    needed = sum(get_format(f).stored_bytes(spec, n, **options.get(f, {})) for f in paths)
    done = sum(_size(Path(str(p) + ".partial")) for p in paths.values())
    h, w = spec.texture.size
    check_disk_space(out_dir, needed - done,
                     f"{spec.name} ({n} images of {h}x{w} float32 as {', '.join(paths)})")


def _run(spec: DatasetSpec, paths: dict[str, Path], splits: list[str], shard: tuple[int, int],
         overwrite: bool, options: dict[str, dict[str, Any]], workers: int, client: Any,
         scheduler: str | None, progress: bool, result: GenerateResult) -> None:
    writers: dict[str, FormatWriter] = {}
    executor: Any = None
    try:
        if client is not None or scheduler is not None:  # reach the cluster before any file
            executor = _Dask(client, own=False) if client is not None \
                else _Dask(_dask_client(scheduler), own=True)  # type: ignore[arg-type]
        for f, p in paths.items():
            try:
                writers[f] = get_format(f).open_writer(p, spec, splits=splits, shard=shard,
                                                       overwrite=overwrite,
                                                       **options.get(f, {}))
            except OSError as exc:
                raise write_error(exc, p) from exc
        if isinstance(executor, _Dask):
            try:
                n = max(1, sum(executor.client.nthreads().values()))
            except Exception:  # noqa: BLE001 - a best guess is enough for block sizing
                n = workers
        else:
            units = max(len(w.tasks("pool", workers)) for w in writers.values())
            n = max(1, min(workers, units))  # more workers than work units would idle
            if n > cpu_count():
                warnings.warn(f"workers: {n} workers on {cpu_count()} CPUs; more workers than"
                              " CPUs only adds overhead", stacklevel=3)
            executor = _Local(n, _preload(paths)) if n > 1 else _Inline()
        for f, writer in writers.items():
            try:
                _write(spec, f, writer, executor, n, progress, result)
            except OSError as exc:
                raise write_error(exc, writer.path) from exc
        result.workers = n
        if isinstance(executor, _Local):
            result.executor = executor.describe()
        elif isinstance(executor, _Dask):
            result.executor = f"Dask ({n} worker threads)"
    except BaseException as exc:
        # Stop local workers first: nothing of theirs may still write into an output once its
        # writer has closed it and released its lock. The writers close whatever happens.
        try:
            if executor is not None:
                stopping, executor = executor, None
                stopping.shutdown(interrupted=isinstance(exc, KeyboardInterrupt))
        finally:
            for w in writers.values():
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - e.g. a full disk again: the first error is news
                    pass
        raise
    finally:
        if executor is not None:
            executor.shutdown()


def _write(spec: DatasetSpec, fmt: str, writer: FormatWriter, executor: Any, workers: int,
           progress: bool, result: GenerateResult) -> None:
    tasks = writer.tasks(executor.kind, workers)
    remaining = sum(t.samples for t in tasks)
    total = sum(writer.counts.values())
    for s, n in writer.counts.items():
        result.counts[s] = n
    result.resumed += total - remaining
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - remaining, desc=f"{spec.name} {fmt}",
                   unit="img", dynamic_ncols=True)
    shown = 0
    try:
        for task, res in _ordered(executor, writer, tasks, 2 * workers):
            writer.accept(task, res)
            if bar is not None and writer.samples_written > shown:
                bar.update(writer.samples_written - shown)
                shown = writer.samples_written
        writer.finish()
        if bar is not None and writer.samples_written > shown:
            bar.update(writer.samples_written - shown)
    finally:
        if bar is not None:
            bar.close()
    result.generated += remaining


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return 0


def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False, progress: bool = False) -> Path:
    """Join complete shards (all of one format) into one dataset.

    The result is identical to a single-process run of the same spec (HDF5: same datasets and
    attributes; HF: the same Parquet files byte for byte).
    """
    if not shards:
        raise ValueError("shards: expected one or more shard paths, got none")
    kinds = {detect_format(p) for p in shards}
    if len(kinds) != 1:
        raise ValueError(f"shards: mix of formats {sorted(kinds)}; merge each format's shards"
                         " separately")
    with _lock.output_lock(out):
        return get_format(kinds.pop()).merge(shards, out, overwrite=overwrite,
                                             progress=progress)


def generate_sharded(spec: DatasetSpec, out_dir: str | os.PathLike[str], *, shards: int,
                     formats: str | Sequence[str] = ("hdf5",), client: Any = None,
                     scheduler: str | None = None, overwrite: bool = False,
                     progress: bool = False, **kwargs: Any) -> dict[str, Path]:
    """Write all ``shards`` shards (for example on a Dask cluster) and merge them.

    Returns format -> the merged output path. The shard files are removed after merging.
    """
    import shutil

    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards: expected an int >= 1, got {shards!r}")
    if shards == 1:
        return generate(spec, out_dir, formats=formats, client=client, scheduler=scheduler,
                        overwrite=overwrite, progress=progress, **kwargs).paths
    shard_paths: dict[str, list[Path]] = {}
    for i in range(shards):
        res = generate(spec, out_dir, formats=formats, shard=(i, shards), client=client,
                       scheduler=scheduler, overwrite=overwrite, progress=progress, **kwargs)
        for f, p in res.paths.items():
            shard_paths.setdefault(f, []).append(p)
    finals = output_paths(spec, out_dir, formats)
    for f, ps in shard_paths.items():
        merge(ps, finals[f], overwrite=overwrite, progress=progress)
        for p in ps:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return finals
