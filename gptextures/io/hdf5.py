"""HDF5 files: a streaming, chunked, checksummed, resumable writer; a reader; verify; merge.

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
from the ``written`` counters of the partial file.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import labels as _labels
from ..spec import DatasetSpec
from .meta import (
    PARTIAL_SUFFIX,
    CorruptDataError,
    FingerprintMismatchError,
    FormatError,
    ensure_writable_dir,
    provenance,
    spec_from_provenance,
)

COMPRESSIONS: tuple[str | None, ...] = (None, "gzip", "lzf")
_LABEL_CHUNK = 4096
_CHUNK_CACHE_BYTES = 16 * 2**20  # a few images: each is read once, whole


def default_path(out_dir: str | os.PathLike[str], spec: DatasetSpec,
                 shard: tuple[int, int] | None = None) -> Path:
    """``out_dir/<name>.h5``, or ``out_dir/<name>.shard-IIIII-of-NNNNN.h5`` for a shard."""
    if shard is None or shard[1] == 1:
        return Path(out_dir) / f"{spec.name}.h5"
    i, n = shard
    return Path(out_dir) / f"{spec.name}.shard-{i:05d}-of-{n:05d}.h5"


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where a writer keeps an unfinished file: ``<path>.partial``."""
    return Path(str(path) + PARTIAL_SUFFIX)


