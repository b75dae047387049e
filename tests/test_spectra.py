"""Kernels: spectral densities against textbook covariances, limits and padding."""

import math

import numpy as np
import pytest

from gptextures import spectra


def textbook(kernel, r, ell):
    """Independent closed forms of the kernels (not used by the package)."""
    x = np.asarray(r, dtype=float) / ell
    if kernel == "squared_exponential":
        return np.exp(-0.5 * x**2)
    if kernel == "matern32":
        s = math.sqrt(3) * x
        return (1 + s) * np.exp(-s)
    s = math.sqrt(5) * x
    return (1 + s + s**2 / 3) * np.exp(-s)


def periodised(kernel, shape, ell):
    """The textbook kernel at every integer lag of an H x W torus, wrapped: sum_m k(r + m N)."""
    h, w = shape
    dy = np.arange(h)[:, None]
    dx = np.arange(w)[None, :]
    out = np.zeros(shape)
    for my in (-2, -1, 0, 1):
        for mx in (-2, -1, 0, 1):
            out += textbook(kernel, np.hypot(dy + my * h, dx + mx * w), ell)
    return out


@pytest.mark.parametrize("kernel", spectra.KERNELS)
def test_spectral_density_integrates_to_unit_variance(kernel):
    # int S(f) d^2f = 2 pi int S(f) f df = k(0) = 1
    f = np.linspace(0, 400, 4_000_001)
    total = 2 * math.pi * np.trapezoid(spectra.spectral_density(kernel, f**2, 1.0) * f, f)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kernel", spectra.KERNELS)
@pytest.mark.parametrize("ell", [1.0, 7.3])
def test_correlation_from_spectrum_matches_textbook(kernel, ell):
    r = np.linspace(0, 4 * ell, 17)
    assert np.allclose(spectra.correlation(kernel, r, ell), textbook(kernel, r, ell), atol=1e-5)


@pytest.mark.parametrize("kernel", spectra.KERNELS)
@pytest.mark.parametrize("shape,ell", [((64, 64), 0.7), ((64, 64), 4.5), ((48, 80), 6.3)])
def test_grid_weights_give_exact_periodised_kernel(kernel, shape, ell):
    # The inverse DFT of the aliased weights is the kernel sampled at integer lags, wrapped
    # over the torus: sum_m k(r + m N). Deterministic, so the tolerance is float64 round-off
    # plus the truncated Matern alias tail.
    kp = np.fft.irfft2(spectra.grid_weights(kernel, shape, ell), s=shape)
    expect = periodised(kernel, shape, ell)
    tol = 1e-12 if kernel == "squared_exponential" else 2e-5
    assert np.abs(kp - expect).max() < tol


def test_max_length_scale_rule():
    # k(N/2) = 0.01 for the squared exponential: l = (N/2) / sqrt(2 ln 100) = N / 6.07
    limit = spectra.max_length_scale("squared_exponential", (1024, 1024))
    assert limit == pytest.approx(512 / math.sqrt(2 * math.log(100)), rel=1e-6)
    assert textbook("squared_exponential", 512, limit) == pytest.approx(0.01, rel=1e-5)
    assert spectra.max_length_scale("squared_exponential", (256, 1024)) == pytest.approx(limit / 4)


@pytest.mark.parametrize("kernel", spectra.KERNELS)
def test_padding_makes_wraparound_negligible(kernel):
    pad = spectra.padding(kernel, 10.0)
    assert textbook(kernel, pad, 10.0) <= spectra.PAD_TOLERANCE
    assert textbook(kernel, pad - 1, 10.0) > spectra.PAD_TOLERANCE * 0.5


def test_band_limit_drops_only_negligible_power():
    w = spectra.grid_weights("squared_exponential", (1024, 1024), 80.0)
    ry, rx = spectra.band_limit(w)
    kept = w[: ry + 1, : rx + 1].sum() + w[1024 - ry :, : rx + 1].sum()
    assert ry < 40 and rx < 40  # ~0.1% of the grid
    assert kept / w.sum() > 1 - 1e-9


@pytest.mark.parametrize(
    "value,match",
    [
        (0.0, "finite positive"),
        (-3.0, "finite positive"),
        (float("nan"), "finite positive"),
        (float("inf"), "finite positive"),
        (0.2, "below 0.5 px"),
        (200.0, "too large.*limit is 168.7 px"),
    ],
)
def test_bad_length_scales(value, match):
    with pytest.raises(ValueError, match="length_scale: .*" + match):
        spectra.check_length_scale(value, "squared_exponential", (1024, 1024))


def test_unknown_kernel():
    with pytest.raises(ValueError, match="kernel: unknown kernel 'rbf'.*squared_exponential"):
        spectra.check_kernel("rbf")


def test_distance_table_matches_the_spectral_densities():
    """The tabulated distances where k(r) falls to the wrap and padding tolerances are what
    bisection on the Hankel transform of each spectral density gives."""
    for (kernel, tol), d in spectra._DISTANCES.items():
        assert d == pytest.approx(spectra.distance_where_bisection(kernel, tol), rel=1e-10)
        assert spectra.correlation(kernel, d, 1.0) == pytest.approx(tol, rel=1e-6)
    assert {k for k, _ in spectra._DISTANCES} == set(spectra.KERNELS)
