"""Names and ranges of HDF5 outputs: file names, the partial file, shard ranges, compression."""

from __future__ import annotations

import os
from pathlib import Path

from ...spec import DatasetSpec
from ..formats import shard_range  # noqa: F401 - part of the layout's names
from ..meta import PARTIAL_SUFFIX

COMPRESSIONS: tuple[str | None, ...] = (None, "gzip", "lzf")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
LABEL_CHUNK = 4096  # rows per chunk of the label, level and seed columns
CHUNK_CACHE_BYTES = 16 * 2**20  # readers: a few images, each read once, whole


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


def check_compression(compression: str | None) -> str | None:
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"compression: unknown HDF5 compression {compression!r}; allowed: "
            f"{', '.join(str(c) for c in COMPRESSIONS)}"
        )
    return compression


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is a file that starts with HDF5's signature."""
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC
