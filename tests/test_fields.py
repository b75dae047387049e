"""sample_field: covariance, mean and variance against the kernel, within sampling error.

Sampling error of the autocovariance estimator ``C(r) = mean_x f(x) f(x + r)`` of a zero-mean
Gaussian field follows from Isserlis' theorem:
``Var C(r) = (1/N^2) sum_{x,y} [k(x-y)^2 + k(x-y+r) k(x-y-r)]`` (N pixels). Every bound below is
5 standard deviations of the seed-averaged estimator, computed from the textbook kernel.
"""

import math

import numpy as np
import pytest

from gptextures import fields, sample_field, spectra
from tests.test_spectra import periodised, textbook


def draw_many(shape, ell, n, kernel="squared_exponential", periodic=True, seed0=0):
    return np.stack(
        [sample_field(shape, ell, seed=seed0 + i, kernel=kernel, periodic=periodic)
         for i in range(n)]
    ).astype(np.float64)


def periodic_autocov(f):
    """Mean over seeds of C(r) for every lag r on the torus, via FFT."""
    spec = np.fft.rfft2(f)
    return np.fft.irfft2((spec * spec.conj()).real.mean(axis=0), s=f.shape[1:]) / f[0].size


def isserlis_std(kp, lag, n_fields):
    """Std of the seed-averaged periodic autocovariance estimator at ``lag``."""
    n = kp.size
    var = (np.sum(kp**2) + np.sum(np.roll(kp, lag, (0, 1)) * np.roll(kp, (-lag[0], -lag[1]),
                                                                       (0, 1)))) / n
    return math.sqrt(var / n_fields)


CASES = [
    ("squared_exponential", (64, 64), 1.7, 1500),
    ("squared_exponential", (64, 64), 4.5, 1500),
    ("squared_exponential", (64, 64), 8.0, 1500),  # l = N/8: Hermitian columns matter most
    ("squared_exponential", (48, 80), 6.3, 1500),
    ("matern32", (64, 64), 4.5, 1500),
    ("matern52", (64, 64), 4.5, 1500),
]


@pytest.mark.parametrize("kernel,shape,ell,n", CASES)
def test_covariance_matches_kernel_at_lags_0_to_3l(kernel, shape, ell, n):
    f = draw_many(shape, ell, n, kernel)
    assert f.dtype == np.float64 and f.shape == (n, *shape)
    cov = periodic_autocov(f)
    kp = periodised(kernel, shape, ell)
    for r in range(int(math.ceil(3 * ell)) + 1):
        for lag in ((0, r), (r, 0), (r, r)):
            if lag[0] >= shape[0] or lag[1] >= shape[1]:
                continue
            bound = 5 * isserlis_std(kp, lag, n)
            assert abs(cov[lag] - kp[lag]) < bound, (lag, cov[lag], kp[lag], bound)


def test_variance_is_one_and_would_catch_lost_hermitian_power():
    # At l = N/8, independent noise in the self-mirrored columns kx = 0 and W/2 would lose
    # about a sixth of the variance; the bound is far tighter than that.
    shape, ell, n = (64, 64), 8.0, 1500
    f = draw_many(shape, ell, n)
    kp = periodised("squared_exponential", shape, ell)
    bound = 5 * isserlis_std(kp, (0, 0), n)
    assert bound < 0.06
    assert abs(f.var(axis=(1, 2)).mean() + f.mean(axis=(1, 2)).var() - 1) < 2 * bound
    assert abs((f**2).mean() - 1.0) < bound


def test_mean_is_zero_within_the_zero_frequency_fluctuation():
    shape, ell, n = (64, 64), 4.5, 1500
    f = draw_many(shape, ell, n)
    kp = periodised("squared_exponential", shape, ell)
    # Var(spatial mean) = sum_d k(d) / N for one field.
    std = math.sqrt(kp.sum() / kp.size / n)
    assert abs(f.mean()) < 5 * std
    # and the zero-frequency mode is really there (not renormalised away):
    means = f.mean(axis=(1, 2))
    assert means.std() == pytest.approx(math.sqrt(kp.sum() / kp.size), rel=0.1)