def shard_range(n: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Contiguous index range ``[start, stop)`` of shard ``i`` of ``k`` over ``n`` items."""
    i, k = shard
    return (n * i) // k, (n * (i + 1)) // k


def _check_compression(compression: str | None) -> str | None:
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"compression: unknown HDF5 compression {compression!r}; allowed: "
            f"{', '.join(str(c) for c in COMPRESSIONS)}"
        )
    return compression


@dataclass(frozen=True)
class EncodedChunks:
    """Images already encoded as stored chunks (raw little-endian float32 + fletcher32).

    Made by :func:`encode_chunks` in worker processes so that the process writing the file only
    copies bytes (``write_direct_chunk``) instead of running HDF5's checksum filter.
    """

    chunks: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.chunks)


_M = 65535


def fletcher32(data: bytes | np.ndarray) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (even length): 16-bit big-endian words, sums
    reduced with end-around carry, ``(sum2 << 16) | sum1``; equal to ``H5_checksum_fletcher32``.

    ``sum2 = sum_i (n - i) w_i`` is computed blockwise from row and column sums of the words laid
    out as a ``(B, L)`` matrix (``sum2 = sum_b (n - b L) R_b - sum_l l C_l``): two native
    uint32 reductions instead of a 64-bit dot product, ~4x faster on 4 MiB chunks. The words
    are read little-endian, without a byte-swapped copy: the big-endian word of bytes
    ``(a, b)`` is ``256 a + b``, congruent modulo 65535 to ``256 (a + 256 b)`` (as
    ``2**16 = 1 mod 65535``), so both sums are the little-endian ones times 256. The weights
    are cached per size, so a chunk costs the two reductions and three small numpy calls: in
    a writer thread, each numpy call is a chance to wait for the GIL.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buf = buf.reshape(-1).view(np.uint8)
    if buf.size % 2:
        raise ValueError(f"data: expected an even number of bytes, got {buf.size}")
    words = buf.view("<u2")
    n = words.size
    # Row sums of L words and column sums of B rows must fit in uint32: L, B < 65537.
    width = max(1024, -(-n // 65536))
    main = n - n % width
    s1 = s2 = 0
    if main:
        blocks = words[:main].reshape(-1, width)
        row_weights, col_weights = _fletcher_weights(n, width, main // width)
        rows = blocks.sum(axis=1, dtype=np.uint32)
        cols = blocks.sum(axis=0, dtype=np.uint32)
        # Exact integers: the dots stay below 2**63 for any chunk under 4 GiB (n < 2**31).
        s1 += int(rows.sum(dtype=np.uint64))
        s2 += int(np.dot(rows, row_weights)) - int(np.dot(cols, col_weights))
    if main < n:
        tail = words[main:].astype(np.uint64)
        s1 += int(tail.sum())
        s2 += int(np.dot(tail, (np.uint64(n) - np.arange(main, n, dtype=np.uint64)) % _M))
    if s1 == 0:  # the exact sum of the words: 0 only for all-zero data, where HDF5 gives 0
        return 0
    s1, s2 = 256 * s1 % _M, 256 * s2 % _M
    return ((s2 or _M) << 16) | (s1 or _M)


@functools.lru_cache(maxsize=8)
def _fletcher_weights(n: int, width: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the row sums (``(n - b L) mod 65535``) and column sums (``l``), uint64."""
    b = np.arange(rows, dtype=np.uint64)
    row_w = (np.uint64(n) - b * np.uint64(width)) % np.uint64(_M)
    col_w = np.arange(width, dtype=np.uint64)
    row_w.flags.writeable = col_w.flags.writeable = False
    return row_w, col_w


def encode_chunks(images: np.ndarray) -> EncodedChunks:
    """Encode float32 ``(k, H, W)`` images as uncompressed fletcher32 chunks (one per image)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.float32:
        raise ValueError(f"images: expected float32 (k, H, W), got {images.dtype} {images.shape}")
    out = []
    for im in images:
        im = np.ascontiguousarray(im, dtype="<f4")
        out.append(b"".join((im.data, fletcher32(im).to_bytes(4, "little"))))
    return EncodedChunks(tuple(out))


# ---- GIL-free HDF5 calls --------------------------------------------------------------------
# h5py holds the GIL for the whole of every HDF5 call (``write_direct_chunk`` of a 4 MiB chunk:
# ~1 ms), so a writer thread would stop rendering for as long. The few calls the writer makes
# per block (H5Dwrite_chunk, H5Fflush, H5Awrite of the counter) are made here through ctypes,
# which releases the GIL during the call. It must be the very libhdf5 that h5py loaded (h5py's
# identifiers are only valid there): it is found in /proc/self/maps, and checked to have h5py's
# version and to share h5py's identifier table. Each call holds ``h5py._objects.phil``, h5py's
# global lock (a private h5py API), so no other HDF5 call runs concurrently: the HDF5 bundled
# with h5py is not thread-safe. Anything unexpected (not Linux, no unique ``libhdf5*.so`` in
# the process, another version, a missing symbol) falls back to h5py's own calls, which write
# the same bytes while holding the GIL.

#: Private switch: ``False`` forces h5py's own calls (tests compare both paths).
_GIL_FREE = True
_HDF5_LIB_NAME = re.compile(r"^libhdf5(?:-[0-9a-f]+)?\.so(?:\.\d+)*$")


@dataclass(frozen=True)
class _Lib:
    """ctypes functions of h5py's libhdf5 (see above)."""

    write_chunk: Callable[..., int]  # H5Dwrite_chunk(dset, dxpl, filters, offset*, size, buf*)
    flush: Callable[..., int]  # H5Fflush(object, scope)
    awrite: Callable[..., int]  # H5Awrite(attr, mem_type, buf*)
    phil: Any  # h5py's global lock, held around every call


_resolved: list[_Lib | None] = []  # [] until resolved once; then [lib or None]


def _find_libhdf5() -> str | None:
    """Path of the one ``libhdf5`` shared library mapped into this process (h5py's), or None."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as fh:
        paths = {line.split(None, 5)[-1].strip() for line in fh if "libhdf5" in line}
    found = sorted(q for q in paths if q.startswith("/") and
                   _HDF5_LIB_NAME.match(os.path.basename(q)))
    if len(found) > 1:  # several copies loaded (another package bundles one): take h5py's own
        root = os.path.dirname(os.path.dirname(os.path.realpath(h5py.__file__)))
        found = [q for q in found if os.path.realpath(q).startswith(root + os.sep)
                 and "h5py" in q]
    return found[0] if len(found) == 1 else None


def _resolve_lib() -> _Lib | None:
    """h5py's libhdf5 through ctypes (calls release the GIL), or None."""
    try:
        from h5py._objects import phil

        path = _find_libhdf5()
        if path is None:
            return None
        lib = ctypes.CDLL(path)  # already loaded: dlopen returns h5py's instance
        version = (ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint())
        lib.H5get_libversion.restype = ctypes.c_int
        if lib.H5get_libversion(*(ctypes.byref(v) for v in version)) < 0:
            return None
        if tuple(v.value for v in version) != tuple(h5py.version.hdf5_version_tuple[:3]):
            return None
        hid, i32 = ctypes.c_int64, ctypes.c_int  # hid_t (HDF5 >= 1.10), herr_t / enums
        for name in ("H5Iinc_ref", "H5Idec_ref"):
            getattr(lib, name).argtypes = [hid]
            getattr(lib, name).restype = i32
        # The same identifier table as h5py: a reference taken here shows in h5py's count.
        plist = h5py.h5p.create(h5py.h5p.DATASET_XFER)
        with phil:
            before = h5py.h5i.get_ref(plist)
            if lib.H5Iinc_ref(plist.id) < 0:
                return None
            same = h5py.h5i.get_ref(plist) == before + 1
            lib.H5Idec_ref(plist.id)
        if not same:
            return None
        fns = lib.H5Dwrite_chunk, lib.H5Fflush, lib.H5Awrite
        fns[0].argtypes = [hid, hid, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64),
                           ctypes.c_size_t, ctypes.c_void_p]
        fns[1].argtypes = [hid, i32]
        fns[2].argtypes = [hid, hid, ctypes.c_void_p]
        for fn in fns:
            fn.restype = i32
        return _Lib(*fns, phil=phil)
    except Exception:  # noqa: BLE001 - any surprise: use h5py's own calls
        return None


