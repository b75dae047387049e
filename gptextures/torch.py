"""PyTorch datasets, like torchvision's: a map-style one over any source, and a streaming one.

Both yield ``(image, target)`` with ``image`` a float32 tensor ``(1, H, W)`` (one channel, ready
for ``Conv2d``) after the optional ``transform``, and ``target`` either the class index
(``target="label"``, int64 scalar) or the per-level labels (``target="levels"``, int64
``(depth,)``), after the optional ``target_transform``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .spec import DatasetSpec

TARGETS: tuple[str, ...] = ("label", "levels")


@functools.lru_cache(maxsize=8)
def _spec_from_json(text: str) -> DatasetSpec:
    return DatasetSpec.from_json(text)


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target: unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    return target


def _check_transform(transform: Any, name: str = "transform") -> Any:
    if transform is not None and not callable(transform):
        raise TypeError(f"{name}: expected a callable or None, got {type(transform).__name__}")
    return transform


class TextureDataset(Dataset):
    """A split of any gptextures source as a map-style dataset (``torchvision`` style).

    The source is whatever :func:`gptextures.load` accepts: an HDF5 file, a Hugging Face
    folder (read a row group at a time), a preset name, a spec ``.json`` file or a
    :class:`DatasetSpec` (images rendered when asked, none kept). Files are opened lazily, once
    per process (each ``DataLoader`` worker opens its own), so the dataset pickles cleanly for
    any start method.

    Args:
        root_or_source: the source (see above).
        split: split name.
        transform: callable applied to the image tensor ``(1, H, W)``.
        target_transform: callable applied to the target.
        target: ``"label"`` (class index) or ``"levels"`` (per-level labels ``(depth,)``).
    """

    def __init__(self, root_or_source: str | os.PathLike[str] | DatasetSpec, split: str,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 target_transform: Callable[[torch.Tensor], Any] | None = None,
                 target: str = "label"):
        from .io import open_source

        self.source: Any = root_or_source.to_json(indent=None) \
            if isinstance(root_or_source, DatasetSpec) else root_or_source
        self._is_spec = isinstance(root_or_source, DatasetSpec)
        self.split = split
        self.transform = _check_transform(transform)
        self.target_transform = _check_transform(target_transform, "target_transform")
        self.target = _check_target(target)
        with open_source(root_or_source) as reader:
            reader.check_split(split)
            self._len = reader.num_samples(split)
            self._spec_json = reader.spec.to_json(indent=None)
            self._labels = torch.from_numpy(reader.labels(split))
            self._levels = torch.from_numpy(reader.level_labels(split))
        self._reader: Any = None
        self._pid: int | None = None

    @property
    def spec(self) -> DatasetSpec:
        """The dataset's spec."""
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
            from .io import open_source

            self._reader = open_source(_spec_from_json(self.source) if self._is_spec
                                       else self.source)
            self._pid = os.getpid()
        return self._reader

    def __getitem__(self, i: int) -> tuple[Any, Any]:
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
        target: Any = self._labels[i] if self.target == "label" else self._levels[i]
        if self.target_transform is not None:
            target = self.target_transform(target)
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
        spec: a :class:`DatasetSpec`, a preset name or a spec ``.json`` file.
        split: split name.
        transform: callable applied to the image tensor ``(1, H, W)``.
        target: ``"label"`` or ``"levels"``.
        start, stop: index range of the split (default: all of it; at least one sample).
        target_transform: callable applied to the target.
    """

    def __init__(self, spec: DatasetSpec | str, split: str,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 target: str = "label", start: int = 0, stop: int | None = None,
                 target_transform: Callable[[torch.Tensor], Any] | None = None):
        from .io import resolve_spec

        spec = resolve_spec(spec, name="spec")
        start, stop = spec.check_range(split, start, stop)
        if start == stop:
            raise ValueError(f"start/stop: the range is empty (start = stop = {start}); a"
                             " dataset needs at least one sample")
        self.target_transform = _check_transform(target_transform, "target_transform")
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
                target: Any = torch.tensor(s.label, dtype=torch.int64)
            else:
                target = torch.tensor(s.level_labels, dtype=torch.int64)
            if self.target_transform is not None:
                target = self.target_transform(target)
            yield image, target

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_spec"] = None  # DatasetSpec holds a mappingproxy: travel as JSON
        return state
