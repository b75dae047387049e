"""Compute-saving spatial backdrop: the backward runs only where kept patches send a gradient.

Naive spatial masking (:class:`~backdrop.Backdrop` layers in a conv net) builds the autograd
graph over every pixel and multiplies most of the gradient by zero. Here a flat stack of layers
with spatial masks (e.g. ``GPNet.body``) runs as follows (a *slot* is one or more masks at one
place, a *segment* the layers between two slots, or between the input and the lowest slot):

1. The masks are drawn first, bottom to top, with the same calls (and generator draws) as the
   naive forward, so a seeded run draws the same masks on either path. A slot's gradient weights
   form one map ``(B, H, W)`` (Eq. 1: ``b * N / |b|_1``; the product when masks share a slot).
2. Top down, the *relevant* positions, whose gradient can be nonzero: the kept positions of the
   top slot; below it, the kept positions of a slot that lie in the receptive field of the
   relevant positions one slot up. Receptive fields come from the layers (kernel, stride,
   padding and dilation of conv and pooling layers; pointwise layers pass positions through).
3. Each segment below the top slot is planned: square tiles (one side per segment, a power of two
   chosen to minimise the cropped area) cover its relevant output positions, and the segment
   runs *cropped* if the tiles' input crops cover at most ``max_crop_fraction`` of its input,
   else *whole*. If no segment runs cropped there is nothing to save, and the step is the naive
   masked step (the layers as they are, the masks' gradient weights).
4. Bottom up, a cropped segment runs a no-grad forward of the whole map (in chunks of samples,
   in place, nothing kept for a backward) for the values, and a forward with autograd on the
   tiles' crops for the graph; the tiles' outputs are pasted into the no-grad map with the
   slot's gradient weights. A whole segment runs with autograd and the weights applied as the
   masking layer would.
5. The layers above the top slot run on the assembled map with autograd, unchanged.

Crops reproduce the whole-map computation exactly: every windowed layer runs with padding 0 on
a crop that holds its true padding explicitly where the crop reaches past the map's border (zero
for convolutions and average pooling, ``-inf`` for max pooling), so border positions get the
gradient of the whole-map computation. Without train-mode BatchNorm below the top slot the
parameter and input gradients equal naive masking with the same masks (float rounding).

BatchNorm that normalizes with batch statistics (train mode) below the top slot of a step that
crops: the values are the whole batch's statistics (those of the plain forward; running
statistics updated once per step), and in the backward the mean and variance carry the gradient
of the statistics of the positions in the receptive field of the relevant positions, each
counted once: those positions *stand in* for the whole map, as the kept samples do in
:func:`~backdrop.efficient_backdrop`'s ``"full"`` mode. Naive masking's gradient flows through
the statistics into every position of the map, which no crop can reproduce; where the field
covers the whole map the two are equal. The cropped and the whole runs of a segment compute the
same stand-in gradient (:class:`_StandInBatchNorm`). docs/backdrop.md has the measured difference.
Layers above the top slot (BatchNorm included) behave exactly as in the plain network.

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

__all__ = ["MAX_CROP_FRACTION", "NO_GRAD_CHANNELS_LAST", "efficient_spatial_backdrop"]

MAX_CROP_FRACTION = 0.5
"""Default largest cropped area (summed over crops, relative to the whole input of a segment)
for which a segment runs cropped. A cropped segment costs a no-grad forward of the whole map plus
a forward and backward of the crops, a whole one a forward and backward of the map. Measured
(GPNet, CPU): 0.16x the naive step with 3% cropped, 0.50x with 32% at 1024 px (0.37x and 0.54x
with 2% and 23% at 256 px), a break-even near 75%; 0.5 keeps a margin."""

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


def _layer_regions(region: Tensor, seg: _Segment, layers: set[int]) -> dict[int, Tensor]:
    """For the layers ``layers`` of the segment, the positions of their input that reach
    ``region`` (bool ``(B, H, W)``) of the segment's output: the receptive field, as bool
    ``(B, H_l, W_l)``, windows' whole extents (dilation gaps included).

    The field of output position ``o`` at a layer's input is the interval
    ``[o * S - P, o * S - P + E)`` per dim (``S``, ``P``, ``E``: stride, offset and extent of the
    layers between, composed top down); the boxes are painted with a difference array."""
    n, r, c = region.nonzero(as_tuple=True)
    out: dict[int, Tensor] = {}
    stride, offset, extent = [1, 1], [0, 0], [1, 1]
    for idx in range(len(seg.layers) - 1, -1, -1):
        w = seg.layers[idx].window
        if w is not None:
            for i in range(2):
                stride[i], offset[i] = (
                    stride[i] * w.stride[i],
                    offset[i] * w.stride[i] + w.pad_lo[i],
                )
                extent[i] = (extent[i] - 1) * w.stride[i] + w.kernel[i]
        if idx not in layers:
            continue
        h, wd = seg.sizes[idx]
        r0 = (r * stride[0] - offset[0]).clamp(0, h)
        r1 = (r * stride[0] - offset[0] + extent[0]).clamp(0, h)
        c0 = (c * stride[1] - offset[1]).clamp(0, wd)
        c1 = (c * stride[1] - offset[1] + extent[1]).clamp(0, wd)
        diff = torch.zeros(region.shape[0], h + 1, wd + 1, dtype=torch.int32, device=region.device)
        one = torch.ones_like(n, dtype=torch.int32)
        for rows, cols, sign in ((r0, c0, 1), (r1, c0, -1), (r0, c1, -1), (r1, c1, 1)):
            diff.index_put_((n, rows, cols), one * sign, accumulate=True)
        out[idx] = diff.cumsum(1).cumsum(2)[:, :h, :wd] > 0
    return out


@dataclass
class _Tiles:
    """Square tiles of ``side`` output positions at ``(n, row0, col0)``; a tile may reach past
    the map's bottom or right border (those positions are computed and discarded)."""

    side: int
    n: Tensor
    row0: Tensor
    col0: Tensor