def _lib() -> _Lib | None:
    """The GIL-free calls, or None (switched off, or unavailable: use h5py)."""
    if not _GIL_FREE:
        return None
    if not _resolved:
        _resolved.append(_resolve_lib())
    return _resolved[0]


def gil_free_writes() -> bool:
    """Whether the writer's HDF5 calls release the GIL (ctypes; else h5py's calls)."""
    return _lib() is not None


def _write_chunk(ds: h5py.Dataset, row: int, chunk: bytes | np.ndarray) -> None:
    """Store ``chunk`` (the bytes HDF5 keeps: data + fletcher32, no other filter) as the chunk
    of row ``row`` of a dataset with one row per chunk; GIL-free when possible."""
    lib = _lib()
    offset = (row,) + (0,) * (ds.ndim - 1)
    if lib is not None:
        buf = np.frombuffer(chunk, dtype=np.uint8)  # no copy; keeps the buffer alive
        off = (ctypes.c_uint64 * ds.ndim)(*offset)
        with lib.phil:  # no other HDF5 call meanwhile; ctypes releases the GIL for the call
            if lib.write_chunk(ds.id.id, 0, 0, off, buf.nbytes, buf.ctypes.data) >= 0:
                return  # (0: H5P_DEFAULT, no filter skipped)
    # h5py's call; after a failed ctypes call it writes the same bytes again and raises with
    # HDF5's error stack
    ds.id.write_direct_chunk(offset, chunk, 0)


def _flush(h5: h5py.File) -> None:
    """``h5.flush()`` (H5Fflush, local scope), GIL-free when possible."""
    lib = _lib()
    if lib is not None:
        with lib.phil:
            if lib.flush(h5.id.id, h5py.h5f.SCOPE_LOCAL) >= 0:
                return
    h5.flush()


def _write_int64_attr(attr: h5py.h5a.AttrID, value: int) -> None:
    """Write an existing scalar int64 attribute in place, GIL-free when possible."""
    buf = np.array(value, dtype=np.int64)
    lib = _lib()
    if lib is not None:
        with lib.phil:
            if lib.awrite(attr.id, h5py.h5t.NATIVE_INT64.id, buf.ctypes.data) >= 0:
                return
    attr.write(buf)


