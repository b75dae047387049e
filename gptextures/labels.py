"""Class index <-> one label per level (mixed radix, first level most significant).

This module is the only place that knows the encoding: the writer, the loaders and the
evaluator all call it, so per-level scores are computed with the code that wrote the labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check_radices(radices: Sequence[int]) -> tuple[int, ...]:
    radices = tuple(int(r) for r in radices)
    if len(radices) == 0:
        raise ValueError("radices: need at least one level (depth >= 1), got none")
    for i, r in enumerate(radices):
        if r < 1:
            raise ValueError(f"radices[{i}]: each level needs >= 1 class, got {r}")
    return radices


def num_classes(radices: Sequence[int]) -> int:
    """Number of classes: the product of the number of choices per level."""
    return math.prod(_check_radices(radices))


def encode(level_labels: Sequence[int], radices: Sequence[int]) -> int:
    """Per-level labels -> class index (first level most significant).

    Args:
        level_labels: one label per level, ``0 <= level_labels[i] < radices[i]``.
        radices: number of choices per level.
    Returns:
        The class index in ``[0, prod(radices))``.
    """
    radices = _check_radices(radices)
    if len(level_labels) != len(radices):
        raise ValueError(
            f"level_labels: expected {len(radices)} labels (one per level), got {len(level_labels)}"
        )
    index = 0
    for i, (lab, r) in enumerate(zip(level_labels, radices)):
        lab = int(lab)
        if not 0 <= lab < r:
            raise ValueError(f"level_labels[{i}]: must be in [0, {r - 1}], got {lab}")
        index = index * r + lab
    return index


def decode(class_index: int, radices: Sequence[int]) -> tuple[int, ...]:
    """Class index -> per-level labels (inverse of :func:`encode`)."""
    radices = _check_radices(radices)
    n = num_classes(radices)
    if isinstance(class_index, (bool, np.bool_)) or not isinstance(
        class_index, (int, np.integer)
    ):
        raise TypeError(f"class_index: expected an int, got {type(class_index).__name__}")
    class_index = int(class_index)
    if not 0 <= class_index < n:
        raise ValueError(f"class_index: must be in [0, {n - 1}], got {class_index}")
    labels = []
    for r in reversed(radices):
        labels.append(class_index % r)
        class_index //= r
    return tuple(reversed(labels))


def decode_array(class_indices: np.ndarray, radices: Sequence[int]) -> np.ndarray:
    """Vectorised :func:`decode`: ``(N,)`` int class indices -> ``(N, depth)`` int64 labels."""
    radices = _check_radices(radices)
    idx = np.asarray(class_indices)
    if idx.ndim != 1:
        raise ValueError(f"class_indices: expected shape (N,), got {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"class_indices: expected integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    n = num_classes(radices)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"class_indices[{i}]: must be in [0, {n - 1}], got {idx[i]}")
    out = np.empty((idx.size, len(radices)), dtype=np.int64)
    rest = idx.copy()
    for j in range(len(radices) - 1, -1, -1):
        out[:, j] = rest % radices[j]
        rest //= radices[j]
    return out


def encode_array(level_labels: np.ndarray, radices: Sequence[int]) -> np.ndarray:
    """Vectorised :func:`encode`: ``(N, depth)`` labels -> ``(N,)`` int64 class indices."""
    radices = _check_radices(radices)
    lab = np.asarray(level_labels)
    if lab.ndim != 2 or lab.shape[1] != len(radices):
        raise ValueError(f"level_labels: expected shape (N, {len(radices)}), got {lab.shape}")
    lab = lab.astype(np.int64)
    out = np.zeros(lab.shape[0], dtype=np.int64)
    for j, r in enumerate(radices):
        col = lab[:, j]
        bad = (col < 0) | (col >= r)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"level_labels[{i}, {j}]: must be in [0, {r - 1}], got {col[i]}")
        out = out * r + col
    return out


def format_length(length_scale: float) -> str:
    """Short name of a length scale in pixels: ``9.5 -> 'l9.5'``, ``80.0 -> 'l80'``."""
    return f"l{float(length_scale):g}"


def class_names(level_names: Sequence[str], level_scales: Sequence[Sequence[float]]) -> list[str]:
    """Human-readable class names in class-index order, e.g. ``'small=l9.5|large=l80'``."""
    radices = [len(s) for s in level_scales]
    names = []
    for c in range(num_classes(radices)):
        labs = decode(c, radices)
        names.append(
            "|".join(
                f"{n}={format_length(s[lab])}"
                for n, s, lab in zip(level_names, level_scales, labs)
            )
        )
    return names
