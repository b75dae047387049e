"""One writer per output: an exclusive lock on ``<output>.lock`` while a run writes it.

A run that writes (or resumes) an output holds ``fcntl.flock`` on a lock file next to it; the
file holds the writer's PID. A second run on the same output refuses at once with
:class:`OutputBusyError` naming that PID, before it reads, writes or deletes anything. The
operating system drops the lock when the holder exits, however it exits (``kill -9``
included), so a stale lock file never blocks a later run. Within one process the lock is
re-entrant (``generate`` holds it around the format writer, which takes it too).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
_held: dict[str, tuple[int, int]] = {}  # absolute lock path -> (fd, holds in this process)
_guard = threading.Lock()


class OutputBusyError(BlockingIOError):
    """Another live process is writing this output."""


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output: ``<output>.lock``."""
    return Path(str(output) + LOCK_SUFFIX)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "a process that has not written its PID yet"


def acquire(output: str | os.PathLike[str]) -> None:
    """Take the output's lock, or raise :class:`OutputBusyError` at once."""
    if fcntl is None:  # pragma: no cover
        return
    lock = lock_path(output)
    key = os.path.abspath(lock)
    with _guard:
        if key in _held:
            fd, n = _held[key]
            _held[key] = (fd, n + 1)
            return
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise OutputBusyError(
                    errno.EWOULDBLOCK,
                    f"out: {str(output)!r} is being written by another run ({holder}; lock file"
                    f" {str(lock)!r}); wait for it to finish or stop it, then rerun",
                ) from None
            # The previous holder unlinks the file while it still holds the lock: if that
            # happened between our open and flock, we hold a lock on a file nobody else sees.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, 1)


def release(output: str | os.PathLike[str]) -> None:
    """Give back one hold of the output's lock (the last one removes the lock file)."""
    if fcntl is None:  # pragma: no cover
        return
    lock = lock_path(output)
    key = os.path.abspath(lock)
    with _guard:
        if key not in _held:
            return
        fd, n = _held[key]
        if n > 1:
            _held[key] = (fd, n - 1)
            return
        del _held[key]
        try:
            lock.unlink()  # still locked: a run that opened it meanwhile retries (see acquire)
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[None]:
    """``with output_lock(path): ...`` holds the output's lock inside the block."""
    acquire(output)
    try:
        yield
    finally:
        release(output)