def _plan_tiles(region: Tensor, seg: _Segment, tile_size: int | None) -> tuple[_Tiles, float]:
    """Cover the relevant output positions ``region`` ``(B, H, W)`` with tiles of side ``T``:
    ``tile_size``, or the power of two that minimises the cropped input area. Returns the tiles
    and the cropped area relative to the whole input (``B * H_in * W_in``)."""
    b, h, w = region.shape
    h_in, w_in = seg.sizes[0]
    best: tuple[float, int] | None = None
    side = tile_size or 1
    while True:
        occ = F.max_pool2d(region[:, None].float(), side, side, ceil_mode=True)
        area = float(occ.sum()) * seg.input_span(side, 0) * seg.input_span(side, 1)
        if best is None or area < best[0]:
            best = (area, side)
        if tile_size or side >= max(h, w):
            break
        side *= 2
    area, side = best
    occ = F.max_pool2d(region[:, None].float(), side, side, ceil_mode=True)[:, 0] > 0
    n, i, j = torch.nonzero(occ, as_tuple=True)
    return _Tiles(side, n, i * side, j * side), area / (b * h_in * w_in)


class _StandInBatchNorm(torch.autograd.Function):
    """BatchNorm with given statistics' values whose gradient is that of a weighted subset's.

    Forward: the native eval-form ``batch_norm`` of ``x`` with the whole batch's mean ``mu`` and
    biased variance ``var`` (values). Backward: as if the mean and variance were the weighted
    mean ``m_w = sum(w x) / W`` and variance of ``x`` (weights ``w`` per position, ``W`` their
    sum). With ``s = sqrt(var + eps)``, ``xhat = (x - mu) / s`` and ``a = gamma * dL/dy``:

        dx = (a - w / W * (sum(a) + (x - m_w) / s * sum(a * xhat))) / s

    (sums per channel): the native eval-form backward ``a / s`` minus a per-position correction.
    With ``w = 1`` everywhere this is plain train-mode BatchNorm's gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, var: Tensor,
        w: Tensor, eps: float,
    ) -> Tensor:  # fmt: skip
        """``x`` ``(K, C, h, w)``, ``weight``/``bias``/``mean``/``var`` ``(C,)``, ``w``
        ``(K, 1, h, w)``; returns ``(K, C, h, w)``."""
        stat_dtype = weight.dtype if weight is not None else x.dtype
        mean, var = mean.to(stat_dtype), var.to(stat_dtype)
        total = w.sum().clamp(min=1)
        wx = w.to(x.dtype)
        if x.is_contiguous():  # one pass over x, no product map: (K, C, hw) @ (K, hw, 1)
            sums = torch.bmm(x.flatten(2), wx.flatten(2).transpose(1, 2)).sum(dim=(0, 2))
        else:
            sums = torch.einsum("kchw,kzhw->c", x, wx)
        m_w = sums.to(stat_dtype) / total
        ctx.save_for_backward(x, weight, mean, var, w, m_w, total)
        ctx.eps = eps
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, var, w, m_w, total = ctx.saved_tensors
        inv_s = torch.rsqrt(var + ctx.eps)
        d_x, d_w, d_b = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, mean, var, None, None, False, ctx.eps,
            [ctx.needs_input_grad[0], True, True],  # sum(dy * xhat), sum(dy): also for dx
        )  # fmt: skip
        if d_x is not None:
            gamma = weight if weight is not None else torch.ones_like(inv_s)
            view = (1, -1, 1, 1)
            c1 = gamma * inv_s * d_b / total
            c2 = gamma * inv_s * inv_s * d_w / total
            # dx -= w * (c1 + c2 * (x - m_w)): two fused passes over the map
            shift = (c1 - c2 * m_w).view(view).to(x.dtype)
            corr = torch.addcmul(shift, x, c2.view(view).to(x.dtype))
            d_x = d_x.addcmul_(corr, w.to(x.dtype), value=-1)
        d_w = d_w if ctx.needs_input_grad[1] else None
        d_b = d_b if ctx.needs_input_grad[2] else None
        return d_x, d_w, d_b, None, None, None, None


def _stand_in_batch_norm(bn: _BN, x: Tensor, weight: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``bn`` of ``x`` with the values ``mean``, ``var`` ``(C,)`` (the whole batch's) and the
    gradient of the weighted statistics of ``x`` (``weight`` ``(K, 1, h, w)`` per position):
    see :class:`_StandInBatchNorm`."""
    return _StandInBatchNorm.apply(x, bn.weight, bn.bias, mean, var, weight, bn.eps)


