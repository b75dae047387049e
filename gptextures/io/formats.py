"""The file formats behind one interface, and the registry that names them.

Every format is one module whose ``FORMAT`` object implements :class:`Format`: detect a path,
name its output, open a writer (create or resume), open a reader, verify, merge shards and
describe a file. Generation, loading, the torch datasets and the command line only talk to this
interface, so adding a format (say Zarr) is one new module and one line in ``_REGISTRY``.
Format modules are imported when first used (they import h5py or pyarrow).
"""

from __future__ import annotations

import errno
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..spec import DatasetSpec
from .meta import FormatError
from .split_data import SplitData

#: format name -> module holding its ``FORMAT`` object (the one line a new format adds).
_REGISTRY: dict[str, str] = {
    "hdf5": "gptextures.io.hdf5",
    "hf": "gptextures.io.hf",
}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)


def get_format(name: str) -> Format:
    """The :class:`Format` registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"format: unknown format {name!r}; known formats: {', '.join(_REGISTRY)}")
    return importlib.import_module(_REGISTRY[name]).FORMAT


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``'hdf5,hf'`` or a list into a tuple of known formats (no duplicates)."""
    if isinstance(formats, str):
        items = [f.strip() for f in formats.split(",") if f.strip()]
    else:
        items = list(formats)
    if not items:
        raise ValueError(f"format: expected one or more of {', '.join(_REGISTRY)}, got {formats!r}")
    out: list[str] = []
    for f in items:
        if f not in _REGISTRY:
            raise ValueError(f"format: unknown format {f!r}; known formats: {', '.join(_REGISTRY)}")
        if f not in out:
            out.append(f)
    return tuple(out)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The name of the format of a dataset file or folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FormatError: it exists but no format recognises it.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: {str(p)!r} does not exist")
    for name in _REGISTRY:
        if get_format(name).detect(p):
            return name
    kinds = "; ".join(f"{n}: {get_format(n).looks_like}" for n in _REGISTRY)
    what = "a folder" if p.is_dir() else "a file"
    raise FormatError(f"path: {str(p)!r} is {what} but not a gptextures dataset ({kinds})")


def format_of(path: str | os.PathLike[str]) -> Format:
    """The :class:`Format` of a dataset file or folder (see :func:`detect_format`)."""
    return get_format(detect_format(path))


def shard_range(n: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Contiguous index range ``[start, stop)`` of shard ``i`` of ``k`` over ``n`` items."""
    i, k = shard
    return (n * i) // k, (n * (i + 1)) // k


@dataclass(frozen=True)
class Task:
    """One unit of generation work: ``fn(*args)`` in a worker, covering ``samples`` samples."""

    fn: Any
    args: tuple[Any, ...]
    samples: int


class Reader(ABC):
    """Read access to one dataset file or folder (or one shard of it).

    Row ``i`` of a split is global sample index ``range(split)[0] + i``.
    """

    spec: DatasetSpec
    path: Path

    @property
    @abstractmethod
    def splits(self) -> list[str]:
        """Splits held."""

    @abstractmethod
    def range(self, split: str) -> tuple[int, int]:
        """``(start, stop)``: the global indices of ``split`` this file is meant to hold."""

    @abstractmethod
    def num_samples(self, split: str) -> int:
        """Rows of ``split`` that can be read (all of them in a complete dataset)."""

    @abstractmethod
    def images(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of ``split``: float32 ``(k, H, W)``."""

    def image(self, split: str, i: int) -> np.ndarray:
        """Row ``i`` of ``split``: float32 ``(H, W)``; ``IndexError`` out of range."""
        n = self.num_samples(self.check_split(split))
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {i!r}")
        if not 0 <= int(i) < n:
            raise IndexError(f"index: must be in [0, {n - 1}] for split {split!r}, got {i}")
        return self.images(split, int(i), int(i) + 1)[0]

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"split: {split!r} is not in {str(self.path)!r}; it has"
                             f" {self.splits}")
        return split

    def indices(self, split: str) -> np.ndarray:
        """Global sample indices of the rows, int64 ``(n,)``."""
        lo = self.range(split)[0]
        return np.arange(lo, lo + self.num_samples(split), dtype=np.int64)

    def labels(self, split: str) -> np.ndarray:
        """Class indices of the rows, int64 ``(n,)``."""
        lo = self.range(split)[0]
        return self.spec.labels(split, lo, lo + self.num_samples(split))

    def level_labels(self, split: str) -> np.ndarray:
        """Per-level labels of the rows, int64 ``(n, depth)``."""
        lo = self.range(split)[0]
        return self.spec.level_labels(split, lo, lo + self.num_samples(split))

    def seeds(self, split: str) -> np.ndarray:
        """Per-sample seeds of the rows, int64 ``(n,)``."""
        lo = self.range(split)[0]
        return self.spec.seeds(split, lo, lo + self.num_samples(split))

    def read_split(self, split: str) -> SplitData:
        """The whole split in memory."""
        self.check_split(split)
        return SplitData(images=self.images(split), labels=self.labels(split),
                         level_labels=self.level_labels(split), seeds=self.seeds(split),
                         indices=self.indices(split), spec=self.spec, split=split)

    def close(self) -> None:  # noqa: B027 - readers without open files need nothing
        """Release open files (the reader reopens them when used again)."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FormatWriter(ABC):
    """A dataset (or one shard) being written: created or resumed by :meth:`Format.open_writer`.

    :func:`gptextures.generation.generate` runs :meth:`tasks` on workers and hands every
    result back to :meth:`accept` in task order, then calls :meth:`finish`. An exception
    leaves a resumable partial output (:meth:`close`).
    """

    path: Path
    #: split -> samples this output holds; ``resumed``: split -> samples already written.
    counts: dict[str, int]
    resumed: dict[str, int]

    @abstractmethod
    def tasks(self, executor: str, workers: int) -> list[Task]:
        """The remaining work. ``executor`` is ``"inline"`` (this process, one task at a
        time), ``"pool"`` (local workers: threads of this process, see :meth:`threaded`, or
        worker processes) or ``"dask"``."""

    def threaded(self, task: Task) -> Task:
        """The task as a thread of this process runs it (``--workers N`` before, or instead
        of, worker processes); by default the task unchanged."""
        return task

    @abstractmethod
    def accept(self, task: Task, result: Any) -> None:
        """Take one task's result (called in task order, in this process)."""

    @property
    def samples_written(self) -> int:
        """Samples of this run's tasks written so far (for progress bars)."""
        return 0

    @abstractmethod
    def finish(self) -> Path:
        """Complete the output and move it to :attr:`path`."""

    @abstractmethod
    def close(self) -> None:
        """Stop without finishing: the partial output stays, resumable."""


