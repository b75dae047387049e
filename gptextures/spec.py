"""The data model: ``Level``, ``TextureSpec``, ``DatasetSpec`` (validated, JSON, fingerprint).

Sample order inside a split is interleaved: sample ``i`` has class ``i % num_classes``, so every
prefix of a split is as balanced as it can be, and sample ``i``'s seed is
``seeds.sample_seed(dataset.seed, split, i)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from . import labels as _labels
from . import seeds as _seeds
from . import spectra

#: Version of the generation algorithm; part of every fingerprint. Bump it whenever the bytes
#: produced for a given spec and seed change.
ALGORITHM_VERSION = "3"
MIXES: tuple[str, ...] = ("sum", "product")
MIN_SIZE, MAX_SIZE = 8, 16384
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _finite_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return value


@dataclass(frozen=True)
class Level:
    """One scale of the hierarchy; its classes are its length scales (pixels).

    Args:
        name: identifier used in label columns and class names (letters, digits, ``_``).
        length_scales: >= 2 distinct kernel length scales ``l`` in pixels; label ``j`` of this
            level means ``length_scales[j]``.
        weight: mixing weight (``sum``: coefficient of the unit-variance field; ``product``:
            modulation depth of a modulating level, in standard deviations of the log-envelope).
    """

    name: str
    length_scales: tuple[float, ...]
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"name: a level name must start with a letter and contain only letters, digits"
                f" and '_', got {self.name!r}"
            )
        scales = self.length_scales
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
            raise TypeError(f"length_scales: expected a sequence of numbers, got {scales!r}")
        scales = tuple(
            _finite_positive(s, f"levels[{self.name}].length_scales[{i}]")
            for i, s in enumerate(scales)
        )
        if len(scales) < 2:
            raise ValueError(
                f"length_scales: level {self.name!r} needs >= 2 length scales (its classes),"
                f" got {len(scales)}"
            )
        if len(set(scales)) != len(scales):
            dup = sorted({s for s in scales if scales.count(s) > 1})
            raise ValueError(
                f"length_scales: level {self.name!r} has duplicate length scales {dup};"
                " each class of a level needs a distinct scale"
            )
        object.__setattr__(self, "length_scales", scales)
        weight = _finite_positive(self.weight, f"levels[{self.name}].weight")
        object.__setattr__(self, "weight", weight)

    @property
    def num_classes(self) -> int:
        return len(self.length_scales)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "length_scales": list(self.length_scales), "weight": self.weight}


def _check_size(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"size: expected an int or (H, W), got {size!r}")
    out = []
    for v in size:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"size: expected integers (pixels), got {size!r}")
        v = int(v)
        if not MIN_SIZE <= v <= MAX_SIZE:
            raise ValueError(f"size: each side must be in [{MIN_SIZE}, {MAX_SIZE}] px, got {v}")
        out.append(v)
    return out[0], out[1]


@dataclass(frozen=True)
class TextureSpec:
    """How one image is made.

    Args:
        size: ``H`` (square) or ``(H, W)`` in pixels.
        levels: the hierarchy, >= 1 :class:`Level` with distinct names. Class index is mixed
            radix over levels, first level most significant.
        kernel: one of ``spectra.KERNELS``.
        mix: ``"sum"`` (weighted sum of per-sample unit-variance level fields) or ``"product"``
            (the level with the smallest scales is the carrier; every other level modulates its
            amplitude by ``exp(weight * field)``: large blobs that contain small blobs).
        periodic: fields on the torus (``True``) or without wrap-around correlation.
    """

    size: tuple[int, int]
    levels: tuple[Level, ...]
    kernel: str = "squared_exponential"
    mix: str = "sum"
    periodic: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size))
        levels = self.levels
        if isinstance(levels, Level):
            levels = (levels,)
        if not isinstance(levels, Sequence):
            raise TypeError(f"levels: expected a sequence of Level, got {levels!r}")
        levels = tuple(lv if isinstance(lv, Level) else Level(**lv) for lv in levels)
        if len(levels) == 0:
            raise ValueError("levels: depth must be >= 1 (at least one level), got 0 levels")
        names = [lv.name for lv in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"levels: level names must be distinct, got {names}")
        object.__setattr__(self, "levels", levels)
        spectra.check_kernel(self.kernel)
        if self.mix not in MIXES:
            raise ValueError(f"mix: unknown mix {self.mix!r}; known mixes: {', '.join(MIXES)}")
        if self.mix == "product" and len(levels) < 2:
            raise ValueError("mix: 'product' needs depth >= 2 (a carrier and a modulator)")
        if not isinstance(self.periodic, (bool, np.bool_)):
            raise TypeError(f"periodic: expected a bool, got {self.periodic!r}")
        object.__setattr__(self, "periodic", bool(self.periodic))
        for i, lv in enumerate(levels):
            for j, ell in enumerate(lv.length_scales):
                spectra.check_length_scale(
                    ell, self.kernel, self.size, name=f"levels[{i}].length_scales[{j}]"
                )

    @property
    def shape(self) -> tuple[int, int]:
        return self.size

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def radices(self) -> tuple[int, ...]:
        return tuple(lv.num_classes for lv in self.levels)

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(lv.name for lv in self.levels)

    @property
    def num_classes(self) -> int:
        return _labels.num_classes(self.radices)

    @property
    def class_names(self) -> list[str]:
        return _labels.class_names(self.level_names, [lv.length_scales for lv in self.levels])

    def level_labels(self, class_index: int) -> tuple[int, ...]:
        """Per-level labels of a class."""
        return _labels.decode(class_index, self.radices)

    def class_index(self, level_labels: Sequence[int]) -> int:
        """Class index of per-level labels."""
        return _labels.encode(level_labels, self.radices)

    def length_scales(self, class_index: int) -> tuple[float, ...]:
        """The length scale (pixels) of each level for a class."""
        return tuple(
            lv.length_scales[j] for lv, j in zip(self.levels, self.level_labels(class_index))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "levels": [lv.to_dict() for lv in self.levels],
            "kernel": self.kernel,
            "mix": self.mix,
            "periodic": self.periodic,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextureSpec:
        data = _expect_mapping(data, "texture")
        _expect_keys(data, "texture", required={"size", "levels"},
                     optional={"kernel", "mix", "periodic"})
        levels = data["levels"]
        if not isinstance(levels, list):
            raise ValueError(f"texture.levels: expected a list, got {type(levels).__name__}")
        parsed = []
        for i, lv in enumerate(levels):
            lv = _expect_mapping(lv, f"texture.levels[{i}]")
            _expect_keys(lv, f"texture.levels[{i}]", required={"name", "length_scales"},
                         optional={"weight"})
            parsed.append(Level(**lv))
        return cls(
            size=tuple(data["size"]) if isinstance(data["size"], list) else data["size"],
            levels=tuple(parsed),
            kernel=data.get("kernel", "squared_exponential"),
            mix=data.get("mix", "sum"),
            periodic=data.get("periodic", True),
        )


@dataclass(frozen=True)
class Sample:
    """One sample of a dataset: ``image`` float32 ``(H, W)`` and its labels and seed."""

    image: np.ndarray
    label: int
    level_labels: tuple[int, ...]
    seed: int
    split: str
    index: int


@dataclass(frozen=True, eq=True)
class DatasetSpec:
    """A whole dataset: a texture, split sizes (images per class) and a seed.

    Args:
        name: dataset name (letters, digits, ``_ . -``).
        version: version string of this spec, e.g. ``"1.0.0"``.
        texture: the :class:`TextureSpec`.
        splits: split name -> number of images *per class* (>= 1).
        seed: dataset seed, an int in ``[0, 2**63 - 1]``.
        description: free text (part of the fingerprint).
    """

    name: str
    version: str
    texture: TextureSpec
    splits: Mapping[str, int] = field(default_factory=lambda: {"train": 1, "test": 25})
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _DATASET_NAME_RE.match(self.name):
            raise ValueError(
                f"name: expected letters, digits, '_', '.', '-' (starting with a letter or digit),"
                f" got {self.name!r}"
            )
        if not isinstance(self.version, str) or not self.version:
            raise ValueError(f"version: expected a non-empty string, got {self.version!r}")
        if not isinstance(self.texture, TextureSpec):
            raise TypeError(f"texture: expected a TextureSpec, got {type(self.texture).__name__}")
        if not isinstance(self.splits, Mapping) or len(self.splits) == 0:
            raise ValueError(f"splits: expected a non-empty mapping name -> images per class, "
                             f"got {self.splits!r}")
        splits = {}
        for k, v in self.splits.items():
            if not isinstance(k, str) or not _NAME_RE.match(k):
                raise ValueError(f"splits: split names must be identifiers, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"splits[{k!r}]: images per class must be an int >= 1, got {v!r}")
            splits[k] = int(v)
        object.__setattr__(self, "splits", MappingProxyType(splits))
        object.__setattr__(self, "seed", _seeds.check_seed(self.seed, "seed"))
        if not isinstance(self.description, str):
            raise TypeError(f"description: expected a string, got {self.description!r}")

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    # ---- sizes and labels -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.texture.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.texture.class_names

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(
                f"split: unknown split {split!r}; this dataset has {list(self.splits)}"
            )
        return split

    def num_samples(self, split: str) -> int:
        """Number of images in a split (``images per class * num_classes``)."""
        return self.splits[self.check_split(split)] * self.num_classes

    def _check_index(self, split: str, index: int) -> int:
        n = self.num_samples(split)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {index!r}")
        if not 0 <= int(index) < n:
            raise IndexError(f"index: must be in [0, {n - 1}] for split {split!r}, got {index}")
        return int(index)

    def check_range(self, split: str, start: int = 0, stop: int | None = None
                    ) -> tuple[int, int]:
        """``(start, stop)`` of a range of ``split``'s indices (``stop=None``: to the end);
        ``IndexError`` outside ``0 <= start <= stop <= num_samples``."""
        n = self.num_samples(split)
        stop = n if stop is None else stop
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name}: expected an int, got {v!r}")
        if not 0 <= start <= stop <= n:
            raise IndexError(f"start/stop: need 0 <= start <= stop <= {n} for split {split!r},"
                             f" got start={start}, stop={stop}")
        return int(start), int(stop)

    # The one home of the sample -> class and sample -> seed rules: every writer, reader,
    # loader and the evaluator call these.
    def label_of(self, split: str, index: int) -> int:
        """Class of sample ``index`` (interleaved: ``index % num_classes``)."""
        return self._check_index(split, index) % self.num_classes

    def seed_of(self, split: str, index: int) -> int:
        """The per-sample seed of sample ``index`` of ``split``."""
        return _seeds.sample_seed(self.seed, split, self._check_index(split, index))

    def labels(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Class indices of samples ``start:stop`` of ``split``: int64 ``(k,)``."""
        start, stop = self.check_range(split, start, stop)
        return np.arange(start, stop, dtype=np.int64) % self.num_classes

    def level_labels(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per-level labels of samples ``start:stop``: int64 ``(k, depth)``, level order."""
        return _labels.decode_array(self.labels(split, start, stop), self.texture.radices)

    def seeds(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per-sample seeds of samples ``start:stop`` of ``split``: int64 ``(k,)``."""
        start, stop = self.check_range(split, start, stop)
        return np.fromiter((_seeds.sample_seed(self.seed, split, i) for i in range(start, stop)),
                           dtype=np.int64, count=stop - start)

    def images(self, split: str, start: int = 0, stop: int | None = None, *,
               threads: int = 1) -> np.ndarray:
        """Render samples ``start:stop`` of ``split``: float32 ``(k, H, W)``.

        Each image depends only on (spec, split, index): any range, in any process, gives
        the same bytes.
        """
        from .textures import render

        start, stop = self.check_range(split, start, stop)
        h, w = self.texture.size
        out = np.empty((stop - start, h, w), dtype=np.float32)
        labels, seeds = self.labels(split, start, stop), self.seeds(split, start, stop)
        for j in range(stop - start):
            out[j] = render(self.texture, int(labels[j]), seed=int(seeds[j]), threads=threads)
        return out

    def sample(self, split: str, index: int, *, threads: int = 1) -> Sample:
        """Generate sample ``index`` of ``split`` (independent of any other sample)."""
        from .textures import render

        label = self.label_of(split, index)
        seed = self.seed_of(split, index)
        image = render(self.texture, label, seed=seed, threads=threads)
        return Sample(
            image=image, label=label, level_labels=self.texture.level_labels(label),
            seed=seed, split=split, index=int(index),
        )

    # ---- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "texture": self.texture.to_dict(),
            "splits": dict(self.splits),
            "seed": self.seed,
            "description": self.description,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """JSON in the field order of :meth:`to_dict` (split order is kept on a round trip)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        data = _expect_mapping(data, "spec")
        _expect_keys(data, "spec", required={"name", "version", "texture", "splits", "seed"},
                     optional={"description"})
        return cls(
            name=data["name"], version=data["version"],
            texture=TextureSpec.from_dict(data["texture"]),
            splits=_expect_mapping(data["splits"], "splits"), seed=data["seed"],
            description=data.get("description", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"spec JSON: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON and the generator's algorithm version."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        payload = f"gptextures-algorithm-{ALGORITHM_VERSION}\n{canonical}".encode()
        return hashlib.sha256(payload).hexdigest()

    def summary(self) -> str:
        """A few lines describing the dataset (sizes, levels, classes, splits, fingerprint)."""
        t = self.texture
        lines = [
            f"{self.name} v{self.version}  fingerprint {self.fingerprint[:12]}",
            f"  image {t.size[0]}x{t.size[1]} px, depth {t.depth}, {self.num_classes} classes,"
            f" kernel {t.kernel}, mix {t.mix}, {'periodic' if t.periodic else 'non-periodic'}",
        ]
        for lv in t.levels:
            scales = ", ".join(f"{s:g}" for s in lv.length_scales)
            lines.append(f"  level {lv.name}: length scales {{{scales}}} px, weight {lv.weight:g}")
        for s, n in self.splits.items():
            lines.append(f"  split {s}: {n} per class, {n * self.num_classes} images")
        return "\n".join(lines)


def _expect_mapping(data: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a JSON object, got {type(data).__name__}")
    return data


def _expect_keys(data: Mapping[str, Any], name: str, *, required: set[str],
                 optional: set[str]) -> None:
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{name}: missing field(s) {missing}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise ValueError(
            f"{name}: unknown field(s) {unknown}; allowed: {sorted(required | optional)}"
        )
