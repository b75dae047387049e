"""One entry point for every source: ``resolve_spec``, ``read_spec``, ``open_source``, ``load``.

A source is a dataset file or folder (any registered format), a preset name, a spec ``.json``
file or a :class:`DatasetSpec` (the last three are generated on the fly, image by image).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..spec import DatasetSpec
from .formats import Reader, format_of
from .meta import check_memory
from .split_data import SplitData

Source = str | os.PathLike[str] | DatasetSpec


def resolve_spec(source: Source, name: str = "source") -> DatasetSpec:
    """The spec of any source: a :class:`DatasetSpec`, a preset name, a spec ``.json`` file or
    a dataset file/folder. The one resolver of the package: the evaluator, the loaders and the
    command line all use it, so a typo gets the same error everywhere.

    Args:
        name: the parameter name used in error messages.
    Raises:
        TypeError: not a spec, a string or a path.
        ValueError: a name that is not a preset (no path separator, no suffix), or an invalid
            spec.
        FileNotFoundError: a path (a separator or a suffix) that does not exist.
        IsADirectoryError: a ``.json`` path that is a directory.
        FormatError: a path that is not a gptextures dataset.
    """
    if isinstance(source, DatasetSpec):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a DatasetSpec, a preset name or a path, got"
                        f" {type(source).__name__}")
    from .. import presets

    text = os.fspath(source)
    if text in presets.names():
        return presets.get(text)
    p = Path(text)
    if p.suffix == ".json":
        if p.is_dir():
            raise IsADirectoryError(f"{name}: {text!r} is a directory; expected a spec .json"
                                    " file")
        if not p.exists():
            raise FileNotFoundError(f"{name}: spec file {text!r} does not exist")
        try:
            data = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: {text!r} is not UTF-8 text ({exc})") from None
        return DatasetSpec.from_json(data)
    if p.exists():
        return format_of(p).read_spec(p)
    message = (f"{name}: {text!r} is neither a preset ({', '.join(presets.names())}) nor an"
               " existing spec .json file or dataset file/folder")
    if os.sep in text or (os.altsep and os.altsep in text) or p.suffix:
        raise FileNotFoundError(message)  # a path
    raise ValueError(message)  # a name: an unknown preset


def read_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """The :class:`DatasetSpec` stored in a dataset file or folder of any format.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FormatError: ``path`` is not a gptextures dataset.
    """
    return format_of(path).read_spec(path)


class SpecSource(Reader):
    """A spec as a :class:`Reader`: every split in full, each image rendered when asked."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.path = Path(spec.name)

    @property
    def splits(self) -> list[str]:
        return list(self.spec.splits)

    def range(self, split: str) -> tuple[int, int]:
        return 0, self.spec.num_samples(self.check_split(split))

    def num_samples(self, split: str) -> int:
        return self.spec.num_samples(self.check_split(split))

    def images(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.spec.images(self.check_split(split), start, stop)


def open_source(source: Source) -> Reader:
    """A :class:`Reader` over any source: a dataset file or folder (read), or a preset, spec
    ``.json`` or :class:`DatasetSpec` (rendered on the fly)."""
    if not isinstance(source, DatasetSpec):
        p = Path(os.fspath(source))
        if p.exists() and p.suffix != ".json":
            return format_of(p).open_reader(p)
    return SpecSource(resolve_spec(source))


def load(source: Source, split: str) -> SplitData:
    """Load a whole split into memory.

    Args:
        source: a dataset file or folder, a preset name, a spec JSON path or a
            :class:`DatasetSpec` (the last three are generated in memory).
        split: split name, e.g. ``"test"``.
    Returns:
        :class:`SplitData` with ``images`` float32 ``(N, H, W)`` and labels.
    Raises:
        MemoryError: the split cannot fit in this machine's memory (refused up front).
    """
    with open_source(source) as reader:
        reader.check_split(split)
        h, w = reader.spec.texture.size
        check_memory(reader.num_samples(split) * h * w * 4,
                     f"split {split!r} of {reader.spec.name} ({reader.num_samples(split)}"
                     f" images of {h}x{w} float32)")
        return reader.read_split(split)


def generate_split(spec: DatasetSpec, split: str) -> SplitData:
    """Generate a whole split in memory (one process)."""
    return load(spec, split)
