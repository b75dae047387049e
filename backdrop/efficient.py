"""Compute-saving backdrop over samples: dropped samples run without an autograd graph.

The naive masking layer (``backdrop(h, p, dims=(0,))``) still builds the graph for every sample
and multiplies the dropped gradients by zero. Here the encoder runs with a graph only on the kept
samples; the dropped samples' latents are computed under ``torch.no_grad()``. The assembled
latents have the same values as ``encoder(x)`` (the loss is evaluated on all samples), and the
parameter gradient is Eq. 2: ``N / |b|_1 * sum_{n kept} grad_theta h_n . grad_{h_n} f(h)``.

For an encoder without cross-sample layers this equals the naive masked gradient for the same
mask. BatchNorm in train mode couples the samples; see ``batchnorm`` in
:func:`efficient_backdrop` and docs/backdrop.md for what differs and by how much.

The split/assemble helpers work on index sets of dim 0; a spatial-lattice variant would replace
them by crops of the kept cells (plus receptive-field margins) and paste kept latents into the
no-grad map in the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from backdrop.functional import _check_p, sample_mask, scale_gradient

__all__ = ["EfficientBackdrop", "efficient_backdrop"]

BatchNormMode = Literal["full", "subset"]
_BN = nn.modules.batchnorm._BatchNorm


def _train_batchnorms(module: nn.Module) -> list[_BN]:
    return [m for m in module.modules() if isinstance(m, _BN) and m.training]


_Stats = dict[int, tuple[Tensor, Tensor, Tensor, int]]


def _channel_view(x: Tensor) -> tuple[list[int], list[int]]:
    """Reduction dims (all but channel dim 1) and the broadcast shape of a per-channel vector."""
    red = [d for d in range(x.ndim) if d != 1]
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    return red, shape


@contextmanager
def _capture_dropped_stats(bns: list[_BN], drop_idx: Tensor, stats: _Stats) -> Iterator[None]:
    """Record, per BatchNorm, the full-batch mean ``c`` and the dropped samples' share of the
    batch moments: ``sum (x_d - c)``, ``sum (x_d - c)^2`` over dropped rows, and the element count
    per channel of the whole batch."""

    def hook(mod: _BN, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach()
        red, shape = _channel_view(x)
        center = x.mean(dim=red)
        xd = x[drop_idx] - center.view(shape)
        stats[id(mod)] = (center, xd.sum(dim=red), (xd * xd).sum(dim=red), x.numel() // x.shape[1])

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _mixed_stats_forward(bn: _BN, center: Tensor, s1: Tensor, s2: Tensor, count: int):
    """Forward for the kept rows: the values of the full-batch mean and biased variance, with the
    gradient of the kept rows' own mean and variance (the kept rows stand in for the dropped
    ones in the statistics' backward, as if the batch were the kept subset)."""

    def forward(x: Tensor) -> Tensor:
        red, shape = _channel_view(x)
        y = x - center.view(shape)
        var_k, shift_k = torch.var_mean(y, dim=red, correction=0)
        with torch.no_grad():
            shift = (y.sum(dim=red) + s1) / count  # full mean - center (0 up to rounding)
            var = (y.pow(2).sum(dim=red) + s2) / count - shift * shift
        shift = shift_k + (shift - shift_k).detach()  # value: full batch; gradient: kept subset
        var = var_k + (var - var_k).detach()
        out = (y - shift.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        if bn.weight is not None:
            out = out * bn.weight.view(shape)
        if bn.bias is not None:
            out = out + bn.bias.view(shape)
        return out

    return forward


@contextmanager
def _full_batch_stats(bns: list[_BN], stats: _Stats) -> Iterator[None]:
    """Run each BatchNorm with :func:`_mixed_stats_forward`; running stats are not touched."""
    try:
        for bn in bns:
            bn.forward = _mixed_stats_forward(bn, *stats[id(bn)])  # type: ignore[method-assign]
        yield
    finally:
        for bn in bns:
            if "forward" in vars(bn):
                del bn.forward


def _assemble(kept: Tensor, dropped: Tensor, keep_idx: Tensor, drop_idx: Tensor) -> Tensor:
    """New ``(B, ...)`` tensor: rows ``kept`` at ``keep_idx``, rows ``dropped`` at ``drop_idx``."""
    order = torch.cat([keep_idx, drop_idx])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat([kept, dropped.to(kept.dtype)])[inverse]


def efficient_backdrop(
    encoder: nn.Module,
    x: Tensor,
    p: float = 0.5,
    *,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    batchnorm: BatchNormMode = "full",
) -> tuple[Tensor, Tensor | None]:
    """Encode a batch with backdrop over samples, building the graph for the kept samples only.

    Args:
        encoder: module mapping ``(B, ...)`` inputs to ``(B, ...)`` latents, one row per sample.
        x: input batch, shape ``(B, ...)``.
        p: probability of dropping each sample in [0, 1] (ignored when ``mask`` is given).
        mask: optional bool keep-mask of shape ``(B,)`` with at least one True.
        generator: optional ``torch.Generator`` for the mask draw.
        batchnorm: how BatchNorm layers in train mode are handled (no effect without them):
            ``"full"``: one no-grad pass over the whole batch gives the dropped latents and the
            batch moments (running stats updated once, as in a plain step); the kept samples are
            re-run with a graph and normalized with the values of the full-batch mean and
            variance, whose gradient is taken as that of the kept samples' own mean and variance
            (the kept samples stand in for the dropped ones, whose graph is not built). Latent
            values equal the plain forward's; only the gradient paths through the dropped
            samples' share of the statistics are estimated (docs/backdrop.md has measurements).
            ``"subset"``: kept and dropped samples are run separately, each normalized with its own
            subset statistics (running stats updated twice); cheaper, but latent values differ.
            In "full" mode the kept samples run twice, so the encoder should be deterministic
            in train mode (no Dropout) for their two results to agree.
    Returns:
        ``(latents, mask)``: latents ``(B, ...)`` whose gradient flows only into kept rows, scaled
        by ``B / |b|_1``; ``mask`` the bool ``(B,)`` keep-mask, or ``None`` when no masking happened
        (``p == 0`` without a mask, or gradients disabled): then latents are ``encoder(x)``.
    """
    if batchnorm not in ("full", "subset"):
        raise ValueError(f"batchnorm must be 'full' or 'subset', got {batchnorm!r}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a non-empty batch dim 0, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    if mask is None:
        p = _check_p(p)
        if p == 0.0 or not torch.is_grad_enabled():
            return encoder(x), None
        mask = sample_mask((batch,), p, generator=generator, device=x.device)
    else:
        if mask.dtype != torch.bool or tuple(mask.shape) != (batch,):
            raise ValueError(
                f"mask must be a bool tensor of shape ({batch},), "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            raise ValueError("mask must keep at least one sample")
        if not torch.is_grad_enabled():
            return encoder(x), mask
        mask = mask.to(x.device)

    keep_idx = torch.nonzero(mask).flatten()
    drop_idx = torch.nonzero(~mask).flatten()
    scale = batch / keep_idx.numel()
    bns = _train_batchnorms(encoder)

    if drop_idx.numel() == 0:
        return encoder(x), mask
    if bns and batchnorm == "full":
        stats: _Stats = {}
        with torch.no_grad(), _capture_dropped_stats(bns, drop_idx, stats):
            full = encoder(x)
        with _full_batch_stats(bns, stats):
            kept = encoder(x[keep_idx])
        return _assemble(scale_gradient(kept, scale), full[drop_idx], keep_idx, drop_idx), mask

    kept = encoder(x[keep_idx])
    with torch.no_grad():
        dropped = encoder(x[drop_idx])
    return _assemble(scale_gradient(kept, scale), dropped, keep_idx, drop_idx), mask


class EfficientBackdrop(nn.Module):
    """Wrap an encoder so that train-mode forwards use :func:`efficient_backdrop` over samples.

    Args:
        encoder: per-sample encoder ``(B, ...) -> (B, ...)``.
        p: probability of dropping each sample in [0, 1].
        generator: optional ``torch.Generator`` for reproducible masks.
        batchnorm: ``"full"`` or ``"subset"``, see :func:`efficient_backdrop`.

    In eval mode it is ``encoder(x)``. The last keep-mask is in ``last_mask`` (shape ``(B,)``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        p: float = 0.5,
        *,
        generator: torch.Generator | None = None,
        batchnorm: BatchNormMode = "full",
    ) -> None:
        super().__init__()
        if batchnorm not in ("full", "subset"):
            raise ValueError(f"batchnorm must be 'full' or 'subset', got {batchnorm!r}")
        self.encoder = encoder
        self.p = _check_p(p)
        self.generator = generator
        self.batchnorm: BatchNormMode = batchnorm
        self.last_mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Latents ``(B, ...)`` with values of ``encoder(x)``; see :func:`efficient_backdrop`."""
        if not self.training:
            return self.encoder(x)
        z, mask = efficient_backdrop(
            self.encoder, x, self.p, generator=self.generator, batchnorm=self.batchnorm
        )
        if mask is not None:
            self.last_mask = mask
        return z

    def extra_repr(self) -> str:
        return f"p={self.p}, batchnorm={self.batchnorm!r}"
