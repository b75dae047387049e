"""One entry point for every source: ``read_spec(path)`` and ``load(path, split)``.

A source is an HDF5 file, a gptextures Hugging Face folder, or a preset name / spec JSON file
(generated in memory: fine for small datasets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec import DatasetSpec
from .meta import detect_format


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


def resolve_spec(source: str | os.PathLike[str] | DatasetSpec) -> DatasetSpec:
    """A spec from a :class:`DatasetSpec`, a preset name, a spec ``.json`` file or a dataset."""
    if isinstance(source, DatasetSpec):
        return source
    from .. import presets

    text = os.fspath(source)
    if text in presets.names():
        return presets.get(text)
    p = Path(text)
    if p.is_file() and p.suffix == ".json":
        return DatasetSpec.from_json(p.read_text())
    if p.exists():
        return read_spec(p)
    raise ValueError(
        f"source: {text!r} is neither a preset ({', '.join(presets.names())}), a spec .json file,"
        " nor an existing dataset file/folder"
    )


def read_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """The :class:`DatasetSpec` stored in an HDF5 file or a gptextures Hugging Face folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FormatError: ``path`` is not a gptextures dataset.
    """
    fmt = detect_format(path)
    if fmt == "hdf5":
        from .hdf5 import read_spec as _read

        return _read(path)
    from .hf import read_spec as _read_hf

    return _read_hf(path)


def load(source: str | os.PathLike[str] | DatasetSpec, split: str) -> SplitData:
    """Load a whole split into memory.

    Args:
        source: an HDF5 file, a gptextures HF folder, a preset name, a spec JSON path or a
            :class:`DatasetSpec` (the last three are generated in memory).
        split: split name, e.g. ``"train"``.
    Returns:
        :class:`SplitData` with ``images`` float32 ``(N, H, W)`` and labels.
    """
    p = Path(os.fspath(source)) if not isinstance(source, DatasetSpec) else None
    if p is not None and p.exists() and not (p.is_file() and p.suffix == ".json"):
        fmt = detect_format(p)
        if fmt == "hdf5":
            from .hdf5 import HDF5Dataset

            with HDF5Dataset(p) as ds:
                if split not in ds.splits:
                    raise ValueError(f"split: {split!r} is not in {str(p)!r}; it has {ds.splits}")
                return SplitData(
                    images=ds.images(split), labels=ds.labels(split),
                    level_labels=ds.level_labels(split), seeds=ds.seeds(split),
                    indices=ds.indices(split), spec=ds.spec, split=split,
                )
        from .hf import load_split

        return load_split(p, split)
    spec = resolve_spec(source)
    return generate_split(spec, split)


def generate_split(spec: DatasetSpec, split: str) -> SplitData:
    """Generate a whole split in memory (one process)."""
    n = spec.num_samples(split)
    h, w = spec.texture.size
    images = np.empty((n, h, w), dtype=np.float32)
    seeds = np.empty(n, dtype=np.int64)
    for i in range(n):
        s = spec.sample(split, i)
        images[i] = s.image
        seeds[i] = s.seed
    labels = np.arange(n, dtype=np.int64) % spec.num_classes
    from .. import labels as _labels

    return SplitData(
        images=images, labels=labels,
        level_labels=_labels.decode_array(labels, spec.texture.radices), seeds=seeds,
        indices=np.arange(n, dtype=np.int64), spec=spec, split=split,
    )
