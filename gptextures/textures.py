"""A whole multi-level image: one field per level, mixed (``sum`` or ``product``), normalised.

Every level draws an independent unit-variance field at its chosen length scale from the child
seed ``(seed, level)``; each field is normalised per sample to mean 0 and standard deviation 1
(as in the authors' dataset), the fields are mixed, and the image is normalised to mean 0, std 1.

- ``sum``: ``x = sum_i weight_i * g_i``. Periodic sums never leave Fourier space: mean removal
  is zeroing the DC term, the per-sample standard deviation comes from Parseval's theorem over
  the band-limited coefficients, and one inverse FFT makes the image (linearity).
- ``product``: the level with the smallest maximum length scale is the carrier ``g_c``; every
  other level modulates its local amplitude: ``x = g_c * exp(sum_m weight_m * g_m)`` (large
  blobs that contain small blobs). The carrier's weight has no effect after normalisation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import fft as _fft
from . import seeds as _seeds
from . import spectra
from .fields import FieldPlan, draw_field, field_plan, overlap_dot, torus_shape
from .spec import TextureSpec


def _torus(spec: TextureSpec) -> tuple[int, int]:
    if spec.periodic:
        return spec.size
    longest = max(max(lv.length_scales) for lv in spec.levels)
    return torus_shape(spec.size, spectra.padding(spec.kernel, longest))


@lru_cache(maxsize=256)
def _plans(spec: TextureSpec, class_index: int) -> tuple[FieldPlan, ...]:
    torus = _torus(spec)
    return tuple(field_plan(spec.kernel, torus, ell) for ell in spec.length_scales(class_index))


@lru_cache(maxsize=64)
def _band_columns(spec: TextureSpec) -> int:
    """Spectrum columns every class of a texture fits in: one FFT plan (and cache) per texture."""
    torus = _torus(spec)
    return 1 + max(
        field_plan(spec.kernel, torus, ell).rx for lv in spec.levels for ell in lv.length_scales
    )


def carrier_level(spec: TextureSpec) -> int:
    """Index of the carrier level of a ``product`` mix (smallest maximum length scale)."""
    return min(range(spec.depth), key=lambda i: max(spec.levels[i].length_scales))


def _level_rng(seed: int, level: int) -> np.random.Generator:
    return _seeds.rng(_seeds.level_seed_sequence(seed, level))


def _check_render_args(spec: TextureSpec, class_index: int, seed: int) -> None:
    if not isinstance(spec, TextureSpec):
        raise TypeError(f"texture_spec: expected a TextureSpec, got {type(spec).__name__}")
    spec.level_labels(class_index)  # validates the range
    _seeds.check_seed(seed)


def render(
    texture_spec: TextureSpec,
    class_index: int,
    *,
    seed: int,
    threads: int = 1,
    backend: str | None = None,
) -> np.ndarray:
    """One image of a class.

    Args:
        texture_spec: the :class:`TextureSpec`.
        class_index: class in ``[0, texture_spec.num_classes)``.
        seed: int in ``[0, 2**63 - 1]``.
        threads: FFT threads (bytes do not depend on it with the default backends).
        backend: FFT backend, default the fastest installed.
    Returns:
        float32 ``(H, W)`` with mean 0 and standard deviation 1 (to float32 precision).
    """
    _check_render_args(texture_spec, class_index, seed)
    plans = _plans(texture_spec, class_index)
    if texture_spec.mix == "sum" and texture_spec.periodic:
        return _render_sum_fourier(texture_spec, plans, seed, threads, backend)
    fields = _normalised_fields(texture_spec, plans, seed, threads, backend)
    return _mix_real(texture_spec, fields)


def render_components(
    texture_spec: TextureSpec, class_index: int, *, seed: int, threads: int = 1,
    backend: str | None = None,
) -> dict[str, np.ndarray]:
    """The per-sample normalised field of each level (what :func:`render` mixes).

    Returns:
        level name -> float32 ``(H, W)`` with mean 0 and std 1. Mixing them as described in
        the module docstring gives ``render``'s image up to float rounding.
    """
    _check_render_args(texture_spec, class_index, seed)
    plans = _plans(texture_spec, class_index)
    fields = _normalised_fields(texture_spec, plans, seed, threads, backend)
    return {lv.name: f.astype(np.float32) for lv, f in zip(texture_spec.levels, fields)}


def _render_sum_fourier(spec: TextureSpec, plans: tuple[FieldPlan, ...], seed: int, threads: int,
                        backend: str | None) -> np.ndarray:
    h, w = spec.size
    levels = []  # (plan, (top, bottom), factor to a unit-variance field x the level's weight)
    power = 0.0  # of the mix: sum of the levels' powers plus their cross terms (Parseval)
    for i, (lv, plan) in enumerate(zip(spec.levels, plans)):
        top, bottom = plan.coefficients(_level_rng(seed, i))
        top[0, 0] = 0.0  # per-sample mean removal
        p = plan.power(top, bottom)
        s = lv.weight * h * w / math.sqrt(p)  # unit std per level, then weighted
        power += s * s * p
        for other, blocks, s_other in levels:
            power += 2.0 * s * s_other * overlap_dot(plan, (top, bottom), other, blocks)
        levels.append((plan, (top, bottom), s))
    # Unit standard deviation of the image, with the inverse FFT's 1 / (H W) folded in.
    scale = 1.0 / math.sqrt(power)
    spectrum = _fft.spectrum_buffer((h, w), _band_columns(spec), backend)
    for plan, (top, bottom), s in levels:
        plan.place(spectrum, top, bottom, s * scale, add=True)
    return _fft.irfft2(spectrum, (h, w), threads=threads, backend=backend, normalise=False)


def _normalised_fields(spec: TextureSpec, plans: tuple[FieldPlan, ...], seed: int, threads: int,
                       backend: str | None) -> list[np.ndarray]:
    fields = []
    for i, plan in enumerate(plans):
        f = draw_field(plan, _level_rng(seed, i), spec.size, threads=threads, backend=backend)
        f = f.astype(np.float64)
        f -= f.mean()
        f /= f.std()
        fields.append(f)
    return fields


def _mix_real(spec: TextureSpec, fields: list[np.ndarray]) -> np.ndarray:
    if spec.mix == "sum":
        x = sum(lv.weight * f for lv, f in zip(spec.levels, fields))
    else:
        c = carrier_level(spec)
        log_env = sum(
            lv.weight * f for i, (lv, f) in enumerate(zip(spec.levels, fields)) if i != c
        )
        x = fields[c] * np.exp(log_env)
    x = x - x.mean()
    x /= x.std()
    return x.astype(np.float32)
