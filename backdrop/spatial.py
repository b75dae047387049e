"""Compute-saving spatial backdrop: the backward runs only where kept patches send a gradient.

Naive spatial masking (:class:`~backdrop.Backdrop` layers in a conv net) builds the autograd
graph over every pixel and multiplies most of the gradient by zero. Here a flat stack of layers
with spatial masks (e.g. ``GPNet.body``) runs as follows, segment by segment from the input up
(a *segment* is the run of layers between two mask slots, a *slot* one or more masks at the same
place):

1. The masks are drawn first, bottom to top, with the same calls (and generator draws) as the
   naive forward, so a seeded run draws the same masks on either path. A slot's gradient weights
   form one map ``(B, H, W)`` (Eq. 1: ``b * N / |b|_1``, the product when masks share a slot).
2. Top down, the positions whose gradient can be nonzero: the kept positions of the top slot;
   below it, the kept positions of a slot that lie in the receptive field of the positions
   found one slot up. The receptive field comes from the layers (kernel, stride, padding and
   dilation of conv and pooling layers; pointwise layers pass positions through).
3. Bottom up, each segment below the top slot either runs *cropped*: a no-grad forward of the
   whole map (nothing kept for backward) gives the values, and a forward with autograd on
   crops of its input gives the graph for the tiles that cover the relevant positions only; the
   tiles' outputs are pasted into the no-grad map with the slot's gradient weights; or, when
   the crops would cover more than ``max_crop_fraction`` of the whole input (e.g. one kept
   256-px cell, whose receptive field is the whole image), it runs *whole* with autograd and
   the weights applied as the naive masking layer would.
4. The layers above the top slot run on the assembled map with autograd, unchanged.

Crops reproduce the whole-map computation exactly: every windowed layer runs with padding 0 on
a crop that holds its true padding explicitly, where the crop reaches past the map's border
(zero for convolutions and average pooling, ``-inf`` for max pooling), so border positions get
the gradient of the whole-map computation. Tiles have equal sizes (a power of two in positions,
chosen per segment to minimise the cropped area) and run as one batch per size.

BatchNorm that normalizes with batch statistics (train mode) below the top slot: the statistics
are those of the whole-map forward (running statistics updated once per step, as in a plain
step), taken as constants in the backward: no gradient flows through the mean and variance.
The naive masked gradient also flows through the statistics into every pixel, which no crop
can reproduce; docs/backdrop.md has the measured difference. Without such BatchNorm (none, or
eval mode) the parameter gradient equals naive masking with the same masks. Layers above the
top slot (BatchNorm included) behave exactly as in the plain network.

Layers that cannot be bounded below an active mask (global or adaptive pooling, attention,
flattening, unknown modules, train-mode dropout whose random draw crops cannot reproduce,
non-zero padding modes, layers with forward hooks) raise an error that names the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backdrop.efficient import _BN, _batch_stats, _fixed_stats_batch_norm, _uses_batch_stats
from backdrop.functional import (
    _check_batch,
    _normalize_dims,
    expand_mask,
    mask_weights,
    scale_gradient,
)
from backdrop.layers import Backdrop

__all__ = ["MAX_CROP_FRACTION", "efficient_spatial_backdrop"]

MAX_CROP_FRACTION = 0.5
"""Default largest cropped area (summed over crops, relative to the whole input of a segment)
for which a segment runs cropped. A cropped segment costs a no-grad forward of the whole map plus
a forward and backward of the crops, a whole one a forward and backward of the map; with a
backward at about twice a forward, cropping pays below a fraction of about 2/3."""

_POINTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink,
)  # fmt: skip
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass(frozen=True)
class _Window:
    """A windowed layer along the two spatial dims: ``kernel`` is the dilated extent
    ``dilation * (k - 1) + 1`` (positions), ``pad_lo``/``pad_hi`` the padding before/after."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad_lo: tuple[int, int]
    pad_hi: tuple[int, int]
    ceil_mode: bool
    pad_value: float
    run: Callable[[Tensor], Tensor]  # the layer with padding 0

    def out_size(self, size: int, i: int) -> int:
        """Output length along spatial dim ``i`` (0: height, 1: width) for input length ``size``
        (PyTorch's rule, ceil mode included)."""
        k, s, lo, hi = self.kernel[i], self.stride[i], self.pad_lo[i], self.pad_hi[i]
        span = size + lo + hi - k
        if span < 0:
            return 0
        if not self.ceil_mode:
            return span // s + 1
        out = -(-span // s) + 1
        if (out - 1) * s >= size + lo:  # the last window must start inside the input
            out -= 1
        return out


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_window(m: nn.Conv2d) -> _Window | str:
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only zero padding can be cropped exactly)"
    k, d = _pair(m.kernel_size), _pair(m.dilation)
    ext = tuple(d[i] * (k[i] - 1) + 1 for i in range(2))
    if m.padding == "same":
        lo = tuple((e - 1) // 2 for e in ext)
        hi = tuple(e - 1 - q for e, q in zip(ext, lo))
    elif m.padding == "valid":
        lo = hi = (0, 0)
    else:
        lo = hi = _pair(m.padding)

    def run(x: Tensor) -> Tensor:
        return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)

    return _Window(ext, _pair(m.stride), lo, hi, False, 0.0, run)


