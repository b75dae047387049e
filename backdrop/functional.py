"""Backdrop masking as a function: identity forward, masked and renormalized backward (paper Eq. 1).

Vocabulary used throughout the package:

* masked dims: the dims of ``x`` along which the mask varies (``dims``). Along every other dim the
  mask is broadcast, so e.g. ``dims=(-2, -1)`` drops the same spatial positions in every channel.
* cells: the units that are kept or dropped. Without a lattice a cell is one index along the masked
  dims; with ``lattice=(h, w)`` each masked dim of size ``S`` is cut into ``c`` nearly equal blocks
  with boundaries ``floor(i * S / c)`` for ``i = 0..c`` (block sizes differ by at most one; the
  first blocks are the smaller ones when ``c`` does not divide ``S``).
* per sample (the default of :func:`backdrop` whenever dim 0 is not masked): an independent mask
  ``b_n`` is drawn for each index ``n`` of dim 0 and Eq. 1 is applied per sample: N is the number
  of cells of one sample, |b_n|_1 the number kept in sample ``n``, and sample ``n``'s gradient is
  multiplied by ``b_n * N / |b_n|_1``. With ``per_sample=False`` (shared) one mask ``b`` is drawn
  over all cells of the masked dims, N is the number of those cells and |b|_1 the number kept, and
  the whole gradient is multiplied by ``b * N / |b|_1``; it is shared by the samples unless dim 0
  is one of ``dims`` (then the mask already varies over samples and is always of this kind).
* at least one cell is always kept (per sample when ``per_sample=True``): if the Bernoulli draw
  drops everything, one cell chosen uniformly at random is kept.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "apply_mask",
    "backdrop",
    "cell_bounds",
    "expand_mask",
    "mask_weights",
    "sample_mask",
    "scale_gradient",
]


def _check_p(p: float) -> float:
    """``p`` as a float, or an error naming p, its value and the allowed range [0, 1).

    Any real scalar is accepted: Python ``int``/``float``, numpy scalars (``np.float32``, ...) and
    0-d numpy arrays or torch tensors of a real dtype. Bools (``True``, ``np.bool_``, bool
    tensors) are refused: a flag is almost certainly a mistake for a probability.
    """
    if isinstance(p, torch.Tensor):
        if p.ndim != 0 or p.dtype == torch.bool or p.is_complex():
            raise TypeError(
                f"p must be a real scalar in [0, 1) (a 0-d tensor of a real dtype is fine), "
                f"got a {p.dtype} tensor of shape {tuple(p.shape)}"
            )
        value = float(p)
    elif isinstance(p, numbers.Real) and not isinstance(p, bool):
        value = float(p)
    elif getattr(p, "ndim", None) == 0 and getattr(getattr(p, "dtype", None), "kind", "") in (
        "i",
        "u",
        "f",
    ):  # a 0-d numpy array (numpy is not imported here)
        value = float(p)
    else:
        raise TypeError(f"p must be a float in [0, 1), got {type(p).__name__} {p!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"p must be in [0, 1) (probability of dropping a cell; 1 would drop every "
            f"gradient), got p={p!r}"
        )
    return value


def _check_batch(shape: Sequence[int]) -> None:
    """An error that says the batch is empty when dim 0 has size 0 (nothing to mask)."""
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(
            f"x has an empty batch (dim 0 has size 0, shape {tuple(shape)}): backdrop needs at "
            f"least one sample to draw a mask over"
        )


def _resolve_per_sample(per_sample: bool | None, norm_dims: tuple[int, ...]) -> bool:
    """Default (``None``): per sample unless dim 0 is masked (then the mask varies over samples)."""
    if per_sample is None:
        return 0 not in norm_dims
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be a bool or None, got {per_sample!r}")
    return per_sample


def _normalize_dims(
    ndim: int, dims: Sequence[int], lattice: Sequence[int] | None, per_sample: bool | None
) -> tuple[tuple[int, ...], tuple[int | None, ...]]:
    """Return masked dims as sorted non-negative ints and the lattice entry aligned to each."""
    if isinstance(dims, int):
        dims = (dims,)
    dims = tuple(dims)
    if len(dims) == 0:
        raise ValueError("dims must name at least one dim to mask, got ()")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"dims must be ints, got {dims!r}")
        if not -ndim <= d < ndim:
            raise ValueError(
                f"dims entry {d} out of range for a {ndim}-d input: allowed [{-ndim}, {ndim - 1}]"
            )
    norm = tuple(d % ndim for d in dims)
    if len(set(norm)) != len(norm):
        raise ValueError(f"dims must be distinct, got {dims!r} (= {norm} for a {ndim}-d input)")
    if per_sample is True and 0 in norm:
        raise ValueError(
            f"per_sample=True masks each index of dim 0 separately, so dims must not "
            f"contain dim 0; got dims={dims!r}"
        )
    if lattice is None:
        lat: tuple[int | None, ...] = (None,) * len(norm)
    else:
        if isinstance(lattice, int):
            lattice = (lattice,)
        lattice = tuple(lattice)
        if len(lattice) != len(norm):
            raise ValueError(
                f"lattice must have one entry per masked dim: dims={dims!r} but lattice={lattice!r}"
            )
        for c in lattice:
            if c is None:  # one cell per index along this dim
                continue
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(
                    f"lattice entries must be ints >= 1 (cells per masked dim), "
                    f"got lattice={lattice!r}"
                )
        lat = lattice
    order = sorted(range(len(norm)), key=lambda i: norm[i])
    return tuple(norm[i] for i in order), tuple(lat[i] for i in order)


def cell_bounds(size: int, cells: int) -> list[int]:
    """Block boundaries of ``cells`` nearly equal blocks over ``size`` indices.

    Args:
        size: number of indices along the dim (e.g. feature-map height, in positions).
        cells: number of lattice cells along the dim, ``1 <= cells <= size``.
    Returns:
        ``cells + 1`` ints ``floor(i * size / cells)``; cell ``i`` covers ``[b[i], b[i+1])``.
    """
    if not 1 <= cells <= size:
        raise ValueError(
            f"lattice cells along a dim must be in [1, {size}] (the dim's size: a lattice cannot "
            f"be finer than the map), got {cells}"
        )
    return [(i * size) // cells for i in range(cells + 1)]


def _cells_shape(
    shape: torch.Size, dims: tuple[int, ...], lat: tuple[int | None, ...]
) -> list[int]:
    cells = []
    for d, c in zip(dims, lat, strict=True):
        if c is None:
            cells.append(shape[d])
        else:
            cell_bounds(shape[d], c)  # validates c <= size
            cells.append(c)
    return cells


def sample_mask(
    shape: Sequence[int],
    p: float,
    *,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw a Bernoulli keep-mask over cells, keeping at least one cell.

    Args:
        shape: cell shape. With ``per_sample=True`` the first entry is the number of samples and at
            least one cell is kept in each sample; otherwise at least one cell overall.
        p: probability of dropping each cell, in [0, 1).
        generator: optional ``torch.Generator``; the draws are made on its device.
        device: device of the returned mask (default: the generator's device, else CPU).
    Returns:
        bool tensor of ``shape``; True = cell kept (gradient flows).
    """
    p = _check_p(p)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be non-empty with entries >= 1, got {shape!r}")
    draw_device = generator.device if generator is not None else (device or "cpu")
    rows = shape[0] if per_sample else 1
    cols = math.prod(shape) // rows
    flat = torch.rand((rows, cols), generator=generator, device=draw_device) >= p
    # Keep one uniformly chosen cell in every row whose draw dropped everything.
    fallback = torch.randint(flat.shape[1], (rows,), generator=generator, device=draw_device)
    empty = ~flat.any(dim=1)
    flat[empty, fallback[empty]] = True
    mask = flat.reshape(shape)
    return mask if device is None else mask.to(device)