def test_non_periodic_has_kernel_covariance_and_no_wraparound():
    shape, ell, n = (64, 64), 6.0, 800
    f = draw_many(shape, ell, n, periodic=False, seed0=10_000)
    h, w = shape
    for r in (0, 3, 6, 12, 18):
        est = (f[:, :, : w - r] * f[:, :, r:]).mean()
        # Exact std of this windowed estimator: pair differences inside an h x (w - r) window.
        dy = np.arange(-(h - 1), h)[:, None]
        dx = np.arange(-(w - r - 1), w - r)[None, :]
        count = (h - np.abs(dy)) * (w - r - np.abs(dx))
        def k(ddx, dy=dy):
            return textbook("squared_exponential", np.hypot(dy, ddx), ell)

        var = np.sum(count * (k(dx) ** 2 + k(dx + r) * k(dx - r))) / (h * (w - r)) ** 2
        assert abs(est - textbook("squared_exponential", r, ell)) < 5 * math.sqrt(var / n)
    # Opposite edges are one pixel apart on a torus but h - 1 apart here: uncorrelated.
    edge = (f[:, 0, :] * f[:, -1, :]).mean()
    assert abs(edge) < 0.05
    per = draw_many(shape, ell, 200, periodic=True)
    assert (per[:, 0, :] * per[:, -1, :]).mean() > 0.8  # k(1) = 0.986 on the torus


def test_padding_rule_and_torus_shape():
    pad = spectra.padding("squared_exponential", 6.0)
    torus = fields.torus_shape((64, 64), pad)
    assert torus[0] >= 64 + pad and torus[1] >= 64 + pad


def test_dtype_shape_and_int_shape():
    f = sample_field(32, 3.0, seed=1)
    assert f.shape == (32, 32) and f.dtype == np.float32 and f.flags.c_contiguous
    g = sample_field((32, 40), 3.0, seed=1, periodic=False)
    assert g.shape == (32, 40) and g.dtype == np.float32 and g.flags.c_contiguous


def test_same_seed_same_bytes_different_seed_differs():
    a = sample_field(64, 5.0, seed=3)
    b = sample_field(64, 5.0, seed=3)
    c = sample_field(64, 5.0, seed=4)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(shape=64, length_scale=-1.0), ValueError, "length_scale"),
        (dict(shape=64, length_scale=float("nan")), ValueError, "length_scale"),
        (dict(shape=64, length_scale=20.0), ValueError, r"length_scale: 20 px is too large.*10.5"),
        (dict(shape=4, length_scale=1.0), ValueError, "shape"),
        (dict(shape=64, length_scale=2.0, kernel="rbf"), ValueError, "kernel"),
        (dict(shape=64, length_scale=2.0, seed=-1), ValueError, "seed"),
        (dict(shape=64, length_scale=2.0, seed=1.5), TypeError, "seed"),
    ],
)
def test_bad_input(kwargs, exc, match):
    kwargs.setdefault("seed", 0)
    with pytest.raises(exc, match=match):
        sample_field(**kwargs)


def test_noise_is_drawn_only_where_the_spectrum_matters():
    """Band-limited sampling: noise only where the weights reach 1e-14 of their maximum (a
    disk inside the band box). For the squared exponential the power beyond that radius is a
    Gaussian tail, a fraction ~1e-14 of the variance; 1e-12 leaves room for the grid."""
    shape, ell = (1024, 1024), 9.5
    plan = fields.field_plan("squared_exponential", shape, ell)
    w = spectra.grid_weights("squared_exponential", shape, ell)  # (H, W // 2 + 1)
    mult = np.full(w.shape, 2.0)
    mult[:, 0] = mult[:, -1] = 1.0  # self-mirrored columns count once on the full grid
    rows = np.r_[0 : plan.ry + 1, shape[0] - plan.n_bottom : shape[0]]
    np.testing.assert_array_equal(plan.mask, w[rows, : plan.rx + 1] >= 1e-14 * w.max())
    kept = np.zeros(w.shape, bool)
    kept[rows, : plan.rx + 1] = plan.mask
    assert (w * mult)[~kept].sum() / (w * mult).sum() < 1e-12
    # a disk (pi / 4 of its box) plus its staircase edge: fewer deviates than the box
    assert plan.noise_count == 2 * plan.mask.sum() < 0.8 * 2 * plan.mask.size
    top, bottom = plan.coefficients(np.random.Generator(np.random.SFC64(5)))
    coef = np.concatenate([top, bottom])
    assert coef[plan.mask].all()
    off = ~plan.mask
    off[plan.ry + 1 :, 0] = False  # column 0's lower half mirrors its upper half
    assert not coef[off].any()
