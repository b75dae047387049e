"""Writing gptextures HDF5 files: a streaming, chunked, checksummed, resumable writer.

Layout (docs/formats.md): root attributes hold the provenance (spec JSON, fingerprint, versions,
FFT backend), ``complete`` and the shard; one group per split holds ``images (n, H, W) float32``
(one image per chunk, fletcher32), ``label (n,) int64``, ``levels/<level name> (n,) int64`` and
``seed (n,) int64``, with attributes ``start``/``stop`` (the split's global index range held by
this file) and ``written`` (how many rows are valid).

Every dataset is created at its final length and the label, level and seed columns are written
completely when the file is created (they follow from the spec); writing then only adds image
chunks in index order and moves ``written``. Rows at or past ``written`` are not valid.

A writer works on ``<path>.partial`` and renames it to ``<path>`` only once every split is full
and ``complete`` is set, so a file at ``<path>`` is always complete; an interrupted run resumes
from the ``written`` counters of the partial file. The writer holds the output's lock
(:mod:`gptextures.io.lock`) from :meth:`HDF5Writer.open` to :meth:`~HDF5Writer.finish` or
:meth:`~HDF5Writer.close`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...spec import DatasetSpec
from .. import blocks as _blocks
from .. import lock as _lock
from ..behind import WriteBehind
from ..checksum import EncodedChunks, encode_chunks
from ..formats import FormatWriter, Task, check_target
from ..meta import ensure_writable_dir, provenance
from ..slots import SUFFIX as SLOTS_SUFFIX
from ..slots import BlockSlots
from .layout import LABEL_CHUNK, check_compression, partial_path, shard_range
from .reader import read_stored_chunks

_BLOCK_BYTES = 16 * 2**20  # images per task: ~16 MiB, at most 64
# In-process blocks: the writer thread starts on a block as soon as it is rendered, and the
# last block's write is the part that cannot overlap with rendering, so keep blocks small.
_INLINE_BLOCK_BYTES = 4 * 2**20
_COPY_ROWS = 16  # rows per block when a resume copies a partial file
_BEHIND = 2  # blocks waiting for the writer thread
#: How local workers hand encoded blocks back: ``"slot"`` (through a mapped scratch file,
#: :mod:`gptextures.io.slots`) or ``"chunks"`` (pickled through the pool's pipes); the io
#: benchmark times both in the same run.
POOL_TRANSPORT = "slot"


def block_size(spec: DatasetSpec, remaining: int, workers: int) -> int:
    """Images per work unit: ~16 MiB, at most 64, small enough to keep every worker busy."""
    h, w = spec.texture.size
    size = max(1, min(64, _BLOCK_BYTES // (h * w * 4)))
    return max(1, min(size, -(-remaining // (4 * workers)) if remaining else 1))


@dataclass
class _SplitState:
    """A writer's open handles and progress for one split."""

    images: h5py.Dataset
    counter: h5py.h5a.AttrID  # the group's ``written`` attribute
    lo: int
    hi: int
    written: int
    compressed: bool


class HDF5Writer(FormatWriter):
    """Append-only writer of one HDF5 file (or one shard of it), resumable.

    Use :meth:`open`; then :meth:`write` blocks of consecutive samples in index order per split,
    and :meth:`finish`. Any exception leaves ``<path>.partial`` with every block written before
    it intact, and a later :meth:`open` of the same spec resumes after the last block.

    Datasets have their final length from the start, and the label, level and seed columns
    are written when the file is created; :meth:`write` adds image chunks and then moves the
    split's ``written`` counter, so the file's bytes do not depend on how samples are grouped
    into blocks. One thread at a time may use a writer (any thread).
    """

    def __init__(self, path: Path, spec: DatasetSpec, h5: h5py.File, resumed: dict[str, int],
                 columns: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 compression: str | None):
        self.path = path
        self.spec = spec
        self.compression = compression
        self._h5 = h5
        self.resumed = resumed
        self._columns = dict(columns)  # split -> (labels, seeds) of the file's rows
        self._splits: dict[str, _SplitState] = {}  # open handles, written counts
        self._behind: WriteBehind | None = None
        self._slots: BlockSlots | None = None
        self._slot_plan = (0, 0)  # (slots, bytes per slot) of slot-mode tasks
        self._written = 0
        self._locked = True  # open() took the output's lock; finish() or close() release it

    # ---- opening ----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        spec: DatasetSpec,
        *,
        splits: Sequence[str] | None = None,
        shard: tuple[int, int] = (0, 1),
        compression: str | None = None,
        overwrite: bool = False,
    ) -> HDF5Writer:
        """Create ``<path>.partial`` or resume it.

        Args:
            path: final file path (``.h5``).
            spec: the dataset.
            splits: splits to write (default: all of the spec's).
            shard: ``(i, n)``: this file holds the ``i``-th contiguous part of every split.
            compression: ``None`` (default), ``"gzip"`` (with shuffle) or ``"lzf"``.
            overwrite: replace a complete ``path`` (only once the new file is complete) and
                discard a partial one instead of resuming it.
        Raises:
            FileExistsError: ``path`` is complete and ``overwrite`` is false, or a partial file
                of another spec or layout is in the way.
            OutputBusyError: another process is writing ``path``.
        """
        path = Path(path)
        compression = check_compression(compression)
        splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
        check_target(path, spec, "hdf5", overwrite)
        ensure_writable_dir(path.parent)
        _lock.acquire(path)
        try:
            ranges = {s: shard_range(spec.num_samples(s), shard) for s in splits}
            partial = partial_path(path)
            layout = {"splits": ranges, "shard": list(shard), "compression": compression}
            Path(str(partial) + SLOTS_SUFFIX).unlink(missing_ok=True)  # a killed run's scratch
            old = _open_partial(partial) if partial.exists() and not overwrite else None
            if old is not None:
                try:
                    counts = _check_resumable(old, spec, layout, partial)
                    return cls._rebuild(path, spec, old, counts, ranges, shard, compression)
                finally:
                    old.close()
            partial.unlink(missing_ok=True)
            h5, columns = _create_file(partial, spec, ranges, shard, compression)
            return cls(path, spec, h5, {s: 0 for s in splits}, columns, compression)
        except BaseException:
            _lock.release(path)
            raise

    @classmethod
    def _rebuild(cls, path: Path, spec: DatasetSpec, old: h5py.File, counts: dict[str, int],
                 ranges: Mapping[str, tuple[int, int]], shard: tuple[int, int],
                 compression: str | None) -> HDF5Writer:
        """Resume: copy the image rows an interrupted run wrote into a fresh file, in the order
        an uninterrupted run writes them, so that the finished file is byte-identical to one
        written in a single session. Stored chunks are copied, not regenerated; a row whose
        checksum fails (or any later row) is dropped and generated again. Labels and seeds
        come from the spec, as in any new file."""
        partial = partial_path(path)
        tmp = Path(str(partial) + ".rebuild")
        h5, columns = _create_file(tmp, spec, ranges, shard, compression)
        writer = cls(path, spec, h5, {}, columns, compression)
        try:
            for s in ranges:
                g = old[s]
                lo = int(g.attrs["start"])
                good = 0
                while good < counts[s]:
                    rows = read_stored_chunks(g, good, min(counts[s], good + _COPY_ROWS))
                    if rows is not None:
                        k = len(rows)
                        writer.write(s, lo + good, rows)
                        good += k
                    if rows is None or k < _COPY_ROWS:
                        break
                writer.resumed[s] = good
        except BaseException:
            writer._h5.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, partial)  # the open handle follows the file
        return writer

    # ---- state ------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return list(self._columns)

    @property
    def counts(self) -> dict[str, int]:  # type: ignore[override]
        return {s: self.range(s)[1] - self.range(s)[0] for s in self.splits}

    def range(self, split: str) -> tuple[int, int]:
        """``(start, stop)``: global indices of ``split`` held by this file."""
        st = self._state(split)
        return st.lo, st.hi

    def written(self, split: str) -> int:
        """Rows of ``split`` written so far."""
        return self._state(split).written

    def next_index(self, split: str) -> int:
        """Global index of the next sample to write in ``split``."""
        return self.range(split)[0] + self.written(split)

    def _state(self, split: str) -> _SplitState:
        st = self._splits.get(split)
        if st is None:
            if split not in self._columns:
                raise ValueError(f"split: {split!r} is not in this file; it has {self.splits}")
            g = self._h5[split]
            st = self._splits[split] = _SplitState(
                images=g["images"], counter=h5py.h5a.open(g.id, b"written"),
                lo=int(g.attrs["start"]), hi=int(g.attrs["stop"]),
                written=int(g.attrs["written"]), compressed=g["images"].compression is not None)
        return st

    # ---- writing ----------------------------------------------------------------------
    def write(self, split: str, start: int, images: np.ndarray | EncodedChunks,
              labels: Any = None, seeds: Any = None) -> None:
        """Write samples ``start .. start + len(images) - 1`` of ``split`` (the next ones).

        The image chunks go to the file, which is flushed, then the split's ``written``
        counter moves and is flushed: the counter never covers data that is not in the file.

        Args:
            images: float32 ``(k, H, W)``, or :class:`EncodedChunks` (uncompressed files only).
            labels, seeds: int ``(k,)``, optional: checked to be the spec's for these indices
                (the file already holds them).
        Raises:
            ValueError: out of order, out of range, wrong shape or dtype, or labels/seeds that
                are not the spec's for these indices.
        """
        st = self._state(split)
        lo, hi, w = st.lo, st.hi, st.written
        k = len(images)
        if start != lo + w:
            raise ValueError(
                f"start: blocks must be written in order; expected index {lo + w}, got {start}"
            )
        if start + k > hi:
            raise ValueError(
                f"images: {k} rows from {start} overflow this file's range [{lo}, {hi})"
            )
        h, wd = self.spec.texture.size
        if isinstance(images, EncodedChunks):
            if st.compressed:
                raise ValueError("images: encoded chunks need an uncompressed file")
            bad = [len(c) for c in images.chunks if len(c) != h * wd * 4 + 4]
            if bad:
                raise ValueError(f"images: encoded chunks must be {h * wd * 4 + 4} bytes,"
                                 f" got {bad[0]}")
        else:
            images = np.asarray(images)
            if images.shape != (k, h, wd) or images.dtype != np.float32:
                raise ValueError(
                    f"images: expected float32 ({k}, {h}, {wd}), got {images.dtype}"
                    f" {images.shape}"
                )
        want_labels, want_seeds = self._columns[split]
        for name, given, want in (("labels", labels, want_labels[w:w + k]),
                                  ("seeds", seeds, want_seeds[w:w + k])):
            if given is None:
                continue
            given = np.asarray(given)
            if given.shape != (k,) or not np.array_equal(given, want):
                raise ValueError(
                    f"{name}: samples {start}..{start + k - 1} of split {split!r} have {name}"
                    f" {want.tolist()[:8]}{'...' if k > 8 else ''} (from the spec), got"
                    f" {given.tolist()[:8] if given.ndim == 1 else given.shape}"
                )
        ds = st.images
        if st.compressed:
            for j in range(k):
                ds[w + j] = images[j]  # the file has no chunk cache: written now, in order
        else:
            chunks = images if isinstance(images, EncodedChunks) else encode_chunks(images)
            for j, chunk in enumerate(chunks.chunks):
                ds.id.write_direct_chunk((w + j, 0, 0), chunk, 0)
        self._h5.flush()  # the data reach the file before the counter moves
        st.counter.write(np.array(w + k, dtype=np.int64))  # in place: no object-header churn
        st.written = w + k
        self._h5.flush()

    # ---- generation (FormatWriter) ------------------------------------------------------
    def tasks(self, executor: str, workers: int) -> list[Task]:
        """Blocks of the remaining samples, in index order. In-process they come back as
        images (a writer thread encodes and writes them while the next block renders);
        local worker processes encode them and hand them over through a :class:`BlockSlots`
        file; threads (:meth:`threaded`) and Dask workers return encoded chunks (images, for
        compressed files)."""
        spec_json = self.spec.to_json(indent=None)
        todo = {s: (self.next_index(s), self.range(s)[1]) for s in self.splits}
        remaining = sum(b - a for a, b in todo.values())
        bs = block_size(self.spec, remaining, workers)
        h, w = self.spec.texture.size
        if executor == "inline":
            bs = max(1, min(bs, _INLINE_BLOCK_BYTES // (h * w * 4)))
            mode = "images"
        elif self.compression is not None:
            mode = "images"
        else:
            mode = POOL_TRANSPORT if executor == "pool" else "chunks"
        # Slots in use at once: the tasks in flight (2 per worker), those waiting for the
        # writer thread, the one it writes and the one just returned.
        self._slot_plan = (2 * workers + _BEHIND + 2, bs * (h * w * 4 + 4))
        return [Task(_blocks.render_block, (spec_json, s, a, min(a + bs, b), mode, None),
                     min(a + bs, b) - a) for s, (a, b) in todo.items() for a in range(a, b, bs)]

    def threaded(self, task: Task) -> Task:
        """A block rendered by a thread of this process comes back encoded, its checksums
        computed by that thread (no scratch file: the writer thread only stores it)."""
        if task.args[4] != POOL_TRANSPORT:
            return task
        return dataclasses.replace(task, args=(*task.args[:4], "chunks", None))

    def prepare(self, task: Task) -> Task:
        """The task as submitted: slot-mode blocks get a free slot (waits for one)."""
        if task.args[4] != "slot":
            return task
        if self._slots is None:
            self._slots = BlockSlots(str(partial_path(self.path)) + SLOTS_SUFFIX,
                                     *self._slot_plan)
        slot = self._slots.acquire()
        return dataclasses.replace(task, args=(*task.args[:5], (*self._slots.where(slot), slot)))

    def accept(self, task: Task, result: Any) -> None:
        """Queue a block for the writer thread (at most two wait; then this blocks)."""
        if self._behind is None:
            self._behind = WriteBehind(self._write_result, depth=_BEHIND, name="hdf5-writer")
        slot = task.args[5][3] if task.args[4] == "slot" else None
        self._behind.put((task.args[1], task.args[2], result, slot))

    def _write_result(self, split: str, start: int, result: Any, slot: int | None) -> None:
        if slot is None:
            self.write(split, start, result)
        else:
            try:
                self.write(split, start, EncodedChunks(self._slots.views(slot, result)))
            finally:
                self._slots.release(slot)
        self._written += len(result)

    @property
    def samples_written(self) -> int:
        return self._written

    def finish(self) -> Path:
        """Write what is queued, check every split is full, mark the file complete and rename
        it to its final path."""
        self._stop_behind(abort=False)
        for s in self.splits:
            lo, hi = self.range(s)
            if self.written(s) != hi - lo:
                raise ValueError(f"split {s!r}: {self.written(s)} of {hi - lo} samples"
                                 " written; cannot finish")
        self._h5.attrs["complete"] = True
        self._h5.flush()
        self._h5.close()
        os.replace(partial_path(self.path), self.path)
        self._unlock()
        return self.path

    def _stop_behind(self, abort: bool) -> None:
        behind, self._behind = self._behind, None
        try:
            if behind is not None:
                behind.close(abort=abort)
        finally:
            if self._slots is not None:
                self._slots.close()
                self._slots = None

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            _lock.release(self.path)

    def close(self) -> None:
        """Stop without finishing: blocks already written stay, the partial file resumes."""
        try:
            self._stop_behind(abort=True)
        finally:
            try:
                if self._h5.id.valid:
                    try:
                        self._h5.flush()
                    finally:
                        self._h5.close()
            finally:
                self._unlock()

    def __enter__(self) -> HDF5Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_file(p: Path, spec: DatasetSpec, ranges: Mapping[str, tuple[int, int]],
                 shard: tuple[int, int], compression: str | None
                 ) -> tuple[h5py.File, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Create a file with its whole layout and columns; returns it and split -> (labels, seeds).

    No chunk cache: a chunk is written to the file when it is written, not when a flush or an
    eviction happens, so where chunks land does not depend on when the writer flushes.
    """
    h5 = h5py.File(p, "w", track_order=True, rdcc_nbytes=0)
    try:
        columns = _create_layout(h5, spec, ranges, shard, compression)
        h5.flush()
    except BaseException:
        h5.close()
        p.unlink(missing_ok=True)
        raise
    return h5, columns


_TRUNCATED = re.compile(r"truncated file: eof = (\d+), sblock->base_addr = (\d+),"
                        r" stored_eof = (\d+)")


def _open_partial(partial: Path) -> h5py.File | None:
    """Open a partial file to resume from; ``None`` when it is unreadable (killed mid-flush).

    A write that failed for lack of space (``ENOSPC``, ``EFBIG``) leaves a file shorter than
    the end HDF5 recorded when it closed it, which HDF5 then refuses to open ("truncated
    file"). Every block counted by ``written`` lies before that end, so the file is extended
    (with zeros, sparse) to the recorded end and opened again; the resume checks each row's
    checksum as it copies it.

    Raises:
        OutputBusyError: another process has it open for writing (HDF5's own file lock):
            it is never deleted then.
    """
    for attempt in range(2):
        try:
            h5 = h5py.File(partial, "r")
            break
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or \
                    "unable to lock file" in str(exc):
                raise _lock.OutputBusyError(
                    errno.EWOULDBLOCK, f"out: {str(partial)!r} is open for writing in another"
                    " process (HDF5 file lock); stop it, then rerun") from None
            m = _TRUNCATED.search(str(exc))
            if attempt or m is None or int(m[2]) + int(m[3]) <= int(m[1]):
                return None
            os.truncate(partial, int(m[2]) + int(m[3]))
    try:
        for key in ("fingerprint", "spec_json"):
            h5.attrs[key]
    except Exception:
        h5.close()
        return None
    return h5


def _check_resumable(h5: h5py.File, spec: DatasetSpec, layout: dict[str, Any],
                     partial: Path) -> dict[str, int]:
    fp = str(h5.attrs["fingerprint"])
    if fp != spec.fingerprint:
        raise FileExistsError(
            f"out: {str(partial)!r} is an unfinished file of another spec (fingerprint {fp[:12]},"
            f" this spec {spec.fingerprint[:12]}); pass overwrite=True (--overwrite) to discard it"
        )
    stored = json.loads(str(h5.attrs["layout"]))
    want = json.loads(json.dumps(layout))
    if stored != want:
        raise FileExistsError(
            f"out: {str(partial)!r} was started with another layout ({stored}); this run asks for"
            f" {want}; pass overwrite=True (--overwrite) to discard it"
        )
    resumed = {}
    for s in layout["splits"]:
        g = h5.get(s)
        if not isinstance(g, h5py.Group) or "written" not in g.attrs:
            raise FileExistsError(f"out: {str(partial)!r} lacks split {s!r}; pass overwrite=True"
                                  " (--overwrite) to discard it")
        # A row past the counter (the image being written when the run died) is not trusted:
        # it is written again, with the same bytes, in the same place.
        resumed[s] = int(g.attrs["written"])
    return resumed


def _create_layout(h5: h5py.File, spec: DatasetSpec, ranges: Mapping[str, tuple[int, int]],
                   shard: tuple[int, int], compression: str | None
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    for k, v in provenance(spec).items():
        h5.attrs[k] = v
    h5.attrs["complete"] = False
    h5.attrs["shard_index"] = shard[0]
    h5.attrs["shard_count"] = shard[1]
    h5.attrs["compression"] = "none" if compression is None else compression
    h5.attrs["layout"] = json.dumps(
        {"splits": {s: list(r) for s, r in ranges.items()}, "shard": list(shard),
         "compression": compression}
    )
    h, w = spec.texture.size
    comp: dict[str, Any] = {}
    if compression == "gzip":
        comp = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    elif compression == "lzf":
        comp = {"compression": "lzf", "shuffle": True}
    columns = {}
    for s, (lo, hi) in ranges.items():
        g = h5.create_group(s, track_order=True)
        g.attrs["start"] = lo
        g.attrs["stop"] = hi
        g.attrs["num_samples"] = hi - lo
        g.attrs["written"] = 0
        n = hi - lo
        g.create_dataset("images", shape=(n, h, w), maxshape=(None, h, w), dtype=np.float32,
                         chunks=(1, h, w), fletcher32=True, track_times=False, **comp)
        labels, seeds = spec.labels(s, lo, hi), spec.seeds(s, lo, hi)
        columns[s] = (labels, seeds)
        _column(g, "label", labels)
        _column(g, "seed", seeds)
        lv = g.create_group("levels", track_order=True)
        levels = spec.level_labels(s, lo, hi)
        for d, name in enumerate(spec.texture.level_names):
            _column(lv, name, levels[:, d])
    return columns


def _column(parent: h5py.Group, name: str, data: np.ndarray) -> None:
    """A complete int64 ``(n,)`` column (resizable, chunked, fletcher32)."""
    n = len(data)
    d = parent.create_dataset(name, shape=(n,), maxshape=(None,), dtype=np.int64,
                              chunks=(min(LABEL_CHUNK, max(1, n)),), fletcher32=True,
                              track_times=False)
    if n:
        d[:] = data