class Format(ABC):
    """A file format: everything the rest of gptextures needs from it."""

    name: str
    #: one line for messages: what a dataset of this format looks like
    looks_like: str
    #: options ``open_writer`` takes (keyword -> default), named in ``gptextures generate``
    options: dict[str, Any] = {}
    #: modules worker processes import to run its writers' tasks (a pool preloads them once)
    worker_modules: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """Whether ``path`` (which exists) is a dataset of this format."""

    @abstractmethod
    def default_path(self, out_dir: str | os.PathLike[str], spec: DatasetSpec,
                     shard: tuple[int, int] = (0, 1)) -> Path:
        """Where ``gptextures generate`` writes this format in ``out_dir``."""

    @abstractmethod
    def open_writer(self, path: str | os.PathLike[str], spec: DatasetSpec, *,
                    splits: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
                    overwrite: bool = False, **options: Any) -> FormatWriter:
        """Create the output, or resume an unfinished one of the same spec and layout."""

    @abstractmethod
    def open_reader(self, path: str | os.PathLike[str], *,
                    allow_incomplete: bool = False) -> Reader:
        """Open a dataset for reading (an unfinished one only with ``allow_incomplete``)."""

    @abstractmethod
    def verify(self, path: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
               progress: bool = False) -> Any:
        """Check checksums, counts, labels and seeds; regenerate ``samples`` images per split
        (``-1``: all). Returns a :class:`gptextures.io.verify.VerifyReport`."""

    @abstractmethod
    def merge(self, shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
              overwrite: bool = False, progress: bool = False) -> Path:
        """Join complete shards into the output of a single-process run."""

    @abstractmethod
    def describe(self, path: str | os.PathLike[str]) -> list[str]:
        """Lines for ``gptextures info``: state, splits, size, who wrote it."""

    def read_spec(self, path: str | os.PathLike[str]) -> DatasetSpec:
        """The spec stored in a dataset (complete or not)."""
        with self.open_reader(path, allow_incomplete=True) as r:
            return r.spec

    def stored_bytes(self, spec: DatasetSpec, images: int, **options: Any) -> int:
        """A lower bound of the bytes ``images`` images take on disk (checked before writing):
        the raw float32 pixels, halved when compressed (smooth float32 images compress about
        1.2-1.3x losslessly)."""
        h, w = spec.texture.size
        return images * h * w * 4


def check_target(path: Path, spec: DatasetSpec, fmt: str, overwrite: bool) -> None:
    """Refuse to touch an existing ``path`` unless it is a gptextures ``fmt`` dataset and
    ``overwrite`` is set; the message says what is there.

    Raises:
        FileExistsError: ``path`` exists and is not a dataset of this format (whatever
            ``overwrite`` says: only datasets are ever replaced), or it is and ``overwrite``
            is false.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    try:
        found = detect_format(path)
        other = get_format(found).read_spec(path)
    except (FormatError, OSError, ValueError):
        kind = "a directory" if path.is_dir() else "a file"
        raise FileExistsError(
            errno.EEXIST, f"out: {str(path)!r} already exists and is {kind} that is not a"
            f" gptextures {fmt} dataset; move it away or choose another --out", str(path)
        ) from None
    if found != fmt:
        raise FileExistsError(
            errno.EEXIST, f"out: {str(path)!r} already exists and is a gptextures {found}"
            f" dataset, not {fmt}; move it away or choose another --out", str(path))
    if overwrite:
        return
    if other.fingerprint != spec.fingerprint:
        what = (f"a complete {fmt} dataset of another spec ({other.name} v{other.version},"
                f" fingerprint {other.fingerprint[:12]})")
    else:
        what = f"a complete {fmt} dataset of this spec"
    raise FileExistsError(errno.EEXIST, f"out: {str(path)!r} already exists ({what}); pass"
                          " --overwrite (overwrite=True) to replace it", str(path))
