"""A write-behind thread: the caller produces items, one background thread consumes them.

Used by the HDF5 writer (image chunks) and the Parquet writer (row groups), whose expensive
calls release the GIL, so writing overlaps with rendering on another core.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class WriteBehind:
    """Calls ``fn(*item)`` for queued items, in order, in one background thread.

    At most ``depth`` items wait in the queue, so :meth:`put` blocks when the writer is behind
    (memory stays bounded). An exception in the thread stops it; the next :meth:`put` or
    :meth:`close` raises that exception object (with its original traceback) in the caller.
    """

    _STOP = object()

    def __init__(self, fn: Callable[..., Any], depth: int = 2, name: str = "writer"):
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.failed = threading.Event()  # set once the thread has recorded an exception
        self._abort = threading.Event()
        self.done = 0  # items written (read by the caller for progress)
        self._thread = threading.Thread(target=self._run, name=f"gptextures-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is not None or self._abort.is_set():
                continue  # keep draining so that put() never blocks on a stopped writer
            try:
                self._fn(*item)
                self.done += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
                self.failed.set()

    def check(self) -> None:
        """Raise the writer thread's exception, if it had one."""
        if self._error is not None:
            raise self._error

    def put(self, item: tuple[Any, ...]) -> None:
        """Queue ``item``; raises the writer's exception instead once it has failed."""
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def close(self, abort: bool = False) -> None:
        """Wait for the thread to end, then raise its exception if it had one.

        ``abort=True`` (the caller is failing): only the item being written is finished,
        queued ones are dropped, and a writer exception is not raised (the caller's is).
        """
        if abort:
            self._abort.set()
        interrupted = sent = False
        while True:
            try:
                if not sent:  # the thread always drains the queue: this never waits for long
                    self._queue.put(self._STOP)
                    sent = True
                self._thread.join()
                break
            except KeyboardInterrupt:  # the write in progress takes milliseconds: wait for it
                interrupted = True
        if interrupted and not abort:
            raise KeyboardInterrupt
        if not abort:
            self.check()
