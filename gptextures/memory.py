"""Keep freed memory in the process: avoids page faults on every new image (glibc only).

Each image is a fresh 4 MiB array at 1024 px. glibc's malloc hands memory above its trim
threshold back to the operating system when it is freed, so the next image's array is new
memory again and every one of its 1024 pages faults on first touch: measured ~0.7 ms per
1024x1024 image here, a third of the inverse FFT. :func:`keep_freed_memory` raises glibc's mmap
and trim thresholds (what ``MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456``
in the environment would do) so that freed image buffers are reused. It changes how this whole
process allocates, so the library never calls it on import: ``gptextures generate`` and its
worker processes do; call it yourself in a long-running loop of ``render`` calls if you like.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 2**20  # allocations below this come from the heap
TRIM_THRESHOLD = 256 * 2**20  # free heap kept before any is returned to the OS
_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap/trim thresholds (64 MiB / 256 MiB) once; ``False`` where unavailable."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done = ok
    return ok