def mask_weights(mask: Tensor, *, per_sample: bool = False) -> Tensor:
    """Gradient weights ``b * N / |b|_1`` of a keep-mask (Eq. 1), float32, same shape as ``mask``.

    With ``per_sample=True`` the normalization is done separately for each index of dim 0.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    m = mask.to(torch.float32)
    if per_sample:
        flat = m.reshape(m.shape[0], -1)
        kept = flat.sum(dim=1, keepdim=True)
        if bool((kept == 0).any()):
            raise ValueError("mask must keep at least one cell per sample (per_sample=True)")
        return (flat * (flat.shape[1] / kept)).reshape(m.shape)
    kept = m.sum()
    if float(kept) == 0:
        raise ValueError("mask must keep at least one cell")
    return m * (m.numel() / kept)


def expand_mask(
    cells: Tensor,
    shape: Sequence[int],
    dims: Sequence[int],
    lattice: Sequence[int] | None = None,
    *,
    per_sample: bool = False,
) -> Tensor:
    """Expand a per-cell tensor to a tensor broadcastable against an input of ``shape``.

    Args:
        cells: per-cell values, shape = cell shape (``(B, *lattice)`` when ``per_sample``).
        shape: shape of the masked input.
        dims, lattice, per_sample: as in :func:`backdrop`.
    Returns:
        tensor with ``len(shape)`` dims: the full size along masked dims (and dim 0 when
        ``per_sample``), 1 elsewhere.
    """
    shape = torch.Size(shape)
    ndim = len(shape)
    nd, lat = _normalize_dims(ndim, dims, lattice, per_sample)
    expected = ([shape[0]] if per_sample else []) + _cells_shape(shape, nd, lat)
    if list(cells.shape) != expected:
        raise ValueError(
            f"mask has shape {tuple(cells.shape)}, expected {tuple(expected)} "
            f"for input {tuple(shape)}"
        )
    out = cells
    offset = 1 if per_sample else 0
    for i, (d, c) in enumerate(zip(nd, lat, strict=True)):
        if c is not None and c != shape[d]:
            b = cell_bounds(shape[d], c)
            sizes = torch.tensor([b[j + 1] - b[j] for j in range(c)], device=out.device)
            out = torch.repeat_interleave(out, sizes, dim=i + offset)
    all_dims = ((0,) if per_sample else ()) + nd
    view = [1] * ndim
    for d in all_dims:
        view[d] = shape[d]
    return out.reshape(view)


class _MaskGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a broadcastable weight tensor."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return grad * weight.to(device=grad.device, dtype=grad.dtype), None


def scale_gradient(x: Tensor, scale: float | Tensor) -> Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back into ``x`` by ``scale``.

    ``scale`` is a number or a tensor broadcastable against ``x`` (e.g. ``(B, 1, 1, 1)``).
    """
    w = scale if isinstance(scale, Tensor) else torch.tensor(float(scale))
    return _MaskGrad.apply(x, w.detach())


