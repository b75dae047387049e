"""Backdrop as an ``nn.Module``: a masking layer active in train mode only (like Dropout)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backdrop.functional import (
    _check_p,
    _draw_mask,
    _normalize_dims,
    apply_mask,
    expand_mask,
)

__all__ = ["Backdrop"]


class Backdrop(nn.Module):
    """Masking layer M_p (paper Eq. 1): identity forward, random cells dropped from the gradient.

    Args:
        p: probability of dropping each cell, in [0, 1). 0 makes the layer an exact no-op.
        dims: dims along which the mask varies; ``(0,)`` samples, ``(-2, -1)`` spatial positions.
        lattice: optional number of cells per masked dim (blocks ``floor(i * S / c)``), e.g.
            ``(4, 4)`` on a ``(B, C, 8, 8)`` map drops 2x2 blocks.
        per_sample: ``None`` (default): an independent mask and Eq. 1 normalization per sample
            unless dim 0 is masked; ``False``: one mask shared by the whole batch.
        generator: optional ``torch.Generator`` for reproducible masks.

    In eval mode, under ``torch.no_grad()``, or when the input does not require grad, the layer
    returns its input unchanged and draws nothing. In train mode the mask is drawn in the forward
    pass and applied in the matching backward pass; :meth:`kept_cells` and :meth:`kept_map`
    return it.
    """

    def __init__(
        self,
        p: float,
        *,
        dims: Sequence[int],
        lattice: Sequence[int] | None = None,
        per_sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.p = _check_p(p)
        self.dims = (dims,) if isinstance(dims, int) else tuple(dims)
        self.lattice = None if lattice is None else tuple(lattice)
        if per_sample is not None and not isinstance(per_sample, bool):
            raise TypeError(f"per_sample must be a bool or None, got {per_sample!r}")
        self.per_sample = per_sample
        self.generator = generator
        # Validate dims/lattice against the smallest input they could apply to (one extra
        # leading dim for the sample dim when per sample); mixed signs such as (0, -2, -1) need
        # a few more dims to be distinct.
        lowest = max(d + 1 if d >= 0 else -d for d in self.dims) + int(bool(self.per_sample))
        errors = []
        for ndim in range(lowest, lowest + len(self.dims) + 1):
            try:
                _normalize_dims(ndim, self.dims, self.lattice, self.per_sample)
                break
            except ValueError as err:
                errors.append(err)
        else:
            raise errors[-1]
        self.last_mask: Tensor | None = None
        self._last_args: tuple | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` (same values); in train mode the backward pass masks the gradient."""
        if not self.training or self.p == 0.0:
            return x
        if not (torch.is_grad_enabled() and x.requires_grad):
            _draw_mask(x.shape, 0.0, self.dims, self.lattice, self.per_sample, None, None)
            return x
        mask = self.draw_mask(x.shape, x.device)
        nd, lat = _normalize_dims(x.ndim, self.dims, self.lattice, self.per_sample)
        return apply_mask(x, mask, dims=nd, lattice=lat, per_sample=self._last_args[1])

    def draw_mask(self, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Draw and record the keep-mask a train-mode forward on an input of ``shape`` draws.

        Used by the forward and by the spatial compute-saving path (which draws the masks of a
        network before running it), so both consume the generator identically. Returns the bool
        cell mask (as :meth:`kept_cells`); ``p`` must be > 0.
        """
        if self.p == 0.0:
            raise ValueError("draw_mask needs p > 0 (a p = 0 layer draws no mask)")
        mask, _, _, ps = _draw_mask(
            shape, self.p, self.dims, self.lattice, self.per_sample, self.generator, device
        )
        self.last_mask = mask
        self._last_args = (torch.Size(shape), ps)
        return mask

    def kept_cells(self) -> Tensor | None:
        """Bool mask of the cells kept by the last masked forward (the one its backward uses).

        Shape: the lattice (or the sizes of the masked dims), with a leading batch dim when
        per sample, e.g. ``(B, 4, 4)``; ``None`` if no mask has been drawn yet.
        """
        return self.last_mask

    def kept_map(self) -> Tensor | None:
        """The last mask at the input's resolution: bool, True where the gradient was kept.

        Shape: the input's sizes along the masked dims (and dim 0 when per sample), 1 elsewhere,
        e.g. ``(B, 1, H, W)`` for ``dims=(-2, -1)``: ``kept_map()[n, 0]`` is the paper's mask
        picture for sample ``n``. ``None`` if no mask has been drawn yet.
        """
        if self.last_mask is None or self._last_args is None:
            return None
        shape, ps = self._last_args
        return expand_mask(self.last_mask, shape, self.dims, self.lattice, per_sample=ps)

    def extra_repr(self) -> str:
        return f"p={self.p}, dims={self.dims}, lattice={self.lattice}, per_sample={self.per_sample}"