def _max_pool_window(m: nn.MaxPool2d) -> _Window | str:
    if m.return_indices:
        return "return_indices=True"
    k, d, pad = _pair(m.kernel_size), _pair(m.dilation), _pair(m.padding)
    ext = tuple(d[i] * (k[i] - 1) + 1 for i in range(2))
    stride = _pair(m.stride if m.stride else m.kernel_size)

    def run(x: Tensor) -> Tensor:
        return F.max_pool2d(x, m.kernel_size, stride, 0, m.dilation)

    # positions past the border (padding, and the overhang of ceil mode) never win a max
    return _Window(ext, stride, pad, pad, bool(m.ceil_mode), -math.inf, run)


def _avg_pool_window(m: nn.AvgPool2d) -> _Window | str:
    k, pad = _pair(m.kernel_size), _pair(m.padding)
    if m.ceil_mode:
        return "ceil_mode=True (windows past the border are averaged over fewer positions)"
    if not m.count_include_pad and pad != (0, 0):
        return "count_include_pad=False with padding (the divisor changes at the border)"
    stride = _pair(m.stride if m.stride else m.kernel_size)

    def run(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, m.kernel_size, stride, 0, False, True, m.divisor_override)

    return _Window(k, stride, pad, pad, False, 0.0, run)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    kind: str  # "window", "batchnorm" (batch statistics), "pointwise", "mask", "unbounded"
    window: _Window | None = None
    reason: str = ""


def _classify(name: str, m: nn.Module) -> _Layer:
    if isinstance(m, Backdrop):
        return _Layer(name, m, "mask")
    if m._forward_hooks or m._forward_pre_hooks:
        return _Layer(name, m, "unbounded", reason="it has forward hooks, which crops bypass")
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(m, nn.Conv2d):
            w = _conv_window(m)
        elif isinstance(m, nn.MaxPool2d):
            w = _max_pool_window(m)
        else:
            w = _avg_pool_window(m)
        if isinstance(w, str):
            return _Layer(name, m, "unbounded", reason=w)
        return _Layer(name, m, "window", w)
    if isinstance(m, _BN):
        if "forward" in vars(m):
            return _Layer(
                name, m, "unbounded",
                reason="its forward is replaced (efficient_backdrop(batchnorm='full') around a"
                " spatial efficient model: use batchnorm='subset' or eval-mode BatchNorm)",
            )  # fmt: skip
        return _Layer(name, m, "batchnorm" if _uses_batch_stats(m) else "pointwise")
    if isinstance(m, _DROPOUT):
        if m.training and m.p > 0:
            return _Layer(
                name, m, "unbounded",
                reason="train-mode dropout draws a random mask that crops cannot reproduce",
            )  # fmt: skip
        return _Layer(name, m, "pointwise")
    if isinstance(m, _POINTWISE):
        return _Layer(name, m, "pointwise")
    return _Layer(
        name, m, "unbounded",
        reason="its receptive field is unknown (not a conv, pooling or pointwise layer)",
    )  # fmt: skip


def _flatten(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Layers of nested ``nn.Sequential`` containers in order, with qualified names."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        out = []
        for name, child in module.named_children():
            out += _flatten(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix, module)]


