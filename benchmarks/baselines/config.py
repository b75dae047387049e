"""What one baseline run is: the dataset, the network, the masks or crops, the recipe, the seed.

The defaults follow the paper (Sec. 3.2, Table 1), scaled with the preset:

- the network is :class:`backdrop.models.GPNet` with ``stages = log2(size / 8)`` pooling stages
  (7 at 1024 px, 5 at 256 px), so the class heatmap is 8x8 as in the paper;
- one mask per level of the dataset, named after the level, on patches of ``2**ceil(log2 l)``
  pixels, ``l`` the level's largest length scale: 16 and 256 px on golkar2018 (the paper's 64x64
  and 4x4 lattices), 4 and 64 px on golkar2018-mini, 4, 16 and 64 px on gp3-512;
- full batch (every training image in every step): the masks are the only source of noise;
- Adam, no weight decay, no augmentation.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptextures.spec import DatasetSpec

DEVICES = ("cpu", "cuda", "mps")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_stages(size: int) -> int:
    """Pooling stages that leave an 8x8 heatmap: ``log2(size / 8)`` (at least 1)."""
    return max(1, round(math.log2(size / 8)))


def default_patch(length_scales: Sequence[float]) -> float:
    """Mask patch (px) for a level: the smallest power of two >= its largest length scale."""
    return float(2 ** math.ceil(math.log2(max(length_scales))))


@dataclass(frozen=True)
class MaskConfig:
    """One backdrop mask: its name (a level's), patch side in input pixels, drop probability."""

    name: str
    patch_px: float
    p: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "patch_px": float(self.patch_px), "p": float(self.p)}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Build with :func:`make_config`, which fills the dataset's defaults.

    Attributes:
        dataset: preset name or path (``gptextures.load`` source); spec: its spec.
        masks: one mask per level (``p = 0``: inactive, an exact no-op).
        crop_tiles: 1 (whole images) or ``k*k`` fixed-location tiles per training image.
        width, stages, convs_per_stage: GPNet architecture.
        lr, weight_decay, steps: Adam and the number of optimizer steps.
        batch_size: images (or tiles) per step; ``None``: all of them (full batch).
        seed: initial weights, masks and batch order.
        device: ``cpu``, ``cuda`` or ``mps``; amp: autocast (float16) with a grad scaler.
        efficient: the compute-saving spatial backdrop path (``GPNet(efficient=True)``).
        threads: torch CPU threads of the run. Part of the recipe: another thread count may sum
            in another order, so the same seed gives the same bytes only with the same threads.
    """

    dataset: str
    spec: DatasetSpec = field(repr=False, compare=False)
    masks: tuple[MaskConfig, ...]
    crop_tiles: int = 1
    width: int = 16
    stages: int = 5
    convs_per_stage: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    steps: int = 400
    batch_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    efficient: bool = False
    threads: int = 1

    @property
    def input_px(self) -> int:
        """Side (px) of what the network sees in training: the image, or a tile."""
        return self.spec.texture.size[0] // math.isqrt(self.crop_tiles)

    def active_masks(self) -> list[MaskConfig]:
        return [m for m in self.masks if m.p > 0]

    def label(self) -> str:
        """Short name of the recipe, e.g. ``backdrop small p=0.99, large p=0.94`` or ``crop 4``."""
        if self.crop_tiles > 1:
            return f"{self.input_px}x{self.input_px} crop ({self.crop_tiles} tiles)"
        masks = self.active_masks()
        if not masks:
            return "no masking"
        return "backdrop " + ", ".join(f"{m.name} p={m.p:g}" for m in masks)

    def slug(self) -> str:
        """A folder-name form of the recipe and seed, e.g. ``small0.99-large0.94-s0``."""
        if self.crop_tiles > 1:
            core = f"crop{self.crop_tiles}"
        else:
            core = "-".join(f"{m.name}{m.p:g}" for m in self.masks if m.p > 0) or "plain"
        return f"{core}-s{self.seed}"

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`backdrop.models.GPNet` (JSON-ready)."""
        return {
            "num_classes": self.spec.num_classes, "in_channels": 1, "width": self.width,
            "stages": self.stages, "convs_per_stage": self.convs_per_stage,
            "input_size": self.input_px,
            "masks": [[m.name, float(m.patch_px), float(m.p)] for m in self.masks],
        }

    def training_dict(self) -> dict[str, Any]:
        return {
            "optimizer": "adam", "lr": self.lr, "weight_decay": self.weight_decay,
            "steps": self.steps, "batch_size": self.batch_size, "amp": self.amp,
            "device": self.device, "efficient": self.efficient, "threads": self.threads,
            "split": "train", "augmentation": "none",
        }

    def selection_key(self) -> dict[str, Any]:
        """What a val scan's choice of (lr, steps) depends on: the recipe without the learning
        rate, the steps, the seed and where it runs (device, amp, threads)."""
        s = self.spec
        return {"dataset": s.fingerprint, "masks": [m.to_dict() for m in self.masks],
                "crop_tiles": self.crop_tiles, "width": self.width, "stages": self.stages,
                "convs_per_stage": self.convs_per_stage, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "efficient": self.efficient}

    def to_dict(self, params: int) -> dict[str, Any]:
        """The run folder's ``config.json`` (format of :mod:`gptextures.runs`)."""
        from gptextures.runs import CONFIG_FORMAT, FORMAT_VERSION

        s = self.spec
        crop = None if self.crop_tiles == 1 else {"tiles": self.crop_tiles,
                                                  "tile_px": self.input_px,
                                                  "eval": "mean of the tile logits"}
        return {
            "format": CONFIG_FORMAT, "format_version": FORMAT_VERSION,
            "method": f"GPNet {self.label()}",
            "dataset": {"name": s.name, "version": s.version, "fingerprint": s.fingerprint},
            "model": {"class": "backdrop.models.GPNet", "kwargs": self.model_kwargs(),
                      "params": params},
            "masks": [m.to_dict() for m in self.masks], "crop": crop,
            "training": self.training_dict(), "seed": self.seed,
        }

    def replace(self, **changes: Any) -> TrainConfig:
        return make_config(**{**self._args(), **changes})

    def _args(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = self.spec
        out["p"] = {m.name: m.p for m in self.masks}
        out["patch"] = {m.name: m.patch_px for m in self.masks}
        del out["masks"]
        return out


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
            (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int in {rng}, got {value!r}")
    return value


def _check_float(name: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < lo or v > hi or \
            (hi_open and v == hi):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


def check_lattice(mask: MaskConfig, input_px: int, stages: int) -> None:
    """Refuse a mask whose lattice does not fit the network (names the mask and the range).

    GPNet puts a ``P``-pixel mask after pooling stage ``clip(floor(log2 P), 1, stages)`` on a
    ``round(input / P)``-cell lattice; it fits when that is no finer than the feature map there
    and the patch is no larger than the input: ``2 <= P <= input`` pixels.
    """
    from backdrop.models import _pooled, mask_stage

    k = mask_stage(mask.patch_px, stages)
    feature = _pooled(input_px, k)
    cells = max(1, round(input_px / mask.patch_px))
    if not 2 <= mask.patch_px <= input_px or cells > feature:
        raise ValueError(
            f"patch[{mask.name!r}]: a {mask.patch_px:g} px patch gives a {cells}x{cells} lattice"
            f" after pooling stage {k}, where the feature map is {feature}x{feature} for a"
            f" {input_px} px input: it does not fit the network; allowed patch sizes are"
            f" [2, {input_px}] px")


def make_config(dataset: str, *, spec: DatasetSpec | None = None,
                p: Mapping[str, float] | None = None, patch: Mapping[str, float] | None = None,
                crop_tiles: int = 1, width: int = 16, stages: int | None = None,
                convs_per_stage: int = 2, lr: float = 1e-3, weight_decay: float = 0.0,
                steps: int = 400, batch_size: int | None = None, seed: int = 0,
                device: str = "cpu", amp: bool | None = None,
                efficient: bool = False, threads: int = 1) -> TrainConfig:
    """A checked :class:`TrainConfig`; every bad value is refused naming it and its range.

    Args:
        dataset: a preset name or a dataset path (``gptextures.load`` source).
        spec: the dataset's spec when already resolved (else read from ``dataset``).
        p: level name -> drop probability in [0, 1) (levels not named: 0).
        patch: level name -> mask patch side in input pixels (default :func:`default_patch`).
        crop_tiles: 1, or a square number ``k*k`` of fixed-location tiles per image (k | size).
        amp: ``None``: on for CUDA, off elsewhere.
        threads: torch CPU threads (part of the recipe, see :class:`TrainConfig`).
    """
    if spec is None:
        from gptextures.io import resolve_spec

        spec = resolve_spec(dataset)
    levels = {lv.name: lv for lv in spec.texture.levels}
    p = dict(p or {})
    patch = dict(patch or {})
    for what, mapping in (("p", p), ("patch", patch)):
        unknown = sorted(set(mapping) - set(levels))
        if unknown:
            raise ValueError(f"{what}: unknown level(s) {unknown} for dataset {spec.name!r};"
                             f" its levels are {list(levels)}")
    if "train" not in spec.splits:
        raise ValueError(f"dataset: {spec.name!r} has no 'train' split (splits:"
                         f" {list(spec.splits)})")
    size = spec.texture.size
    if size[0] != size[1]:
        raise ValueError(f"dataset: GPNet needs square images, {spec.name!r} has {size}")
    crop_tiles = _check_int("crop_tiles", crop_tiles, 1)
    k = math.isqrt(crop_tiles)
    if k * k != crop_tiles or size[0] % k:
        raise ValueError(f"crop_tiles must be a square number k*k with k dividing the image side"
                         f" ({size[0]} px), e.g. 4 or 16; got {crop_tiles}")
    input_px = size[0] // k
    stages = default_stages(size[0]) if stages is None else stages
    _check_int("stages", stages, 1, max(1, int(math.log2(input_px))))
    masks = tuple(
        MaskConfig(name,
                   _check_float(f"patch[{name!r}]", patch.get(name, default_patch(
                       lv.length_scales)), 1e-9, float("inf")),
                   _check_float(f"p[{name!r}] (p_{name})", p.get(name, 0.0), 0.0, 1.0, True))
        for name, lv in levels.items())
    for m in masks:
        if not _NAME_RE.match(m.name):
            raise ValueError(f"level name {m.name!r} cannot name a mask (letters, digits, _)")
        if m.p > 0:  # an inactive mask is an exact no-op wherever GPNet puts it
            check_lattice(m, input_px, stages)
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return TrainConfig(
        dataset=str(dataset), spec=spec, masks=masks, crop_tiles=crop_tiles,
        width=_check_int("width", width, 1), stages=stages,
        convs_per_stage=_check_int("convs_per_stage", convs_per_stage, 1),
        lr=_check_float("lr", lr, 1e-12, 10.0),
        weight_decay=_check_float("weight_decay", weight_decay, 0.0, 1.0),
        steps=_check_int("steps", steps, 1),
        batch_size=None if batch_size is None else _check_int("batch_size", batch_size, 1),
        seed=_check_int("seed", seed, 0, 2**63 - 1), device=device,
        amp=(device == "cuda") if amp is None else bool(amp), efficient=bool(efficient),
        threads=_check_int("threads", threads, 1))