def apply_mask(
    x: Tensor,
    mask: Tensor,
    *,
    dims: Sequence[int],
    lattice: Sequence[int] | None = None,
    per_sample: bool | None = None,
) -> Tensor:
    """Backdrop with a given keep-mask: identity forward, gradient times ``mask * N / |b|_1``.

    Args:
        x: input of any shape, e.g. ``(B, C, H, W)``.
        mask: bool keep-mask of the cell shape (``lattice`` or the sizes of ``dims``; with a
            leading ``B`` when per sample), e.g. from :func:`sample_mask`.
        dims, lattice: see :func:`backdrop`.
        per_sample: whether ``mask`` has a leading per-sample dim; ``None`` infers it from
            ``mask.ndim`` (one more dim than the masked dims = per sample).
    Returns:
        a view of ``x`` (same values). Do not modify it in place: autograd raises an error.
    """
    if per_sample is None:
        n_dims = 1 if isinstance(dims, int) else len(tuple(dims))
        per_sample = mask.ndim == n_dims + 1
    weights = mask_weights(mask, per_sample=per_sample)
    w = expand_mask(weights, x.shape, dims, lattice, per_sample=per_sample)
    return _MaskGrad.apply(x, w.to(x.device))


def backdrop(
    x: Tensor,
    p: float,
    *,
    dims: Sequence[int],
    lattice: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    per_sample: bool | None = None,
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor | None]:
    """Backdrop masking layer M_p of paper Eq. 1: forward is the identity, backward drops cells.

    Args:
        x: input tensor, e.g. latents ``(B, D)`` or feature maps ``(B, C, H, W)``.
        p: probability of dropping each cell, in [0, 1). ``p == 0`` returns ``x`` itself (plain
            gradient, no random draw).
        dims: dims along which the mask varies: ``(0,)`` masks samples, ``(-2, -1)`` spatial
            positions (a mask per sample by default), ``(0, -2, -1)`` both jointly.
        lattice: optional number of cells per masked dim, e.g. ``(4, 4)``; each cell covers a block
            of positions with boundaries ``floor(i * S / c)``. ``None``: one cell per index.
        generator: optional ``torch.Generator`` for reproducible masks.
        per_sample: ``None`` (default): an independent mask per index of dim 0, normalized per
            sample, unless dim 0 is in ``dims`` (then one mask over all masked cells).
            ``False``: one mask shared by all samples of the batch. ``True``: per sample
            (an error when dim 0 is in ``dims``).
        return_mask: also return the bool cell mask that was used (``None`` when none was drawn).
    Returns:
        ``x`` (same values; a view when masked), or ``(x, mask)`` with ``return_mask``. The mask
        has the cell shape, with a leading ``B`` when per sample: e.g. ``(B, 4, 4)``.

    No mask is drawn when ``p == 0``, gradients are disabled, or ``x`` does not require grad.
    The mask is drawn on the generator's device and moved to ``x``'s device.
    """
    p = _check_p(p)
    if p == 0.0 or not (torch.is_grad_enabled() and x.requires_grad):
        _draw_mask(x.shape, 0.0, dims, lattice, per_sample, None, None)  # validates only
        return (x, None) if return_mask else x
    mask, nd, lat, ps = _draw_mask(x.shape, p, dims, lattice, per_sample, generator, x.device)
    out = apply_mask(x, mask, dims=nd, lattice=lat, per_sample=ps)
    return (out, mask) if return_mask else out


def _draw_mask(
    shape: Sequence[int],
    p: float,
    dims: Sequence[int],
    lattice: Sequence[int] | None,
    per_sample: bool | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> tuple[Tensor | None, tuple[int, ...], tuple[int | None, ...], bool]:
    """Validate ``dims``/``lattice`` for an input of ``shape`` and draw the keep-mask (``p > 0``).

    The one place where masks are drawn: :func:`backdrop`, :class:`~backdrop.Backdrop` and the
    spatial compute-saving path call it with the same arguments, so a seeded generator gives
    the same masks whichever path runs. Returns ``(mask or None, dims, lattice, per_sample)``
    with dims normalized and sorted.
    """
    shape = torch.Size(shape)
    nd, lat = _normalize_dims(len(shape), dims, lattice, per_sample)
    ps = _resolve_per_sample(per_sample, nd)
    if p == 0.0:
        _cells_shape(shape, nd, lat)  # validates the lattice against the input
        return None, nd, lat, ps
    _check_batch(shape)
    cells = ([shape[0]] if ps else []) + _cells_shape(shape, nd, lat)
    mask = sample_mask(cells, p, per_sample=ps, generator=generator, device=device)
    return mask, nd, lat, ps