@dataclass
class _Segment:
    """Layers between two slots; ``sizes[i]`` is the spatial size at layer ``i``'s input and
    ``sizes[-1]`` the output size."""

    layers: list[_Layer]
    sizes: list[tuple[int, int]]

    def windows(self) -> list[tuple[_Window, tuple[int, int]]]:
        """Windowed layers with their input sizes, bottom to top."""
        return [(lay.window, self.sizes[i]) for i, lay in enumerate(self.layers) if lay.window]

    def input_span(self, n: int, i: int) -> int:
        """Input length along dim ``i`` that a run of ``n`` output positions reads."""
        for w, _ in reversed(self.windows()):
            n = (n - 1) * w.stride[i] + w.kernel[i]
        return n


def _dilate(region: Tensor, seg: _Segment) -> Tensor:
    """Positions of the segment's input that feed ``region`` (bool ``(B, H_out, W_out)``) of its
    output: a superset exact up to dilation gaps, ``(B, H_in, W_in)``."""
    r = region[:, None].to(torch.float32)
    for w, (h_in, w_in) in reversed(seg.windows()):
        kernel = torch.ones(1, 1, *w.kernel, device=r.device)
        raw = F.conv_transpose2d(r, kernel, stride=w.stride)  # raw index = input index + pad_lo
        out = r.new_zeros(r.shape[0], 1, h_in, w_in)
        top, left = w.pad_lo
        hs, ws = min(h_in, raw.shape[2] - top), min(w_in, raw.shape[3] - left)
        if hs > 0 and ws > 0:
            out[:, :, :hs, :ws] = raw[:, :, top : top + hs, left : left + ws]
        r = (out > 0).to(torch.float32)
    return r[:, 0] > 0


@dataclass
class _Tiles:
    """Tiles of ``size`` output positions (one group of equal size) at ``(n, row0, col0)``."""

    size: tuple[int, int]
    n: Tensor
    row0: Tensor
    col0: Tensor


def _plan_tiles(
    region: Tensor, seg: _Segment, tile_size: int | None
) -> tuple[list[_Tiles], float, int]:
    """Cover the relevant output positions ``region`` ``(B, H, W)`` with square tiles of side
    ``T``: ``tile_size``, or the power of two that minimises the cropped input area. Returns the
    tile groups, the cropped area relative to the whole input (``B * H_in * W_in``) and ``T``."""
    b, h, w = region.shape
    h_in, w_in = seg.sizes[0]
    whole = b * h_in * w_in
    best: tuple[float, int] | None = None
    side = tile_size or 1
    while True:
        occ = F.max_pool2d(region[:, None].float(), side, side, ceil_mode=True)[:, 0] > 0
        rows = [side] * (occ.shape[1] - 1) + [h - side * (occ.shape[1] - 1)]
        cols = [side] * (occ.shape[2] - 1) + [w - side * (occ.shape[2] - 1)]
        span_r = torch.tensor([seg.input_span(n, 0) for n in rows], device=region.device)
        span_c = torch.tensor([seg.input_span(n, 1) for n in cols], device=region.device)
        area = float((occ.float() * (span_r[:, None] * span_c[None, :]).float()).sum())
        if best is None or area < best[0]:
            best = (area, side)
        if tile_size or side >= max(h, w):
            break
        side *= 2
    area, side = best
    occ = F.max_pool2d(region[:, None].float(), side, side, ceil_mode=True)[:, 0] > 0
    n, i, j = torch.nonzero(occ, as_tuple=True)
    row0, col0 = i * side, j * side
    th = torch.clamp(h - row0, max=side)
    tw = torch.clamp(w - col0, max=side)
    groups = []
    for size in sorted({(int(a), int(c)) for a, c in zip(th.tolist(), tw.tolist())}):
        sel = (th == size[0]) & (tw == size[1])
        groups.append(_Tiles(size, n[sel], row0[sel], col0[sel]))
    return groups, area / whole, side


def _run_whole(seg: _Segment, x: Tensor, stats: dict[int, tuple[Tensor, Tensor]]) -> Tensor:
    """The segment on whole maps; batch-statistics BatchNorm with its statistics as constants
    (recorded in ``stats``, running statistics updated)."""
    for lay in seg.layers:
        if lay.kind == "batchnorm":
            mean, var = _batch_stats(lay.module, x)
            stats[id(lay.module)] = (mean, var)
            x = _fixed_stats_batch_norm(lay.module, x, mean, var)
        else:
            x = lay.module(x)
    return x


