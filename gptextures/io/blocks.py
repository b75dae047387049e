"""The unit of work of HDF5 generation: render a block of samples in a worker process.

Kept apart from the HDF5 writer so that worker processes import numpy and the generator only
(not h5py).
"""

from __future__ import annotations

import functools
from typing import Any

from ..spec import DatasetSpec
from .checksum import encode_chunks
from .slots import write_slot


@functools.lru_cache(maxsize=4)
def _spec_of(spec_json: str) -> DatasetSpec:
    return DatasetSpec.from_json(spec_json)


def render_block(spec_json: str, split: str, start: int, stop: int, mode: str = "images",
                 slot: tuple[str, int, int, int] | None = None) -> Any:
    """Render samples ``start:stop`` of ``split`` (one FFT thread).

    Args:
        mode: what to return: ``"images"`` (float32 ``(k, H, W)``), ``"chunks"``
            (:class:`~gptextures.io.checksum.EncodedChunks`, the checksums computed here) or
            ``"slot"`` (the encoded chunks are written into ``slot = (file, offset, capacity,
            number)`` of the writer's :class:`~gptextures.io.slots.BlockSlots`; returns their
            sizes).
    """
    images = _spec_of(spec_json).images(split, start, stop, threads=1)
    if mode == "images":
        return images
    chunks = encode_chunks(images)
    if mode == "chunks":
        return chunks
    return write_slot(slot[:3], chunks.chunks)  # type: ignore[index]
