"""HDF5's Fletcher-32 checksum in numpy, and images encoded as stored HDF5 chunks.

Worker processes encode the chunks of uncompressed files (raw little-endian float32 + the
checksum HDF5's filter would compute), so that the process writing the file only copies bytes
(``write_direct_chunk``). Tests check the result equals HDF5's own filter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


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