def _run_whole(seg: _Segment, x: Tensor, regions: dict[int, Tensor]) -> Tensor:
    """The segment on whole maps with autograd. A batch-statistics BatchNorm whose receptive
    field (``regions``) covers its whole map is the module itself (the naive computation);
    otherwise the positions of the field stand in for the map in its statistics' gradient."""
    for idx, lay in enumerate(seg.layers):
        if lay.kind == "batchnorm" and not bool(regions[idx].all()):
            mean, var = _batch_stats(lay.module, x)
            x = _stand_in_batch_norm(lay.module, x, regions[idx][:, None].to(x.dtype), mean, var)
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


NO_GRAD_CHANNELS_LAST = True
"""Run the no-grad pass in channels_last on CPU whatever the model's layout (its maps are never
part of a graph; only the result is converted back). PyTorch's CPU convolution, max-pooling and
BatchNorm statistics are faster in that layout and convolutions need no reordered copy: the pass
of the mini GP net (256 px, width 16) takes 38 instead of 91 ms on this CPU. ``False`` keeps the
model's layout (the benchmark measures both)."""


def _run_no_grad(seg: _Segment, x: Tensor, stats: dict[int, tuple[Tensor, Tensor]]) -> Tensor:
    """The segment on whole maps without autograd, as :func:`_run_whole` computes it, in chunks
    of samples, with BatchNorm and ReLU written in place into the maps this pass made.

    Nothing is kept for a backward, so the pass holds one map of the batch, the chunk being
    computed and that chunk's temporaries (at 1024 px and width 64, 4 images: 1.5 GiB at its
    peak instead of 3.2 GiB for whole-batch layers), and makes no fresh map per BatchNorm or
    ReLU (a fresh map costs page faults: 63 vs 8 ms for a BatchNorm of a 4x64x256x256 map
    here). BatchNorm statistics combine the chunks' moments (a synchronisation point per
    BatchNorm). On CPU the pass runs in channels_last (:data:`NO_GRAD_CHANNELS_LAST`).
    """
    maps = list(x.split(_chunk_rows(seg, x)))  # views of x: never written
    if NO_GRAD_CHANNELS_LAST and x.device.type == "cpu":
        maps = [t.to(memory_format=torch.channels_last) for t in maps]  # may still be views
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
    out = maps[0] if len(maps) == 1 else torch.cat(maps)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