def _normalize_(x: Tensor, bn: _BN, mean: Tensor, var: Tensor) -> Tensor:
    """``bn`` with the given statistics, written into ``x`` (no new map)."""
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    view = (1, -1, 1, 1)
    return x.mul_(scale.view(view).to(x.dtype)).add_(shift.view(view).to(x.dtype))


_CHUNK_BYTES = 64 * 2**20


def _chunk_rows(seg: _Segment, x: Tensor) -> int:
    """Samples per chunk of the no-grad pass: the largest map of a chunk under 64 MiB."""
    channels = [x.shape[1]]
    channels += [lay.module.out_channels for lay in seg.layers if isinstance(lay.module, nn.Conv2d)]
    per_sample = max(channels) * max(h * w for h, w in seg.sizes) * x.element_size()
    return max(1, min(x.shape[0], _CHUNK_BYTES // per_sample))


def _run_no_grad(seg: _Segment, x: Tensor, stats: dict[int, tuple[Tensor, Tensor]]) -> Tensor:
    """The segment on whole maps without autograd, as :func:`_run_whole` computes it, in chunks
    of samples, with BatchNorm and ReLU written in place into the maps this pass made.

    Nothing is kept for a backward, so the pass holds one map of the batch, the chunk being
    computed and that chunk's temporaries: at 1024 px and width 64 (4 images) 1.5 GiB at its
    peak instead of 3.2 GiB for whole-batch layers, and no fresh map per BatchNorm or ReLU (a
    fresh map costs page faults: 63 vs 8 ms for a BatchNorm of a 4x64x256x256 map here).
    BatchNorm statistics combine the chunks' moments (a synchronisation point per BatchNorm).
    """
    maps = list(x.split(_chunk_rows(seg, x)))  # views of x: never written
    owned = False  # the maps were made by this pass (never the caller's input)
    with torch.no_grad():
        for lay in seg.layers:
            m = lay.module
            if lay.kind == "batchnorm":
                mean, var = _batch_stats(m, maps)
                stats[id(m)] = (mean, var)
                if owned:
                    for t in maps:
                        _normalize_(t, m, mean, var)
                else:
                    maps = [_fixed_stats_batch_norm(m, t, mean, var) for t in maps]
                    owned = True
            elif owned and isinstance(m, _BN):  # eval mode: running statistics
                for t in maps:
                    _normalize_(t, m, m.running_mean, m.running_var)
            elif owned and type(m) is nn.ReLU:
                for t in maps:
                    t.relu_()
            else:
                for i in range(len(maps)):
                    y = m(maps[i])
                    owned = owned or y is not maps[i]
                    maps[i] = y  # the chunk's input map is freed here
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def _positions(row0: Tensor, n: int) -> Tensor:
    """``(K, n)`` indices ``row0[k] + 0..n-1``."""
    return row0[:, None] + torch.arange(n, device=row0.device)


def _run_crops(
    seg: _Segment, source: Tensor, tiles: _Tiles, stats: dict[int, tuple[Tensor, Tensor]]
) -> Tensor:
    """The segment's output on ``tiles`` ``(K, C, th, tw)``, with autograd, from crops of
    ``source`` ``(B, C, H_in, W_in)``; explicit padding reproduces the whole-map computation."""
    # top down: each layer's input span (offsets per tile, length) for the tiles' outputs
    lo = [tiles.row0.clone(), tiles.col0.clone()]
    span = list(tiles.size)
    spans: list[tuple[list[Tensor], list[int]]] = [([], [])] * len(seg.layers)
    for idx in range(len(seg.layers) - 1, -1, -1):
        w = seg.layers[idx].window
        if w is not None:
            lo = [lo[i] * w.stride[i] - w.pad_lo[i] for i in range(2)]
            span = [(span[i] - 1) * w.stride[i] + w.kernel[i] for i in range(2)]
        spans[idx] = (lo, span)
    (lo0, span0), (h0, w0) = spans[0], seg.sizes[0]
    # out-of-map positions are clamped here and reset to the padding value before each
    # windowed layer below
    rows = _positions(lo0[0], span0[0]).clamp(0, h0 - 1)
    cols = _positions(lo0[1], span0[1]).clamp(0, w0 - 1)
    x = source[tiles.n[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    x = x.permute(0, 3, 1, 2)  # (K, C, h, w), channels-last strides
    if not source.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous()
    for idx, lay in enumerate(seg.layers):
        if lay.window is not None:
            (lo_r, lo_c), (sr, sc) = spans[idx]
            hi_r, hi_c = seg.sizes[idx]
            ok_r = (_positions(lo_r, sr) >= 0) & (_positions(lo_r, sr) < hi_r)
            ok_c = (_positions(lo_c, sc) >= 0) & (_positions(lo_c, sc) < hi_c)
            if not (bool(ok_r.all()) and bool(ok_c.all())):
                ok = (ok_r[:, :, None] & ok_c[:, None, :])[:, None]
                x = torch.where(ok, x, torch.full((), lay.window.pad_value, dtype=x.dtype))
            x = lay.window.run(x)
        elif lay.kind == "batchnorm":
            x = _fixed_stats_batch_norm(lay.module, x, *stats[id(lay.module)])
        else:
            x = lay.module(x)
    return x


def _paste(base: Tensor, out: Tensor, tiles: _Tiles, weights: Tensor) -> None:
    """Write the tiles' outputs ``out`` into ``base`` (in place), their gradient scaled by the
    slot's gradient weights ``weights`` ``(B, H, W)`` at the tiles' positions."""
    rows = _positions(tiles.row0, tiles.size[0])[:, :, None]
    cols = _positions(tiles.col0, tiles.size[1])[:, None, :]
    n = tiles.n[:, None, None]
    scaled = scale_gradient(out, weights[n, rows, cols][:, None])
    base[n, :, rows, cols] = scaled.permute(0, 2, 3, 1).to(base.dtype)


def _slot_weights(masks: list[Backdrop], shape: torch.Size, device: torch.device) -> Tensor:
    """Draw the masks of one slot (in order) and return their gradient weights ``(B, H, W)``."""
    b, _, h, w = shape
    # float64: a product of float32 weights is exact, as when naive masks apply one after another
    total = torch.ones(b, h, w, dtype=torch.float64, device=device)
    for m in masks:
        cells = m.draw_mask(shape, device)
        _, ps = m._last_args
        weights = mask_weights(cells, per_sample=ps)
        full = expand_mask(weights, (b, 1, h, w), m.dims, m.lattice, per_sample=ps)
        total = total * full.expand(b, 1, h, w)[:, 0]
    return total


def efficient_spatial_backdrop(
    body: nn.Module,
    x: Tensor,
    *,
    max_crop_fraction: float = MAX_CROP_FRACTION,
    tile_size: int | None = None,
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, list[dict]]:
    """Run ``body`` (layers with spatial :class:`~backdrop.Backdrop` masks) building the autograd
    graph only where kept patches send a gradient; see the module docstring.

    Args:
        body: an ``nn.Sequential`` (nested ones are flattened) of 2-D conv, pooling, BatchNorm,
            pointwise and ``Backdrop`` layers; above the topmost active mask any layers.
        x: input ``(B, C, H, W)``.
        max_crop_fraction: a segment runs cropped when its crops cover at most this fraction of
            its whole input (summed over crops), else whole. ``inf`` always crops, ``0`` never
            (except where nothing needs a gradient).
        tile_size: side of the square output tiles that crops cover, in positions at the
            mask; ``None`` (default) picks the power of two with the least cropped area.
        return_plan: also return, per segment below the top mask, a dict with the layers it
            spans, ``"cropped"``, the crop ``"fraction"``, the tile side ``"tile"`` (positions)
            and the number of ``"tiles"``.
    Returns:
        the output of ``body(x)`` (same values up to float rounding; BatchNorm see the module
        docstring); with ``return_plan``, ``(output, plan)``.

    Masks are drawn only where the plain forward would draw them (train mode, ``p > 0``,
    gradients enabled and something below requiring grad); without any, this is ``body(x)``.
    """
    if not 0 <= max_crop_fraction:
        raise ValueError(f"max_crop_fraction must be >= 0, got {max_crop_fraction!r}")
    if tile_size is not None and (
        isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1
    ):
        raise ValueError(f"tile_size must be an int >= 1 or None, got {tile_size!r}")
    layers = [_classify(name, m) for name, m in _flatten(body, "")]
    grad_below = x.requires_grad
    active: list[int] = []
    for i, lay in enumerate(layers):
        if lay.kind == "mask":
            m = lay.module
            if m.training and m.p > 0 and torch.is_grad_enabled() and grad_below:
                active.append(i)
        grad_below = grad_below or any(p.requires_grad for p in lay.module.parameters())
    if not active:
        out = body(x)
        return (out, []) if return_plan else out
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W) for spatial masks, got shape {tuple(x.shape)}")
    _check_batch(x.shape)
    top = active[-1]
    for i in range(top + 1):
        lay = layers[i]
        if lay.kind == "unbounded":
            raise ValueError(
                f"layer {lay.name!r} ({type(lay.module).__name__}) lies below the active backdrop "
                f"mask {layers[top].name!r}, and the spatial compute-saving path cannot bound it: "
                f"{lay.reason}. Use the naive path (efficient=False) or move the mask below it."
            )
        if lay.kind == "mask" and i in active:
            nd, _ = _normalize_dims(4, lay.module.dims, lay.module.lattice, lay.module.per_sample)
            if 1 in nd:
                raise ValueError(
                    f"mask {lay.name!r} varies over channels (dims={lay.module.dims}); the "
                    f"spatial compute-saving path supports masks over samples and positions"
                )

    # segments between slots (consecutive masks share a slot; inactive masks are identities)
    segments: list[_Segment] = []
    slots: list[list[Backdrop]] = []
    current: list[_Layer] = []
    size = (x.shape[2], x.shape[3])
    sizes = [size]
    for i in range(top + 1):
        lay = layers[i]
        if i in active:
            if current or not slots:
                segments.append(_Segment(current, sizes))
                slots.append([])
            slots[-1].append(lay.module)
            current, sizes = [], [size]
            continue
        if lay.kind == "mask":
            lay = _Layer(lay.name, lay.module, "pointwise")
        if not current and slots and getattr(lay.module, "inplace", False):
            raise ValueError(
                f"layer {lay.name!r} modifies the output of backdrop mask {layers[i - 1].name!r} "
                f"in place; use an out-of-place layer after a mask (inplace=False)"
            )
        if lay.window is not None:
            size = (lay.window.out_size(size[0], 0), lay.window.out_size(size[1], 1))
            if min(size) < 1:
                raise ValueError(
                    f"layer {lay.name!r} maps the input {tuple(x.shape)} to an empty map"
                )
        current.append(lay)
        sizes.append(size)

    # 1. masks bottom up (the naive forward's order); 2. relevant positions top down
    weights = [
        _slot_weights(s, torch.Size((x.shape[0], 1, *seg.sizes[-1])), x.device)
        for s, seg in zip(slots, segments, strict=True)
    ]
    relevant = [w != 0 for w in weights]
    for j in range(len(slots) - 2, -1, -1):
        relevant[j] = relevant[j] & _dilate(relevant[j + 1], segments[j + 1])

    # 3. segments bottom up
    h = x
    plan = []
    for j, seg in enumerate(segments):
        stats: dict[int, tuple[Tensor, Tensor]] = {}
        groups, fraction, side = _plan_tiles(relevant[j], seg, tile_size)
        cropped = bool(seg.layers) and fraction <= max_crop_fraction
        if not groups:
            cropped = True  # nothing below needs a gradient: values only
        if cropped:
            base = _run_no_grad(seg, h.detach(), stats)
            if base.untyped_storage().data_ptr() == h.untyped_storage().data_ptr():
                base = base.clone()  # identity layers only: paste into a copy, never into h
            for tiles in groups:
                _paste(base, _run_crops(seg, h, tiles, stats), tiles, weights[j])
            h = base
        else:
            h = scale_gradient(_run_whole(seg, h, stats), weights[j][:, None])
        plan.append(
            dict(
                layers=(seg.layers[0].name, seg.layers[-1].name) if seg.layers else None,
                cropped=cropped,
                fraction=fraction,
                tile=side,
                tiles=sum(int(g.n.numel()) for g in groups),
            )
        )
    # 4. the layers above the top slot, unchanged
    for lay in layers[top + 1 :]:
        h = lay.module(h)
    return (h, plan) if return_plan else h
