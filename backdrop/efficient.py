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


@contextmanager
def _capture_batch_stats(bns: list[_BN], stats: dict[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Record each BatchNorm's batch mean and biased variance over its input (per channel)."""

    def hook(mod: _BN, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach()
        red = [d for d in range(x.ndim) if d != 1]
        var, mean = torch.var_mean(x, dim=red, correction=0)
        stats[id(mod)] = (mean, var)

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _frozen_batch_stats(bns: list[_BN], stats: dict[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Make each BatchNorm normalize with the recorded statistics, updating no running stats."""
    saved = [(bn.running_mean, bn.running_var, bn.training) for bn in bns]
    try:
        for bn in bns:
            mean, var = stats[id(bn)]
            bn.running_mean, bn.running_var = mean, var
            bn.training = False
        yield
    finally:
        for bn, (rm, rv, tr) in zip(bns, saved, strict=True):
            bn.running_mean, bn.running_var = rm, rv
            bn.training = tr


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
            ``"full"``: one no-grad pass over the whole batch gives all latents and the batch
            statistics (running stats updated once, as in a plain step); the kept samples are
            re-run with a graph, normalized with those full-batch statistics. Latent values equal
            the plain forward's; the gradient lacks only the terms through the batch statistics.
            ``"subset"``: kept and dropped samples are run separately, each normalized with its own
            subset statistics (running stats updated twice); cheaper, but latent values differ.
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

    if bns and batchnorm == "full":
        stats: dict[int, tuple[Tensor, Tensor]] = {}
        with torch.no_grad(), _capture_batch_stats(bns, stats):
            full = encoder(x)
        if drop_idx.numel() == 0:
            with _frozen_batch_stats(bns, stats):
                return scale_gradient(encoder(x), scale), mask
        with _frozen_batch_stats(bns, stats):
            kept = encoder(x[keep_idx])
        return _assemble(scale_gradient(kept, scale), full[drop_idx], keep_idx, drop_idx), mask

    if drop_idx.numel() == 0:
        return encoder(x), mask
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