def _positions(row0: Tensor, n: int) -> Tensor:
    """``(K, n)`` indices ``row0[k] + 0..n-1``."""
    return row0[:, None] + torch.arange(n, device=row0.device)


def _run_crops(
    seg: _Segment,
    source: Tensor,
    tiles: _Tiles,
    stats: dict[int, tuple[Tensor, Tensor]],
    regions: dict[int, Tensor],
) -> Tensor:
    """The segment's output on the tiles ``(K, C, T, T)``, with autograd, from crops of
    ``source`` ``(B, C, H_in, W_in)``; explicit padding reproduces the whole-map computation.

    A batch-statistics BatchNorm normalizes with the whole batch's statistics (``stats``), and
    the positions of its receptive field (``regions``) stand in for the map in their gradient:
    each such position once, however many crops hold it."""
    # top down: each layer's input rows/cols (per tile) for the tiles' outputs
    lo = [tiles.row0, tiles.col0]
    span = [tiles.side, tiles.side]
    spans: list[tuple[list[Tensor], list[int]]] = [([], [])] * len(seg.layers)
    for idx in range(len(seg.layers) - 1, -1, -1):
        w = seg.layers[idx].window
        if w is not None:
            lo = [lo[i] * w.stride[i] - w.pad_lo[i] for i in range(2)]
            span = [(span[i] - 1) * w.stride[i] + w.kernel[i] for i in range(2)]
        spans[idx] = (lo, span)

    def grid(idx: int) -> tuple[Tensor, Tensor, Tensor, bool]:
        """Clamped rows ``(K, h, 1)``, cols ``(K, 1, w)``, in-map mask ``(K, h, w)``, all in."""
        (lo_r, lo_c), (sr, sc) = spans[idx]
        h, w = seg.sizes[idx]
        rows, cols = _positions(lo_r, sr), _positions(lo_c, sc)
        ok_r, ok_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        ok = ok_r[:, :, None] & ok_c[:, None, :]
        inside = bool(ok_r.all()) and bool(ok_c.all())
        return rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :], ok, inside

    n = tiles.n[:, None, None]
    rows, cols, _, _ = grid(0)
    # out-of-map positions are clamped here and reset to the padding value before each
    # windowed layer below
    x = source[n, :, rows, cols].permute(0, 3, 1, 2)  # (K, C, h, w), channels-last strides
    if not source.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous()
    for idx, lay in enumerate(seg.layers):
        if lay.window is not None:
            _, _, ok, inside = grid(idx)
            if not inside:
                pad = torch.full((), lay.window.pad_value, dtype=x.dtype, device=x.device)
                x = torch.where(ok[:, None], x, pad)
            x = lay.window.run(x)
        elif lay.kind == "batchnorm":
            rows, cols, ok, _ = grid(idx)
            field = (regions[idx][n, rows, cols] & ok).to(x.dtype)
            copies = torch.zeros(regions[idx].shape, dtype=x.dtype, device=x.device)
            copies.index_put_(
                (n.expand_as(field), rows.expand_as(field), cols.expand_as(field)),
                field,
                accumulate=True,
            )
            weight = field / copies[n, rows, cols].clamp(min=1)
            x = _stand_in_batch_norm(lay.module, x, weight[:, None], *stats[id(lay.module)])
        else:
            x = lay.module(x)
    return x


