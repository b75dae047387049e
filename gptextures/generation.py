"""Orchestration: turn a spec into files with worker processes, shards, resume, merge, Dask.

Every sample is independent and seeded by (dataset seed, split, index), so work splits into
contiguous index blocks that any worker can render (``DatasetSpec.sample``, FFT threads = 1 per
worker). For HDF5 the parent hands blocks, in index order as they come back, to one writer
thread (checksums and chunk writes release the GIL, so writing overlaps with rendering); for
the Hugging Face folder each worker writes whole Parquet files. Output bytes do not depend on
the number of workers, on shards (``shard=(i, n)`` writes the ``i``-th contiguous part of every
split; see :func:`merge`) or on resumes.

Executors: in-process (``workers=1``), a process pool (``workers > 1``, ``forkserver``/``spawn``
start method, never ``fork``), or a ``dask.distributed.Client`` (``client=`` or ``scheduler=``
address); for the HF format Dask workers must see the output folder (shared filesystem).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import hdf5 as _hdf5
from .io.behind import WriteBehind as _WriteBehind
from .io.meta import check_formats, detect_format, ensure_writable_dir
from .memory import keep_freed_memory
from .spec import DatasetSpec

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_BLOCK_BYTES = 16 * 2**20
# In-process HDF5 blocks: the writer thread starts on a block as soon as it is rendered, and the
# last block's write is the part that cannot overlap with rendering, so keep blocks small.
_INLINE_BLOCK_BYTES = 4 * 2**20


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


def check_workers(workers: Any) -> int:
    """Validate a worker count (an int >= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
        raise TypeError(f"workers: expected an int >= 1, got {workers!r}")
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    return int(workers)


# ---- work units (run in workers; module-level so they pickle) ------------------------------
@functools.lru_cache(maxsize=4)
def _spec_of(spec_json: str) -> DatasetSpec:
    return DatasetSpec.from_json(spec_json)


def render_block(spec_json: str, split: str, start: int, stop: int, encode: bool = False
                 ) -> tuple[Any, np.ndarray, np.ndarray]:
    """Render samples ``start:stop`` of ``split``.

    Args:
        encode: return the images as HDF5 chunks with their fletcher32 checksums
            (:class:`gptextures.io.hdf5.EncodedChunks`), computed here in the worker.
    Returns:
        ``images`` float32 ``(k, H, W)`` (or encoded chunks), ``labels`` int64 ``(k,)``,
        ``seeds`` int64 ``(k,)``.
    """
    spec = _spec_of(spec_json)
    h, w = spec.texture.size
    images = np.empty((stop - start, h, w), dtype=np.float32)
    labels = np.empty(stop - start, dtype=np.int64)
    seeds = np.empty(stop - start, dtype=np.int64)
    for j, i in enumerate(range(start, stop)):
        s = spec.sample(split, i, threads=1)
        images[j], labels[j], seeds[j] = s.image, s.label, s.seed
    if encode:
        return _hdf5.encode_chunks(images), labels, seeds
    return images, labels, seeds


def _worker_init() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    keep_freed_memory()  # a worker process only renders: reuse image buffers (see memory.py)


# ---- executors ----------------------------------------------------------------------------
class _Inline:
    """Runs tasks at submit time in this process (``workers=1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by .result()
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        pass


class _Dask:
    def __init__(self, client: Any, own: bool):
        self.client = client
        self.own = own

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def shutdown(self) -> None:
        if self.own:
            self.client.close()


class _Pool:
    def __init__(self, workers: int):
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":  # import numpy/pyFFTW once, not per worker
            ctx.set_forkserver_preload(["gptextures.generation"])
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                           initializer=_worker_init)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self.pool.submit(fn, *args)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _executor(workers: int, client: Any = None, scheduler: str | None = None) -> Any:
    if client is not None and scheduler is not None:
        raise ValueError("client/scheduler: pass one of them, not both")
    if scheduler is not None:
        try:
            from dask.distributed import Client
        except ImportError:  # pragma: no cover - optional extra
            raise ImportError("scheduler: Dask needs the 'dask' extra: "
                              "pip install 'gptextures[dask]'") from None
        return _Dask(Client(scheduler), own=True)
    if client is not None:
        if not hasattr(client, "submit"):
            raise TypeError(f"client: expected a dask.distributed.Client, got "
                            f"{type(client).__name__}")
        return _Dask(client, own=False)
    return _Pool(workers) if workers > 1 else _Inline()


def _ordered(executor: Any, fn: Callable[..., Any], tasks: Iterable[tuple[Any, ...]],
             window: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Submit ``fn(*task)`` with at most ``window`` in flight; yield ``(task, result)`` in order.

    In-process (:class:`_Inline`) each task runs just before its result is yielded, so the
    consumer gets it without waiting for the next one to be computed."""
    if isinstance(executor, _Inline):
        for task in tasks:
            yield task, executor.submit(fn, *task).result()
        return
    pending: deque = deque()
    it = iter(tasks)
    for task in it:
        pending.append((task, executor.submit(fn, *task)))
        if len(pending) >= window:
            break
    while pending:
        task, fut = pending.popleft()
        result = fut.result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, executor.submit(fn, *nxt)))
        yield task, result


