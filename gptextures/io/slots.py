"""Blocks of encoded images handed from worker processes to the writing process through a file.

Returning a rendered block from a worker pickles it through a pipe: on 2 cores that transfer
cost more than the second worker saved (2 workers were 0.3x of one process for HDF5 end to
end). Instead the writing process keeps a scratch file of fixed-size slots next to its output,
mapped into its memory. A worker renders a block, encodes its chunks and writes them into the
slot it was given with one ``pwrite`` (into the page cache); the parent writes them from its
mapping into the HDF5 file and frees the slot. Nothing but slot numbers and sizes crosses the
pipe. The file is allocated in full when it is made (a full disk fails there, not later) and
removed when the run ends; a killed run's leftover is removed by the next one.
"""

from __future__ import annotations

import mmap
import os
import queue
from collections.abc import Sequence
from pathlib import Path

SUFFIX = ".blocks"


class BlockSlots:
    """``count`` slots of ``slot_bytes`` each in a scratch file mapped into this process."""

    def __init__(self, path: str | os.PathLike[str], count: int, slot_bytes: int):
        self.path = Path(path)
        self.count, self.slot_bytes = count, slot_bytes
        self.path.unlink(missing_ok=True)  # a killed run's leftover
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, count * slot_bytes)
            else:  # pragma: no cover
                os.ftruncate(fd, count * slot_bytes)
            self._map = mmap.mmap(fd, count * slot_bytes)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)  # the mapping keeps the file's pages
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(count):
            self._free.put(i)

    def acquire(self) -> int:
        """A free slot (waits for one to be released)."""
        return self._free.get()

    def release(self, slot: int) -> None:
        self._free.put(slot)

    def where(self, slot: int) -> tuple[str, int, int]:
        """``(path, offset, capacity)`` of a slot, for :func:`write_slot` in a worker."""
        return str(self.path), slot * self.slot_bytes, self.slot_bytes

    def views(self, slot: int, sizes: Sequence[int]) -> tuple[memoryview, ...]:
        """The chunks a worker wrote into ``slot``, as views of the mapping (no copy)."""
        out, pos = [], slot * self.slot_bytes
        mv = memoryview(self._map)
        for n in sizes:
            out.append(mv[pos:pos + n])
            pos += n
        return tuple(out)

    def close(self) -> None:
        """Unmap and remove the file (views must no longer be used)."""
        try:
            self._map.close()
        except BufferError:  # a view is still alive (an exception unwinding): the GC frees it
            pass
        self.path.unlink(missing_ok=True)


def write_slot(where: tuple[str, int, int], chunks: Sequence[bytes]) -> list[int]:
    """In a worker: write ``chunks`` one after the other into a slot; returns their sizes."""
    path, offset, capacity = where
    sizes = [len(c) for c in chunks]
    if sum(sizes) > capacity:
        raise ValueError(f"chunks: {sum(sizes)} bytes do not fit a slot of {capacity}")
    fd = os.open(path, os.O_WRONLY)
    try:
        pos = offset
        for c in chunks:
            rest = memoryview(c).cast("B")
            while rest:
                n = os.pwrite(fd, rest, pos)
                pos, rest = pos + n, rest[n:]
    finally:
        os.close(fd)
    return sizes