def _paste(base: Tensor, out: Tensor, tiles: _Tiles, weights: Tensor) -> None:
    """Write the tiles' outputs ``out`` into ``base`` (in place) where they lie inside the map,
    their gradient scaled by the slot's gradient weights ``weights`` ``(B, H, W)``."""
    h, w = base.shape[2:]
    side = torch.arange(tiles.side, device=tiles.row0.device)
    inside = (tiles.row0[:, None, None] + side[:, None] < h) & (
        tiles.col0[:, None, None] + side[None, :] < w
    )
    k, i, j = inside.nonzero(as_tuple=True)  # (tile, row, col) of the positions inside the map
    n, r, c = tiles.n[k], tiles.row0[k] + i, tiles.col0[k] + j
    values = out.permute(0, 2, 3, 1)[k, i, j]  # (P, C)
    base[n, :, r, c] = scale_gradient(values, weights[n, r, c][:, None]).to(base.dtype)


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
            its whole input (summed over crops), else whole. When no segment runs cropped, the
            step is the naive masked step (nothing to save). ``inf`` always crops; ``0`` gives
            the naive step (unless nothing below a mask needs a gradient).
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
    regions: list[dict[int, Tensor]] = [{} for _ in segments]
    for j in range(len(slots) - 1, -1, -1):
        seg = segments[j]
        bns = {i for i, lay in enumerate(seg.layers) if lay.kind == "batchnorm"}
        regions[j] = _layer_regions(relevant[j], seg, bns | ({0} if j and seg.layers else set()))
        if j:
            relevant[j - 1] = relevant[j - 1] & regions[j].get(0, relevant[j])

    # 3. plan: crop a segment where the crops cover at most max_crop_fraction of its input
    plan = []
    for j, seg in enumerate(segments):
        tiles, fraction = _plan_tiles(relevant[j], seg, tile_size)
        empty = tiles.n.numel() == 0  # nothing below needs a gradient: values only
        cropped = empty or (bool(seg.layers) and fraction <= max_crop_fraction)
        plan.append(
            dict(
                layers=(seg.layers[0].name, seg.layers[-1].name) if seg.layers else None,
                cropped=cropped,
                fraction=fraction,
                tile=tiles.side,
                tiles=int(tiles.n.numel()),
                _tiles=tiles,
            )
        )
    # 4. segments bottom up; nothing to crop: the naive masked step, layers as they are
    naive = not any(seg["cropped"] for seg in plan)
    h = x
    for j, seg in enumerate(segments):
        tiles = plan[j].pop("_tiles")
        if naive:
            for lay in seg.layers:
                h = lay.module(h)
            h = scale_gradient(h, weights[j][:, None])
        elif plan[j]["cropped"]:
            stats: dict[int, tuple[Tensor, Tensor]] = {}
            base = _run_no_grad(seg, h.detach(), stats)
            if base.untyped_storage().data_ptr() == h.untyped_storage().data_ptr():
                base = base.clone()  # identity layers only: paste into a copy, never into h
            if tiles.n.numel():
                out = _run_crops(seg, h, tiles, stats, regions[j])
                _paste(base, out, tiles, weights[j])
            h = base
        else:
            h = scale_gradient(_run_whole(seg, h, regions[j]), weights[j][:, None])
    # 5. the layers above the top slot, unchanged
    for lay in layers[top + 1 :]:
        h = lay.module(h)
    return (h, plan) if return_plan else h
