"""The paper's Table 1 networks with backdrop mask slots; width, depth and input size as parameters.

All conv layers except the last are followed by BatchNorm and ReLU (as in Table 1); the networks
end in a class heatmap that is averaged over space, and return logits (apply softmax / cross-entropy
outside). Mask slots are :class:`~backdrop.layers.Backdrop` layers over spatial cells, present
even at ``p = 0`` (then they are exact no-ops), so masked and plain models share state dicts.

Mask placement rule (GP net): a mask for patches of ``P`` input pixels goes after the pooling
stage whose stride ``2**k`` is the largest power of two ``<= P`` (``k`` clipped to
``[1, stages]``; at ``k = stages`` it goes after the final conv, like Table 1's ``*`` layer), on a
lattice of ``lattice_size(input_size, P) = max(1, round(input_size / P))`` cells per side,
clipped to the feature-map size there. At 1024 px: ``P = 16`` -> stage 4, 64x64 map, 64x64
lattice; ``P = 256`` -> head, 8x8 map, 4x4 lattice of 2x2 positions (Table 1, Sec. 3.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backdrop.layers import Backdrop
from backdrop.spatial import efficient_spatial_backdrop

__all__ = ["AllConvNet", "GPNet", "PonceNet", "lattice_size", "mask_stage"]


def _pos_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _pair(name: str, value: int | float | Sequence[int | float]) -> tuple:
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in pair):
        raise ValueError(
            f"{name} must be a positive number or a pair (height, width), got {value!r}"
        )
    return pair


def lattice_size(input_size: int, patch_size: float, feature_size: int | None = None) -> int:
    """Cells per side for patches of ``patch_size`` input pixels: ``max(1, round(input / patch))``.

    Clipped to ``feature_size`` (the feature map's side at the mask slot) when given.
    """
    if not patch_size > 0:
        raise ValueError(f"patch_size must be > 0 (input pixels), got {patch_size!r}")
    cells = max(1, round(input_size / patch_size))
    return min(cells, feature_size) if feature_size is not None else cells


def mask_stage(patch_size: float, stages: int) -> int:
    """Pooling stage after which a mask for ``patch_size``-pixel patches goes (1..stages)."""
    if not patch_size > 0:
        raise ValueError(f"patch_size must be > 0 (input pixels), got {patch_size!r}")
    return min(max(int(math.floor(math.log2(patch_size))), 1), stages)


def _pooled(size: int, k: int) -> int:
    """Side after ``k`` 3x3/stride-2/pad-1 pools (or stride-2 convs): ceil-halving ``k`` times."""
    for _ in range(k):
        size = (size + 1) // 2
    return size


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, padding: int | None = None) -> list:
    pad = k // 2 if padding is None else padding
    return [nn.Conv2d(c_in, c_out, k, stride, pad, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def _spatial_mask(p: float, lattice: tuple[int, int], per_sample: bool, gen) -> Backdrop:
    return Backdrop(p, dims=(-2, -1), lattice=lattice, per_sample=per_sample, generator=gen)


_RESERVED_MASK_NAMES = {"layers", "slots"}  # mask_layers, mask_slots are attributes


def _mask_specs(
    masks: Sequence[tuple[str, float, float]] | None,
    small_patch: float,
    large_patch: float,
    p_small: float,
    p_large: float,
) -> list[tuple[str, float, float]]:
    """The ``(name, patch_px, p)`` list: ``masks``, or the small/large pair by default."""
    if masks is None:
        return [("small", small_patch, p_small), ("large", large_patch, p_large)]
    if (small_patch, large_patch, p_small, p_large) != (16, 256, 0.0, 0.0):
        raise ValueError(
            "pass either masks=[(name, patch_px, p), ...] or small_patch/large_patch/p_small/"
            "p_large, not both (masks replaces the small/large pair)"
        )
    specs = []
    for entry in masks:
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(f"masks entries must be (name, patch_px, p) triples, got {entry!r}")
        name, patch, p = entry
        if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED_MASK_NAMES:
            raise ValueError(
                f"mask names must be Python identifiers other than {sorted(_RESERVED_MASK_NAMES)}"
                f" (the module is net.mask_<name>), got {name!r}"
            )
        specs.append((name, patch, p))
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"mask names must be distinct, got {names}")
    return specs


def _efficient_heatmap(net: nn.Module, x: Tensor) -> Tensor:
    """``net.body(x)``, through the spatial compute-saving path when it applies."""
    if net.efficient and net.training and torch.is_grad_enabled():
        out, net.last_plan = efficient_spatial_backdrop(net.body, x, return_plan=True)
        return out
    return net.body(x)


class GPNet(nn.Module):
    """GP-texture network of Table 1 with spatial backdrop masks (Sec. 3.2): by default a
    small-patch and a large-patch mask, or any list of masks.

    ``stages`` x {``convs_per_stage`` x (3x3 conv, BN, ReLU), 3x3 max-pool stride 2}, then
    3x3 conv ``width`` (BN, ReLU), 3x3 conv ``num_classes``, average pool. Paper: 7 stages of 2
    convs, width 64, 1024x1024 monochrome input, 4 classes.

    Args:
        num_classes, in_channels, width, stages, convs_per_stage: architecture.
        input_size: input side in pixels (square), used to place the masks.
        small_patch, large_patch: mask patch sizes in input pixels (paper: 16 and 256).
        p_small, p_large: drop probabilities of the two masks (paper: up to 0.999 and 0.94).
        masks: instead of the small/large pair, a list of ``(name, patch_px, p)``, e.g.
            ``[("fine", 8, 0.99), ("medium", 32, 0.9), ("coarse", 128, 0.75)]``; each mask is
            placed by the same rule (:func:`mask_stage`, :func:`lattice_size`) and is
            ``net.mask_<name>``; masks that share a slot are applied in the given order.
        per_sample: independent masks per image (Eq. 1 normalized per image; default);
            ``False`` shares one mask across the batch.
        generator: optional ``torch.Generator`` shared by all masks (drawn bottom to top).
        efficient: train-mode forwards with gradients run the spatial compute-saving path
            (:func:`backdrop.spatial.efficient_spatial_backdrop`): the backward only covers the
            crops that kept patches need. A plain attribute: flip ``net.efficient`` at any
            time; the state dict is the same. Eval mode and ``torch.no_grad()`` are unaffected.
    Input ``(B, in_channels, input_size, input_size)``, output logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 1,
        width: int = 64,
        stages: int = 7,
        convs_per_stage: int = 2,
        input_size: int = 1024,
        small_patch: float = 16,
        large_patch: float = 256,
        p_small: float = 0.0,
        p_large: float = 0.0,
        *,
        masks: Sequence[tuple[str, float, float]] | None = None,
        per_sample: bool = True,
        generator: torch.Generator | None = None,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        for name, v in [
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("width", width),
            ("stages", stages),
            ("convs_per_stage", convs_per_stage),
            ("input_size", input_size),
        ]:
            _pos_int(name, v)
        self.input_size = input_size
        self.efficient = bool(efficient)
        self.last_plan: list[dict] = []
        specs = _mask_specs(masks, small_patch, large_patch, p_small, p_large)
        slots: dict[str, tuple[int, tuple[int, int]]] = {}
        for name, patch, p in specs:
            k = mask_stage(patch, stages)
            cells = lattice_size(input_size, patch, _pooled(input_size, k))
            slots[name] = (k, (cells, cells))
            setattr(self, f"mask_{name}", _spatial_mask(p, (cells, cells), per_sample, generator))
        self.mask_slots = slots

        layers: list[nn.Module] = []
        c = in_channels
        for k in range(1, stages + 1):
            for _ in range(convs_per_stage):
                layers += _conv(c, width)
                c = width
            layers.append(nn.MaxPool2d(3, 2, 1))
            for name, (slot, _) in slots.items():
                if slot == k and k < stages:
                    layers.append(getattr(self, f"mask_{name}"))
        layers += _conv(c, width)
        layers.append(nn.Conv2d(width, num_classes, 3, padding=1))
        for name, (slot, _) in slots.items():
            if slot == stages:
                layers.append(getattr(self, f"mask_{name}"))
        self.body = nn.Sequential(*layers)

    @property
    def lattices(self) -> dict[str, tuple[int, int]]:
        """Mask lattices (cells per side) by mask name, e.g. ``{"small": (64, 64), ...}``."""
        return {name: lat for name, (_, lat) in self.mask_slots.items()}

    @property
    def mask_layers(self) -> dict[str, Backdrop]:
        """The mask modules by name (``net.mask_layers["small"] is net.mask_small``)."""
        return {name: getattr(self, f"mask_{name}") for name in self.mask_slots}

    def heatmap(self, x: Tensor) -> Tensor:
        """Class heatmap ``(B, num_classes, h, w)`` before the average pool."""
        return _efficient_heatmap(self, x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.heatmap(x).mean(dim=(-2, -1))


class PonceNet(nn.Module):
    """Ponce-texture network of Table 1 with one mask on ~60x67-pixel patches (Sec. 3.2).

    7x7 conv ``width``, then ``stages`` x {3x3 conv stride 2, 3x3 max-pool stride 2}, a final
    3x3 conv ``num_classes``, the mask on the class heatmap, average pool. Table 1 is garbled in
    the text we have; this reading gives a 19x25 heatmap at 300x400 and, with the default
    patches, the paper's 30 (5x6) masked patches.

    Args:
        num_classes, in_channels, width, stages: architecture (paper: 25, 1, 64, 2).
        input_size: ``(height, width)`` in pixels (paper: 300x400).
        patch_size: ``(height, width)`` of a masked patch in input pixels.
        p: drop probability of the mask; per_sample, generator, efficient: as in :class:`GPNet`.
    """

    def __init__(
        self,
        num_classes: int = 25,
        in_channels: int = 1,
        width: int = 64,
        stages: int = 2,
        input_size: int | Sequence[int] = (300, 400),
        patch_size: float | Sequence[float] = (60, 67),
        p: float = 0.0,
        *,
        per_sample: bool = True,
        generator: torch.Generator | None = None,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        for name, v in [
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("width", width),
            ("stages", stages),
        ]:
            _pos_int(name, v)
        self.efficient = bool(efficient)
        self.last_plan: list[dict] = []
        size = _pair("input_size", input_size)
        patch = _pair("patch_size", patch_size)
        feat = [_pooled(int(s), 2 * stages) for s in size]
        lattice = tuple(
            lattice_size(int(s), q, f) for s, q, f in zip(size, patch, feat, strict=True)
        )
        self.lattice = lattice
        layers: list[nn.Module] = _conv(in_channels, width, 7)
        for _ in range(stages):
            layers += _conv(width, width, 3, stride=2)
            layers.append(nn.MaxPool2d(3, 2, 1))
        layers.append(nn.Conv2d(width, num_classes, 3, padding=1))
        self.mask = _spatial_mask(p, lattice, per_sample, generator)
        layers.append(self.mask)
        self.body = nn.Sequential(*layers)

    def heatmap(self, x: Tensor) -> Tensor:
        """Class heatmap ``(B, num_classes, h, w)`` before the average pool."""
        return _efficient_heatmap(self, x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.heatmap(x).mean(dim=(-2, -1))


class AllConvNet(nn.Module):
    """All-convolutional CIFAR net (Springenberg et al. 2014, model C) with BN and a heatmap mask.

    3x3 conv w1 x2, 3x3 conv w1 stride 2, 3x3 conv w2 x2, 3x3 conv w2 stride 2, 3x3 conv w2
    (no padding), 1x1 conv w2, 1x1 conv ``num_classes`` -> 6x6 heatmap at 32x32 input, masked
    per heatmap position by default, then averaged.

    Args:
        num_classes, in_channels: 10 and 3 for CIFAR10.
        widths: ``(w1, w2)`` channel widths (paper: 96, 192).
        p: drop probability of the heatmap mask (Table 1's ``*``; leave 0 for the Eq. 4 setup).
        lattice: mask cells ``(h, w)`` on the heatmap; ``None``: one cell per position.
        input_size: input side in pixels (square; paper 32), used to size the default lattice.
        per_sample, generator: as in :class:`GPNet`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int] = (96, 192),
        p: float = 0.0,
        lattice: tuple[int, int] | None = None,
        input_size: int = 32,
        *,
        per_sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _pos_int("num_classes", num_classes)
        _pos_int("in_channels", in_channels)
        _pos_int("input_size", input_size)
        if len(tuple(widths)) != 2:
            raise ValueError(f"widths must be a pair (w1, w2), got {widths!r}")
        w1, w2 = (_pos_int("widths entry", w) for w in widths)
        side = _pooled(input_size, 2) - 2
        if side < 1:
            raise ValueError(f"input_size must be >= 9 (heatmap side >= 1), got {input_size}")
        self.lattice = (side, side) if lattice is None else tuple(lattice)
        self.features = nn.Sequential(
            *_conv(in_channels, w1),
            *_conv(w1, w1),
            *_conv(w1, w1, stride=2),
            *_conv(w1, w2),
            *_conv(w2, w2),
            *_conv(w2, w2, stride=2),
            *_conv(w2, w2, padding=0),
            *_conv(w2, w2, 1),
        )
        self.classifier = nn.Conv2d(w2, num_classes, 1)
        self.mask = _spatial_mask(p, self.lattice, per_sample, generator)

    def heatmap(self, x: Tensor) -> Tensor:
        """Class heatmap ``(B, num_classes, h, w)`` (6x6 at 32x32 input), after the mask."""
        return self.mask(self.classifier(self.features(x)))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, num_classes)`` and hidden state ``v`` ``(B, w2)``: the next-to-final
        layer averaged over space (the ``v_n`` of Eq. 3)."""
        h = self.features(x)
        logits = self.mask(self.classifier(h)).mean(dim=(-2, -1))
        return logits, h.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.heatmap(x).mean(dim=(-2, -1))
