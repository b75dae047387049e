"""PyTorch datasets: over a written HDF5 file, and streaming (generated on the fly from a spec).

Both yield ``(image, target)`` with ``image`` a float32 tensor ``(1, H, W)`` (one channel, ready
for ``Conv2d``) after the optional ``transform``, and ``target`` either the class index
(``target="label"``, int64 scalar) or the per-level labels (``target="levels"``, int64
``(depth,)``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from . import labels as _labels
from .spec import DatasetSpec

TARGETS: tuple[str, ...] = ("label", "levels")


@functools.lru_cache(maxsize=8)
def _spec_from_json(text: str) -> DatasetSpec:
    return DatasetSpec.from_json(text)


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target: unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    return target


def _check_transform(transform: Any) -> Any:
    if transform is not None and not callable(transform):
        raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
    return transform


class TextureDataset(Dataset):
    """A split of an HDF5 file as a map-style dataset.

    The file is opened lazily, once per process (each ``DataLoader`` worker opens its own
    handle), so the dataset pickles cleanly for any start method.

    Args:
        path: a complete ``.h5`` file written by gptextures.
        split: split name.
        transform: callable applied to the image tensor ``(1, H, W)``.
        target: ``"label"`` (class index) or ``"levels"`` (per-level labels ``(depth,)``).
    """

    def __init__(self, path: str | os.PathLike[str], split: str,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 target: str = "label"):
        from .io.hdf5 import HDF5Dataset

        self.path = Path(path)
        self.split = split
        self.transform = _check_transform(transform)
        self.target = _check_target(target)
        with HDF5Dataset(self.path) as ds:
            if split not in ds.splits:
                raise ValueError(f"split: {split!r} is not in {str(self.path)!r}; it has"
                                 f" {ds.splits}")
            self._len = ds.written(split)
            self._spec_json = ds.spec.to_json(indent=None)
            labels = ds.labels(split)
        self._labels = torch.from_numpy(labels)
        self._levels = torch.from_numpy(_labels.decode_array(labels, self.spec.texture.radices))
        self._reader: Any = None
        self._pid: int | None = None

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec (read from the file)."""
        return _spec_from_json(self._spec_json)

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def labels(self) -> torch.Tensor:
        """Class indices of every row, int64 ``(N,)``."""
        return self._labels

    def __len__(self) -> int:
        return self._len

    def _open(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            from .io.hdf5 import HDF5Dataset

            self._reader = HDF5Dataset(self.path)
            self._pid = os.getpid()
        return self._reader

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        if isinstance(i, torch.Tensor):
            i = int(i)
        n = self._len
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index: must be in [-{n}, {n - 1}], got {i}")
        image = torch.from_numpy(self._open().image(self.split, int(i))).unsqueeze(0)
        if self.transform is not None:
            image = self.transform(image)
        target = self._labels[i] if self.target == "label" else self._levels[i]
        return image, target

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pid"] = None
        return state


class StreamingTextureDataset(IterableDataset):
    """Samples generated on the fly from a spec, each index exactly once per epoch.

    With ``DataLoader(num_workers=K)``, worker ``k`` renders indices ``start + k``,
    ``start + k + K``, ... (deterministic: the same images whatever ``K``; with
    ``batch_size=1`` the loader yields them in index order).

    Args:
        spec: a :class:`DatasetSpec` or a preset name.
        split: split name.
        transform: callable applied to the image tensor ``(1, H, W)``.
        target: ``"label"`` or ``"levels"``.
        start, stop: index range of the split (default: all of it).
    """

    def __init__(self, spec: DatasetSpec | str, split: str,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 target: str = "label", start: int = 0, stop: int | None = None):
        if isinstance(spec, str):
            from . import presets

            spec = presets.get(spec)
        if not isinstance(spec, DatasetSpec):
            raise TypeError(f"spec: expected a DatasetSpec or a preset name, got "
                            f"{type(spec).__name__}")
        n = spec.num_samples(split)
        stop = n if stop is None else stop
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 0 <= start <= stop <= n:
            raise ValueError(f"start/stop: need 0 <= start <= stop <= {n} for split {split!r},"
                             f" got start={start}, stop={stop}")
        self._spec_json = spec.to_json(indent=None)
        self._spec: DatasetSpec | None = spec
        self.split = split
        self.transform = _check_transform(transform)
        self.target = _check_target(target)
        self.start, self.stop = int(start), int(stop)

    @property
    def spec(self) -> DatasetSpec:
        if self._spec is None:
            self._spec = DatasetSpec.from_json(self._spec_json)
        return self._spec

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self, worker: int = 0, num_workers: int = 1) -> range:
        """Indices rendered by ``worker`` of ``num_workers``."""
        return range(self.start + worker, self.stop, num_workers)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        spec = self.spec
        for i in self.indices(k, n):
            s = spec.sample(self.split, i)
            image = torch.from_numpy(s.image).unsqueeze(0)
            if self.transform is not None:
                image = self.transform(image)
            if self.target == "label":
                target = torch.tensor(s.label, dtype=torch.int64)
            else:
                target = torch.tensor(s.level_labels, dtype=torch.int64)
            yield image, target

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_spec"] = None  # DatasetSpec holds a mappingproxy: travel as JSON
        return state
