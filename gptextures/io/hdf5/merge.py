"""Joining HDF5 shards (``--shard I/N``) into the file a single-process run writes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checksum import EncodedChunks
from ..meta import FingerprintMismatchError, progress_bar
from .reader import HDF5Dataset
from .writer import HDF5Writer

_STEP = 16  # rows copied per block


def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False, progress: bool = False) -> Path:
    """Join complete shard files ``i/n`` (any order) into one file identical to a
    single-process run (same datasets, same attributes).

    Uncompressed shards are copied chunk by chunk as stored (each chunk's checksum verified,
    no decode and re-encode); a corrupt chunk raises
    :class:`~gptextures.io.CorruptDataError` naming it, and no merged file appears.

    Raises:
        ValueError: shards of different specs, missing or duplicate shards, incomplete shards.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if not shards:
        raise ValueError("shards: expected one or more shard files, got none")
    opened = [HDF5Dataset(p) for p in shards]
    try:
        parts = _order(opened)
        spec = parts[0].spec
        splits = parts[0].splits
        comp = str(parts[0].attrs.get("compression", "none"))
        bar = progress_bar(sum(len(d) for d in parts), "merge", progress)
        writer = HDF5Writer.open(out, spec, splits=splits, overwrite=overwrite,
                                 compression=None if comp == "none" else comp)
        try:
            for s in splits:
                for d in parts:
                    lo, hi = d.range(s)
                    if writer.next_index(s) != lo:
                        raise ValueError(f"shards: split {s!r} of {str(d.path)!r} starts at {lo},"
                                         f" expected {writer.next_index(s)}")
                    for a in range(0, hi - lo, _STEP):
                        b = min(a + _STEP, hi - lo)
                        writer.write(s, lo + a, _rows(d, s, a, b, comp))
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


def _order(opened: list[HDF5Dataset]) -> list[HDF5Dataset]:
    """The shards in index order, checked: one fingerprint, one count, none missing or twice."""
    spec = opened[0].spec
    for d in opened:
        if d.spec.fingerprint != spec.fingerprint:
            raise FingerprintMismatchError(
                f"shards: {str(d.path)!r} has fingerprint {d.spec.fingerprint[:12]}, "
                f"{str(opened[0].path)!r} has {spec.fingerprint[:12]}; they are different"
                " datasets"
            )
    counts = {int(d.attrs.get("shard_count", 1)) for d in opened}
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
    for d in parts:
        if d.splits != parts[0].splits:
            raise ValueError(f"shards: {str(d.path)!r} holds splits {d.splits}, expected"
                             f" {parts[0].splits}")
    return parts


def _rows(d: HDF5Dataset, split: str, a: int, b: int, compression: str
          ) -> EncodedChunks | np.ndarray:
    """Rows ``a:b`` of a shard: its stored chunks (checksums verified) when uncompressed;
    decoded images otherwise, or when a chunk fails (reading it raises the error naming it)."""
    if compression == "none":
        rows = d.stored_chunks(split, a, b)
        if isinstance(rows, EncodedChunks) and len(rows) == b - a:
            return rows
    return d.images(split, a, b)