class HDF5Writer:
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
                 columns: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        self.path = path
        self.spec = spec
        self._h5 = h5
        self.resumed = resumed
        self._columns = dict(columns)  # split -> (labels, seeds) of the file's rows
        self._buf: np.ndarray | None = None  # one encoded chunk, reused
        self._splits: dict[str, _SplitState] = {}  # open handles, written counts

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
        """
        path = Path(path)
        compression = _check_compression(compression)
        splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"out: {str(path)!r} already exists (a complete dataset); pass overwrite=True"
                " (--overwrite) to replace it"
            )
        ensure_writable_dir(path.parent)
        ranges = {s: shard_range(spec.num_samples(s), shard) for s in splits}
        partial = partial_path(path)
        layout = {"splits": ranges, "shard": list(shard), "compression": compression}
        old = _try_open_partial(partial) if partial.exists() and not overwrite else None
        if old is not None:
            try:
                counts = _check_resumable(old, spec, layout, partial)
                return cls._rebuild(path, spec, old, counts, ranges, shard, compression)
            finally:
                old.close()
        if partial.exists():
            partial.unlink()
        h5, columns = _create_file(partial, spec, ranges, shard, compression)
        return cls(path, spec, h5, {s: 0 for s in splits}, columns)

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
        writer = cls(path, spec, h5, {}, columns)
        try:
            for s in ranges:
                g = old[s]
                lo = int(g.attrs["start"])
                labels, seeds = columns[s]
                good = 0
                while good < counts[s]:
                    rows = _read_rows(g, good, min(counts[s], good + _COPY_ROWS))
                    if rows is not None:
                        k = len(rows)
                        writer.write(s, lo + good, rows, labels[good:good + k],
                                     seeds[good:good + k])
                        good += k
                    if rows is None or k < _COPY_ROWS:
                        break
                writer.resumed[s] = good
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, partial)  # the open handle follows the file
        return writer

    # ---- state ------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return [s for s in self._h5 if isinstance(self._h5[s], h5py.Group)]

    def range(self, split: str) -> tuple[int, int]:
        """``(start, stop)``: global indices of ``split`` held by this file."""
        st = self._state(split)
        return st.lo, st.hi

    def written(self, split: str) -> int:
        """Rows of ``split`` written so far."""
        return self._state(split).written

    def _state(self, split: str) -> _SplitState:
        st = self._splits.get(split)
        if st is None:
            g = self._group(split)
            st = self._splits[split] = _SplitState(
                group=g, images=g["images"], counter=h5py.h5a.open(g.id, b"written"),
                lo=int(g.attrs["start"]), hi=int(g.attrs["stop"]),
                written=int(g.attrs["written"]), compressed=g["images"].compression is not None)
        return st

    def next_index(self, split: str) -> int:
        """Global index of the next sample to write in ``split``."""
        return self.range(split)[0] + self.written(split)

    def _group(self, split: str) -> h5py.Group:
        if split not in self._h5:
            raise ValueError(f"split: {split!r} is not in this file; it has {self.splits}")
        return self._h5[split]

    # ---- writing ----------------------------------------------------------------------
    def write(self, split: str, start: int, images: np.ndarray | EncodedChunks,
              labels: np.ndarray, seeds: np.ndarray) -> None:
        """Write samples ``start .. start + len(images) - 1`` of ``split`` (the next ones).

        The image chunks go to the file, which is flushed, then the split's ``written``
        counter moves and is flushed: the counter never covers data that is not in the file.

        Args:
            images: float32 ``(k, H, W)``, or :class:`EncodedChunks` (uncompressed files only).
            labels: int ``(k,)`` class indices; must be those the file holds (the spec's).
            seeds: int ``(k,)`` per-sample seeds; must be those the file holds (the spec's).
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
        ds, compressed = st.images, st.compressed
        encoded = isinstance(images, EncodedChunks)
        if encoded:
            if compressed:
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
            given = np.asarray(given)
            if given.shape != (k,) or not np.array_equal(given, want):
                raise ValueError(
                    f"{name}: samples {start}..{start + k - 1} of split {split!r} have {name}"
                    f" {want.tolist()[:8]}{'...' if k > 8 else ''} (from the spec), got"
                    f" {given.tolist()[:8] if given.ndim == 1 else given.shape}"
                )
        for j in range(k):
            if encoded:
                _write_chunk(ds, w + j, images.chunks[j])
            elif compressed:
                ds[w + j] = images[j]  # the file has no chunk cache: written now, in order
            else:
                _write_chunk(ds, w + j, self._encode(images[j]))
        _flush(self._h5)  # the data reach the file before the counter moves
        _write_int64_attr(st.counter, w + k)  # in place: no object-header churn
        st.written = w + k
        _flush(self._h5)

    def _encode(self, image: np.ndarray) -> np.ndarray:
        """``image`` as its stored chunk (little-endian float32 + fletcher32) in a reused
        buffer; numpy releases the GIL for the copy and most of the checksum."""
        n = image.size * 4
        if self._buf is None or self._buf.size != n + 4:
            self._buf = np.empty(n + 4, dtype=np.uint8)
        buf = self._buf
        data = buf[:n].view("<f4").reshape(image.shape)
        np.copyto(data, image)
        buf[n:] = np.frombuffer(fletcher32(buf[:n]).to_bytes(4, "little"), dtype=np.uint8)
        return buf

    def finish(self) -> Path:
        """Check every split is full, mark the file complete and rename it to its final path."""
        for s in self.splits:
            lo, hi = self.range(s)
            if self.written(s) != hi - lo:
                raise ValueError(
                    f"split {s!r}: {self.written(s)} of {hi - lo} samples written; cannot finish"
                )
        self._h5.attrs["complete"] = True
        self._h5.flush()
        self._h5.close()
        os.replace(partial_path(self.path), self.path)
        return self.path

    def close(self) -> None:
        """Close without finishing (the partial file stays, resumable)."""
        if self._h5.id.valid:
            self._h5.flush()
            self._h5.close()

    def __enter__(self) -> HDF5Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _SplitState:
    """A writer's open handles and progress for one split."""

    group: h5py.Group
    images: h5py.Dataset
    counter: h5py.h5a.AttrID  # the group's ``written`` attribute
    lo: int
    hi: int
    written: int
    compressed: bool


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


_COPY_ROWS = 16  # rows per block when a resume copies a partial file


def _read_rows(g: h5py.Group, a: int, b: int) -> EncodedChunks | np.ndarray | None:
    """Image rows ``a:b`` of a split group as :meth:`HDF5Writer.write` takes them, stopping
    before the first row that fails its checksum; ``None`` when row ``a`` does."""
    ds = g["images"]
    try:
        if ds.compression is not None:
            out = []
            for i in range(a, b):
                try:
                    out.append(ds[i])
                except (OSError, ValueError):
                    break
            return np.stack(out) if out else None
        chunks = []
        for i in range(a, b):
            try:
                _, chunk = ds.id.read_direct_chunk((i, 0, 0))
            except (OSError, ValueError):
                break
            if fletcher32(chunk[:-4]) != int.from_bytes(chunk[-4:], "little"):
                break
            chunks.append(bytes(chunk))
        return EncodedChunks(tuple(chunks)) if chunks else None
    except (OSError, ValueError, KeyError):
        return None


def _merge_rows(d: HDF5Dataset, split: str, a: int, b: int, compression: str
                ) -> EncodedChunks | np.ndarray:
    """Rows ``a:b`` of a shard for :func:`merge`: the stored chunks themselves (checksums
    verified, no decode and re-encode) for uncompressed shards; decoded images otherwise, or
    when a chunk fails its checksum (reading it then raises the error that names it)."""
    if compression == "none":
        rows = _read_rows(d._group(split), a, b)
        if rows is not None and len(rows) == b - a:
            return rows
    return d.images(split, a, b)


def _spec_columns(spec: DatasetSpec, split: str, lo: int, hi: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the spec assigns to samples ``lo..hi-1`` of ``split``: class indices ``(k,)``,
    per-level labels ``(k, depth)`` and seeds ``(k,)``, all int64 (``DatasetSpec.label_of``,
    ``labels.decode_array`` and ``DatasetSpec.seed_of``)."""
    labels = np.arange(lo, hi, dtype=np.int64) % spec.num_classes  # = spec.label_of(split, i)
    levels = _labels.decode_array(labels, spec.texture.radices)
    seeds = np.fromiter((spec.seed_of(split, i) for i in range(lo, hi)), dtype=np.int64,
                        count=hi - lo)
    return labels, levels, seeds


def _try_open_partial(partial: Path) -> h5py.File | None:
    """Open a partial file to resume from; ``None`` when it is unreadable (killed mid-flush)."""
    try:
        h5 = h5py.File(partial, "r")
    except OSError:
        return None
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
        w = int(g.attrs["written"])
        # A row past the counter (the image being written when the run died) is not trusted:
        # it is written again, with the same bytes, in the same place.
        resumed[s] = w
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
        labels, levels, seeds = _spec_columns(spec, s, lo, hi)
        columns[s] = (labels, seeds)
        _column(g, "label", labels)
        _column(g, "seed", seeds)
        lv = g.create_group("levels", track_order=True)
        for d, name in enumerate(spec.texture.level_names):
            _column(lv, name, levels[:, d])
    return columns


def _column(parent: h5py.Group, name: str, data: np.ndarray) -> None:
    """A complete int64 ``(n,)`` column (resizable, chunked, fletcher32)."""
    n = len(data)
    d = parent.create_dataset(name, shape=(n,), maxshape=(None,), dtype=np.int64,
                              chunks=(min(_LABEL_CHUNK, max(1, n)),), fletcher32=True,
                              track_times=False)
    if n:
        d[:] = data


# ---- reading ------------------------------------------------------------------------------
class HDF5Dataset:
    """Read access to a gptextures HDF5 file.

    Args:
        path: the ``.h5`` file.
        allow_incomplete: also open an unfinished (``.partial``) file.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_incomplete: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"path: {str(self.path)!r} does not exist")
        try:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
        except OSError as exc:
            raise FormatError(f"path: {str(self.path)!r} is not a readable HDF5 file ({exc})") \
                from None
        try:
            attrs = dict(self._h5.attrs)
            self.spec = spec_from_provenance(attrs, str(self.path))
            self.attrs = attrs
            self.complete = bool(attrs.get("complete", False))
            if not self.complete and not allow_incomplete:
                raise FormatError(
                    f"path: {str(self.path)!r} is an unfinished dataset (complete=False); rerun"
                    " the same `gptextures generate` to resume it"
                )
        except BaseException:
            self._h5.close()
            raise

    @property
    def splits(self) -> list[str]:
        """Splits held by this file."""
        return [s for s in self._h5 if isinstance(self._h5[s], h5py.Group)]

    def _group(self, split: str) -> h5py.Group:
        if split not in self.splits:
            raise ValueError(f"split: {split!r} is not in {str(self.path)!r}; it has {self.splits}")
        return self._h5[split]

    def range(self, split: str) -> tuple[int, int]:
        """``(start, stop)`` global indices of ``split`` held by this file."""
        g = self._group(split)
        return int(g.attrs["start"]), int(g.attrs["stop"])

    def written(self, split: str) -> int:
        return int(self._group(split).attrs["written"])

    def __len__(self) -> int:
        return sum(self.written(s) for s in self.splits)

    def num_samples(self, split: str) -> int:
        """Rows of ``split`` in this file."""
        return self.written(split)

    def image(self, split: str, i: int) -> np.ndarray:
        """Row ``i`` of ``split``: float32 ``(H, W)``; :class:`CorruptDataError` on a bad chunk."""
        g = self._group(split)
        n = self.written(split)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {i!r}")
        if not 0 <= int(i) < n:
            raise IndexError(f"index: must be in [0, {n - 1}] for split {split!r}, got {i}")
        try:
            return g["images"][int(i)]
        except OSError as exc:
            raise CorruptDataError(self._corrupt_msg(split, int(i), "images", exc)) from None

    def images(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of ``split``: float32 ``(k, H, W)``."""
        g = self._group(split)
        n = self.written(split)
        stop = n if stop is None else min(int(stop), n)
        out = np.empty((max(0, stop - start), *self.spec.texture.size), dtype=np.float32)
        for j, i in enumerate(range(start, stop)):
            try:
                g["images"].read_direct(out, np.s_[i], np.s_[j])
            except OSError as exc:
                raise CorruptDataError(self._corrupt_msg(split, i, "images", exc)) from None
        return out

    def _column(self, split: str, name: str) -> np.ndarray:
        g = self._group(split)
        n = self.written(split)
        try:
            return g[name][:n]
        except OSError as exc:
            raise CorruptDataError(self._corrupt_msg(split, None, name, exc)) from None

    def labels(self, split: str) -> np.ndarray:
        """Class indices, int64 ``(n,)``."""
        return self._column(split, "label")

    def level_labels(self, split: str) -> np.ndarray:
        """Per-level labels, int64 ``(n, depth)`` (columns in level order)."""
        cols = [self._column(split, f"levels/{name}") for name in self.spec.texture.level_names]
        return np.stack(cols, axis=1) if cols else np.empty((0, 0), np.int64)

    def seeds(self, split: str) -> np.ndarray:
        """Per-sample seeds, int64 ``(n,)``."""
        return self._column(split, "seed")

    def indices(self, split: str) -> np.ndarray:
        """Global sample indices of the rows, int64 ``(n,)``."""
        lo, _ = self.range(split)
        return np.arange(lo, lo + self.written(split), dtype=np.int64)

    def _corrupt_msg(self, split: str, i: int | None, what: str, exc: Exception) -> str:
        where = f"split {split!r}, index {self.range(split)[0] + i}" if i is not None \
            else f"split {split!r}, dataset {what!r}"
        return (f"{str(self.path)!r}: corrupted data in {where} (checksum/read failure: {exc});"
                " regenerate the file or download it again")

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> HDF5Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """The :class:`DatasetSpec` stored in an HDF5 file (complete or not)."""
    with HDF5Dataset(path, allow_incomplete=True) as ds:
        return ds.spec


# ---- verification -------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """Outcome of :func:`verify`: ``ok`` is true when ``problems`` is empty."""

    path: str
    fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    chunks_checked: int = 0
    regenerated: list[tuple[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
           progress: bool = False) -> VerifyReport:
    """Check an HDF5 file: every chunk's checksum, counts, fingerprint, labels and seeds, and
    regenerate ``samples`` random images from their seeds (``-1``: all) comparing bytes.

    Args:
        path: the ``.h5`` file.
        samples: images to regenerate per split (``-1``: all of them).
        seed: seed of the random choice of images (``None``: fresh).
        progress: show a tqdm bar over chunks.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < -1:
        raise ValueError(f"samples: expected an int >= -1 (-1 = all), got {samples!r}")
    report = VerifyReport(path=str(path))
    with HDF5Dataset(path, allow_incomplete=True) as ds:
        spec = ds.spec
        report.fingerprint = spec.fingerprint
        if not ds.complete:
            report.problems.append("file is not complete (complete=False): an unfinished run")
        rng = np.random.default_rng(seed)
        total = sum(ds.written(s) for s in ds.splits)
        bar = _bar(total, "verify", progress)
        try:
            for s in ds.splits:
                _verify_split(ds, s, spec, rng, samples, report, bar)
        finally:
            if bar is not None:
                bar.close()
        missing = [s for s in spec.splits if s not in ds.splits]
        if missing and int(ds.attrs.get("shard_count", 1)) == 1:
            report.problems.append(f"splits {missing} of the spec are missing from the file")
    return report


def _verify_split(ds: HDF5Dataset, s: str, spec: DatasetSpec, rng: np.random.Generator,
                  samples: int, report: VerifyReport, bar: Any) -> None:
    lo, hi = ds.range(s)
    n = ds.written(s)
    report.counts[s] = n
    if ds.complete and n != hi - lo:
        report.problems.append(f"split {s!r}: {n} samples, expected {hi - lo}")
    if hi > spec.num_samples(s):
        report.problems.append(f"split {s!r}: range [{lo}, {hi}) exceeds the spec's "
                               f"{spec.num_samples(s)} samples")
        return
    bad: set[int] = set()
    for i in range(n):
        try:
            ds.image(s, i)
        except CorruptDataError:
            bad.add(i)
            report.problems.append(f"split {s!r}, index {lo + i}: image chunk fails its checksum")
        report.chunks_checked += 1
        if bar is not None:
            bar.update(1)
    try:
        lab, lev, sd = ds.labels(s), ds.level_labels(s), ds.seeds(s)
    except CorruptDataError as exc:
        report.problems.append(str(exc))
        return
    want_lab, want_lev, want_seed = _spec_columns(spec, s, lo, lo + n)
    for i in np.flatnonzero(lab != want_lab)[:10]:
        report.problems.append(f"split {s!r}, index {lo + i}: label {lab[i]}, expected "
                               f"{want_lab[i]}")
    for i in np.flatnonzero((lev != want_lev).any(axis=1))[:10]:
        report.problems.append(f"split {s!r}, index {lo + i}: level labels {lev[i].tolist()}, "
                               f"expected {want_lev[i].tolist()}")
    for i in np.flatnonzero(sd != want_seed)[:10]:
        report.problems.append(f"split {s!r}, index {lo + i}: seed {sd[i]}, expected "
                               f"{want_seed[i]}")
    candidates = [i for i in range(n) if i not in bad]
    k = len(candidates) if samples == -1 else min(samples, len(candidates))
    chosen = sorted(rng.choice(candidates, size=k, replace=False).tolist()) if k else []
    for i in chosen:
        fresh = spec.sample(s, lo + i).image
        if fresh.tobytes() != ds.image(s, i).tobytes():
            report.problems.append(f"split {s!r}, index {lo + i}: stored image differs from the"
                                   " image regenerated from its seed")
        report.regenerated.append((s, lo + i))


def _bar(total: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img")


# ---- merging ------------------------------------------------------------------------------
def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False, progress: bool = False) -> Path:
    """Join complete shard files ``i/n`` (any order) into one file identical to a
    single-process run (same datasets, same attributes).

    Raises:
        ValueError: shards of different specs, missing or duplicate shards, incomplete shards.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if not shards:
        raise ValueError("shards: expected one or more shard files, got none")
    opened = [HDF5Dataset(p) for p in shards]
    try:
        spec = opened[0].spec
        counts = {int(d.attrs.get("shard_count", 1)) for d in opened}
        for d in opened:
            if d.spec.fingerprint != spec.fingerprint:
                raise FingerprintMismatchError(
                    f"shards: {str(d.path)!r} has fingerprint {d.spec.fingerprint[:12]}, "
                    f"{str(opened[0].path)!r} has {spec.fingerprint[:12]}; they are different"
                    " datasets"
                )
        if len(counts) != 1:
            raise ValueError(f"shards: files disagree on the number of shards: {sorted(counts)}")
        n = counts.pop()
        by_index: dict[int, HDF5Dataset] = {}
        for d in opened:
            i = int(d.attrs.get("shard_index", 0))
            if i in by_index:
                raise ValueError(f"shards: shard {i}/{n} given twice ({str(by_index[i].path)!r},"
                                 f" {str(d.path)!r})")
            by_index[i] = d
        missing = sorted(set(range(n)) - set(by_index))
        if missing:
            raise ValueError(f"shards: missing shard(s) {missing} of {n}")
        parts = [by_index[i] for i in range(n)]
        splits = parts[0].splits
        for d in parts:
            if d.splits != splits:
                raise ValueError(f"shards: {str(d.path)!r} holds splits {d.splits}, expected"
                                 f" {splits}")
        total = sum(len(d) for d in parts)
        bar = _bar(total, "merge", progress)
        comp = str(parts[0].attrs.get("compression", "none"))
        writer = HDF5Writer.open(out, spec, splits=splits, overwrite=overwrite,
                                 compression=None if comp == "none" else comp)
        try:
            for s in splits:
                for d in parts:
                    lo, hi = d.range(s)
                    if writer.next_index(s) != lo:
                        raise ValueError(f"shards: split {s!r} of {str(d.path)!r} starts at {lo},"
                                         f" expected {writer.next_index(s)}")
                    step = 16
                    labs, sds = d.labels(s), d.seeds(s)
                    for a in range(0, hi - lo, step):
                        b = min(a + step, hi - lo)
                        if lo + a < writer.next_index(s):  # resumed merge
                            continue
                        writer.write(s, lo + a, _merge_rows(d, s, a, b, comp), labs[a:b],
                                     sds[a:b])
                        if bar is not None:
                            bar.update(b - a)
            return writer.finish()
        except BaseException:
            writer.close()
            raise
        finally:
            if bar is not None:
                bar.close()
    finally:
        for d in opened:
            d.close()


def content_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over every attribute and dataset of a file in a canonical order.

    Two files with the same digest hold the same bytes in every dataset and attribute, whatever
    the order of their internal HDF5 allocations. In a split's datasets only the first
    ``written`` rows count (the valid ones; all of them in a complete file), hashed as if the
    dataset had that length.
    """
    import hashlib

    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        h.update(name.encode())
        for k in sorted(obj.attrs):
            h.update(k.encode())
            h.update(repr(obj.attrs[k]).encode())
        if isinstance(obj, h5py.Dataset):
            shape = obj.shape
            top = f[name.split("/")[0]]
            if shape and isinstance(top, h5py.Group) and "written" in top.attrs:
                shape = (min(shape[0], int(top.attrs["written"])), *shape[1:])
            h.update(str(obj.dtype).encode() + str(shape).encode())
            for i in range(shape[0] if shape else 0):
                h.update(np.ascontiguousarray(obj[i]).tobytes())

    with h5py.File(path, "r") as f:
        visit("/", f)
        names: list[str] = []
        f.visit(names.append)
        for name in sorted(names):
            visit(name, f[name])
    return h.hexdigest()


def iter_rows(ds: HDF5Dataset, split: str, batch: int = 16) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_row, images (k, H, W))`` blocks of a split in order."""
    n = ds.written(split)
    for a in range(0, n, batch):
        yield a, ds.images(split, a, min(a + batch, n))
