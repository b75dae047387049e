"""Reading gptextures HDF5 files: :class:`HDF5Dataset`, and stored chunks for copying."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..checksum import EncodedChunks, fletcher32
from ..formats import Reader
from ..meta import CorruptDataError, FormatError, spec_from_provenance
from .layout import CHUNK_CACHE_BYTES


class HDF5Dataset(Reader):
    """Read access to a gptextures HDF5 file (one image per chunk, fletcher32 on everything).

    Args:
        path: the ``.h5`` file.
        allow_incomplete: also open an unfinished (``.partial``) file; only its first
            ``written`` rows of each split are read.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_incomplete: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"path: {str(self.path)!r} does not exist")
        if self.path.is_dir():
            raise IsADirectoryError(f"path: {str(self.path)!r} is a directory, not an HDF5 file")
        try:
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
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
        return self._h5[self.check_split(split)]

    def range(self, split: str) -> tuple[int, int]:
        """``(start, stop)`` global indices of ``split`` held by this file."""
        g = self._group(split)
        return int(g.attrs["start"]), int(g.attrs["stop"])

    def written(self, split: str) -> int:
        """Valid rows of ``split`` (all of them in a complete file)."""
        return int(self._group(split).attrs["written"])

    def num_samples(self, split: str) -> int:
        return self.written(split)

    def __len__(self) -> int:
        return sum(self.written(s) for s in self.splits)

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
        """Stored class indices, int64 ``(n,)``."""
        return self._column(split, "label")

    def level_labels(self, split: str) -> np.ndarray:
        """Stored per-level labels, int64 ``(n, depth)`` (columns in level order)."""
        cols = [self._column(split, f"levels/{name}") for name in self.spec.texture.level_names]
        return np.stack(cols, axis=1)

    def seeds(self, split: str) -> np.ndarray:
        """Stored per-sample seeds, int64 ``(n,)``."""
        return self._column(split, "seed")

    def stored_chunks(self, split: str, a: int, b: int) -> EncodedChunks | None:
        """The stored chunks of rows ``a:b`` (uncompressed files), each checked against its
        fletcher32, stopping before the first that fails; ``None`` when row ``a`` fails."""
        return read_stored_chunks(self._group(split), a, b)

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


def read_stored_chunks(g: h5py.Group, a: int, b: int) -> EncodedChunks | np.ndarray | None:
    """Image rows ``a:b`` of a split group as :meth:`HDF5Writer.write` takes them (stored chunks
    of an uncompressed file, decoded images of a compressed one), stopping before the first row
    that fails its checksum; ``None`` when row ``a`` does."""
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


def read_spec(path: str | os.PathLike[str]):  # noqa: ANN201 - DatasetSpec
    """The :class:`DatasetSpec` stored in an HDF5 file (complete or not)."""
    with HDF5Dataset(path, allow_incomplete=True) as ds:
        return ds.spec
