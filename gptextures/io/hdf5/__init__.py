"""HDF5 files: a streaming, chunked, checksummed, resumable writer; a reader; verify; merge.

One module per concept: :mod:`~.layout` (names, ranges), :mod:`~.writer`, :mod:`~.reader`,
:mod:`~.verify` and :mod:`~.merge`; the checksum lives in :mod:`gptextures.io.checksum`.
``FORMAT`` is the :class:`~gptextures.io.formats.Format` the rest of gptextures uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...spec import DatasetSpec
from ..blocks import render_block
from ..checksum import EncodedChunks, encode_chunks, fletcher32
from ..formats import Format
from ..meta import human_bytes
from .layout import COMPRESSIONS, default_path, is_hdf5, partial_path, shard_range
from .merge import merge
from .reader import HDF5Dataset, read_spec
from .verify import content_digest, verify
from .writer import HDF5Writer, block_size


class HDF5Format(Format):
    """``<out>/<name>.h5``: one file, one image per chunk (docs/formats.md)."""

    name = "hdf5"
    looks_like = "a file starting with the HDF5 signature"
    options = {"compression": None}
    worker_modules = ("gptextures.io.blocks",)  # rendering and checksums: no h5py

    def detect(self, path: Path) -> bool:
        return is_hdf5(Path(path))

    def default_path(self, out_dir: str | os.PathLike[str], spec: DatasetSpec,
                     shard: tuple[int, int] = (0, 1)) -> Path:
        return default_path(out_dir, spec, shard)

    def open_writer(self, path: str | os.PathLike[str], spec: DatasetSpec, *,
                    splits: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
                    overwrite: bool = False, compression: str | None = None) -> HDF5Writer:
        return HDF5Writer.open(path, spec, splits=splits, shard=shard, compression=compression,
                               overwrite=overwrite)

    def open_reader(self, path: str | os.PathLike[str], *,
                    allow_incomplete: bool = False) -> HDF5Dataset:
        return HDF5Dataset(path, allow_incomplete=allow_incomplete)

    def verify(self, path: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
               progress: bool = False) -> Any:
        return verify(path, samples=samples, seed=seed, progress=progress)

    def merge(self, shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
              overwrite: bool = False, progress: bool = False) -> Path:
        return merge(shards, out, overwrite=overwrite, progress=progress)

    def stored_bytes(self, spec: DatasetSpec, images: int, *,
                     compression: str | None = None) -> int:
        full = super().stored_bytes(spec, images)
        return full if compression is None else full // 2

    def describe(self, path: str | os.PathLike[str]) -> list[str]:
        p = Path(path)
        with HDF5Dataset(p, allow_incomplete=True) as ds:
            a = ds.attrs
            lines = [f"file: {p} (HDF5, format {a.get('format_version')}, "
                     f"{'complete' if ds.complete else 'UNFINISHED'},"
                     f" {human_bytes(p.stat().st_size)})"]
            if int(a.get("shard_count", 1)) > 1:
                lines.append(f"  shard {a.get('shard_index')}/{a.get('shard_count')}")
            for s in ds.splits:
                lo, hi = ds.range(s)
                lines.append(f"  {s}: {ds.written(s)} of {hi - lo} samples"
                             f" (indices {lo}..{hi - 1})")
            lines.append(f"  written by gptextures {a.get('package_version')}, algorithm "
                         f"{a.get('algorithm_version')}, FFT {a.get('fft_backend')}, "
                         f"compression {a.get('compression')}")
            layout = a.get("layout")
            if layout is not None and not ds.complete:
                lines.append(f"  layout {json.loads(str(layout))}")
        return lines


FORMAT = HDF5Format()

__all__ = [
    "COMPRESSIONS", "FORMAT", "EncodedChunks", "HDF5Dataset", "HDF5Format", "HDF5Writer",
    "block_size", "content_digest", "default_path", "encode_chunks", "fletcher32", "merge",
    "partial_path", "read_spec", "render_block", "shard_range", "verify",
]
