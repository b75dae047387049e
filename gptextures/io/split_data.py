"""``SplitData``: a whole split in memory (what ``gptextures.load`` returns). A leaf module."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import DatasetSpec


@dataclass(frozen=True)
class SplitData:
    """A whole split in memory.

    Attributes:
        images: float32 ``(N, H, W)``.
        labels: int64 ``(N,)`` class indices.
        level_labels: int64 ``(N, depth)`` per-level labels (level order of the spec).
        seeds: int64 ``(N,)`` per-sample seeds.
        indices: int64 ``(N,)`` global sample indices in the split.
        spec: the dataset's spec.
        split: the split name.
    """

    images: np.ndarray
    labels: np.ndarray
    level_labels: np.ndarray
    seeds: np.ndarray
    indices: np.ndarray
    spec: DatasetSpec
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names