def block_size(spec: DatasetSpec, remaining: int, workers: int) -> int:
    """Images per work unit: ~16 MiB, at most 64, small enough to keep every worker busy."""
    h, w = spec.texture.size
    size = max(1, min(64, _BLOCK_BYTES // (h * w * 4)))
    return max(1, min(size, -(-remaining // (4 * workers)) if remaining else 1))


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
    """

    paths: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    generated: int = 0
    resumed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    fingerprint: str = ""

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")


def output_paths(spec: DatasetSpec, out_dir: str | os.PathLike[str],
                 formats: str | Sequence[str] = ("hdf5",),
                 shard: str | tuple[int, int] | None = None) -> dict[str, Path]:
    """Where :func:`generate` writes each format."""
    shard = parse_shard(shard)
    out = {}
    for f in check_formats(formats):
        if f == "hdf5":
            out[f] = _hdf5.default_path(out_dir, spec, shard)
        else:
            from .io import hf as _hf

            out[f] = _hf.default_path(out_dir, spec, shard)
    return out


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
        workers: worker processes (``1``: this process).
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
        FileExistsError: a complete output exists and ``overwrite`` is false.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"spec: expected a DatasetSpec, got {type(spec).__name__}")
    fmts = check_formats(formats)
    workers = check_workers(workers)
    shard = parse_shard(shard)
    splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
    paths = output_paths(spec, out_dir, fmts, shard)
    ensure_writable_dir(out_dir)
    if not overwrite:  # refuse before touching anything
        for f, p in paths.items():
            if p.exists():
                raise FileExistsError(
                    f"out: {str(p)!r} already exists (a complete {f} dataset); pass --overwrite"
                    " (overwrite=True) to replace it"
                )
    t0 = time.perf_counter()
    result = GenerateResult(fingerprint=spec.fingerprint)
    executor = _executor(workers, client, scheduler)
    n_workers = _n_workers(executor, workers)
    try:
        for f in fmts:
            if f == "hdf5":
                _generate_hdf5(spec, paths[f], splits, shard, overwrite, compression, executor,
                               n_workers, progress, result)
            else:
                _generate_hf(spec, paths[f], splits, shard, overwrite, hf_compression,
                             rows_per_file, executor, n_workers, progress, result)
    finally:
        executor.shutdown()
    result.seconds = time.perf_counter() - t0
    result.paths = paths
    result.bytes = sum(_size(p) for p in paths.values())
    return result


def _n_workers(executor: Any, workers: int) -> int:
    if isinstance(executor, _Dask):
        try:
            return max(1, sum(executor.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a best guess is enough for block sizing
            return workers
    return workers


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())


def _bar(total: int, initial: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True)


def _generate_hdf5(spec: DatasetSpec, path: Path, splits: list[str], shard: tuple[int, int],
                   overwrite: bool, compression: str | None, executor: Any, workers: int,
                   progress: bool, result: GenerateResult) -> None:
    writer = _hdf5.HDF5Writer.open(path, spec, splits=splits, shard=shard,
                                   compression=compression, overwrite=overwrite)
    try:
        spec_json = spec.to_json(indent=None)
        todo = {s: (writer.next_index(s), writer.range(s)[1]) for s in splits}
        remaining = sum(b - a for a, b in todo.values())
        total = sum(hi - lo for lo, hi in (writer.range(s) for s in splits))
        result.resumed += total - remaining
        for s in splits:
            result.counts[s] = writer.range(s)[1] - writer.range(s)[0]
        bs = block_size(spec, remaining, workers)
        inline = isinstance(executor, _Inline)
        if inline:
            h, w = spec.texture.size
            bs = max(1, min(bs, _INLINE_BLOCK_BYTES // (h * w * 4)))
        # Parallel workers also compute the chunk checksums, so this process only copies bytes;
        # in-process, the writer thread computes them (numpy releases the GIL).
        encode = compression is None and not inline
        tasks = [(spec_json, s, a, min(a + bs, b), encode) for s, (a, b) in todo.items()
                 for a in range(a, b, bs)]
        bar = _bar(total, total - remaining, f"{spec.name} hdf5", progress)
        sizes: list[int] = []  # samples per queued block, in order
        shown = 0

        def show() -> None:
            nonlocal shown
            if bar is not None:
                n = sum(sizes[shown:wb.done])
                shown = wb.done
                if n:
                    bar.update(n)

        # This thread renders (or collects workers' results); one writer thread writes, at
        # most two blocks behind. Only the writer thread touches the file until it is joined.
        wb = _WriteBehind(writer.write, depth=2, name="hdf5-writer")
        try:
            try:
                for (_, s, a, b, _), (images, labels, seeds) in _ordered(
                        executor, render_block, tasks, 2 * workers + 1):
                    wb.put((s, a, images, labels, seeds))
                    sizes.append(b - a)
                    show()
            except BaseException:
                wb.close(abort=True)  # the block being written completes; the rest is dropped
                raise
            wb.close()  # every queued block written; a writer error is raised here
            show()
        finally:
            if bar is not None:
                bar.close()
        result.generated += sum(sizes)
        writer.finish()
    except BaseException:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - e.g. a full disk again: the first error is the news
            pass
        raise


def _generate_hf(spec: DatasetSpec, path: Path, splits: list[str], shard: tuple[int, int],
                 overwrite: bool, compression: str, rows_per_file: int | None, executor: Any,
                 workers: int, progress: bool, result: GenerateResult) -> None:
    from .io import hf as _hf

    writer = _hf.HFWriter.open(path, spec, splits=splits, shard=shard, compression=compression,
                               rows_per_file=rows_per_file, overwrite=overwrite)
    pending = writer.pending()
    total = sum(f.stop - f.start for f in writer.files)
    remaining = sum(f.stop - f.start for f in pending)
    result.resumed += total - remaining
    counts: dict[str, int] = {}
    for f in writer.files:
        counts[f.split] = counts.get(f.split, 0) + f.stop - f.start
    result.counts.update(counts)
    bar = _bar(total, total - remaining, f"{spec.name} hf", progress)
    try:
        tasks = [writer.task(f) for f in pending]
        for task, _ in _ordered(executor, _hf.write_file, tasks, 2 * workers):
            n = task[6] - task[5]
            result.generated += n
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    writer.finish()


def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False, progress: bool = False) -> Path:
    """Join complete shards (all HDF5 files or all HF folders) into one dataset.

    The result is identical to a single-process run of the same spec (HDF5: same datasets and
    attributes; HF: the same Parquet files byte for byte).
    """
    if not shards:
        raise ValueError("shards: expected one or more shard paths, got none")
    kinds = {detect_format(p) for p in shards}
    if len(kinds) != 1:
        raise ValueError(f"shards: mix of formats {sorted(kinds)}; merge HDF5 shards and HF "
                         "shards separately")
    if kinds.pop() == "hdf5":
        return _hdf5.merge(shards, out, overwrite=overwrite, progress=progress)
    from .io import hf as _hf

    return _hf.merge(shards, out, overwrite=overwrite)


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
