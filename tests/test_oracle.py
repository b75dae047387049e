"""Likelihood oracle against a dense-covariance computation; calibration; spectral baseline."""

from __future__ import annotations

import numpy as np
import pytest

from gptextures import DatasetSpec, Level, TextureSpec, labels, presets, render
from gptextures.evaluation import Evaluator
from gptextures.fields import sample_field
from gptextures.oracle import LikelihoodOracle
from gptextures.spectra import grid_weights
from gptextures.spectral_baseline import (
    POWER_FLOOR,
    SpectralBaseline,
    fit_logistic,
    radial_log_power,
)

SMALL = TextureSpec(16, (Level("a", (0.6, 0.9)), Level("b", (1.2, 1.5), weight=0.7)))


def _periodic_cov(n: int, ell: float) -> np.ndarray:
    """Covariance of a periodic squared-exponential field on an n x n torus (pixel space)."""
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    d = pos[:, None, :] - pos[None, :, :]
    k = np.zeros((n * n, n * n))
    for my in range(-4, 5):
        for mx in range(-4, 5):
            r2 = (d[..., 0] + my * n) ** 2 + (d[..., 1] + mx * n) ** 2
            k += np.exp(-r2 / (2 * ell**2))
    return k


def _dense_loglik(texture: TextureSpec, images: list[np.ndarray], floor: float) -> np.ndarray:
    """Angular central Gaussian log-density of mean-removed images, by dense linear algebra:
    ``-1/2 log det S_c - (M/2) log(z' S_c^-1 z)`` on the zero-mean subspace (``M = H W - 1``)."""
    n = texture.size[0]
    npix = n * n
    j = np.eye(npix) - 1.0 / npix
    u = np.linalg.qr(j)[0][:, : npix - 1]  # orthonormal basis of the zero-mean subspace
    zs = [u.T @ x.ravel().astype(np.float64) for x in images]
    total = sum(lv.weight**2 for lv in texture.levels)
    level_cov = {}
    out = np.empty((len(images), texture.num_classes))
    for c in range(texture.num_classes):
        sigma = floor * np.eye(npix)
        for lv, ell in zip(texture.levels, texture.length_scales(c)):
            if ell not in level_cov:
                k = j @ _periodic_cov(n, ell) @ j
                level_cov[ell] = k / (np.trace(k) / npix)
            sigma += (lv.weight**2 / total) * level_cov[ell]
        s = u.T @ sigma @ u
        _, logdet = np.linalg.slogdet(s)
        for b, z in enumerate(zs):
            out[b, c] = -0.5 * logdet - 0.5 * (npix - 1) * np.log(z @ np.linalg.solve(s, z))
    return out


def test_matches_dense_angular_gaussian():
    floor = 1e-6
    oracle = LikelihoodOracle(SMALL, noise_floor=floor, min_snr=0)
    assert oracle.dof == 16 * 16 - 1
    images = [render(SMALL, seed % SMALL.num_classes, seed=seed) for seed in range(3)]
    fast = oracle.log_likelihood(np.stack(images))
    dense = _dense_loglik(SMALL, images, floor)
    # Equal up to one constant per image shared by the classes.
    diff = (fast - fast[:, :1]) - (dense - dense[:, :1])
    assert np.abs(diff).max() < 1e-6 * np.abs(dense - dense[:, :1]).max() + 1e-8
    assert np.abs(dense - dense[:, :1]).max() > 1.0  # the classes are told apart


def test_shapes_and_posterior():
    oracle = LikelihoodOracle(presets.get("tiny"))
    x = np.stack([presets.get("tiny").sample("test", i).image for i in range(4)])
    a = oracle.log_likelihood(x)
    np.testing.assert_array_equal(oracle.log_likelihood(x.astype(np.float64)), a)
    assert a.shape == (4, 4) and oracle.log_likelihood(x[0]).shape == (4,)
    p = oracle.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(oracle.predict(x), a.argmax(1))


def test_solves_golkar2018_mini():
    spec = presets.get("golkar2018-mini")
    x = np.stack([spec.sample("test", i).image for i in range(20)])
    pred = LikelihoodOracle(spec).predict(x)
    # Measured: 200/200 fresh draws right (benchmarks/results/oracle_check.json).
    np.testing.assert_array_equal(pred, np.arange(20) % 4)


def _model_image(t: TextureSpec, c: int, seed: int, noise: float) -> np.ndarray:
    """A draw from exactly the oracle's model: levels scaled to unit variance without the mean
    (``1 - w_0 / N``), weighted, summed, plus white noise of variance ``noise``."""
    n = t.size[0] * t.size[1]
    total = np.sqrt(sum(lv.weight**2 for lv in t.levels))
    x = np.sqrt(noise) * np.random.default_rng(seed).normal(size=t.size)
    for k, (lv, ell) in enumerate(zip(t.levels, t.length_scales(c))):
        f = sample_field(t.size, ell, seed=seed * 16 + k).astype(np.float64)
        x += lv.weight / total * f / np.sqrt(1 - grid_weights(t.kernel, t.size, ell)[0, 0] / n)
    return x


def test_calibrated_on_its_own_model():
    """On images from exactly its model (floor included, as white noise) the oracle is the Bayes
    posterior: the mean probability of its prediction equals its accuracy (3 standard errors)."""
    t = presets.get("tiny").texture
    floor = 1e-6
    oracle = LikelihoodOracle(t, noise_floor=floor, min_snr=0)
    n = 400
    y = np.arange(n) % t.num_classes
    x = np.stack([_model_image(t, int(c), 7 * 10**6 + i, floor) for i, c in enumerate(y)])
    p = oracle.predict_proba(x)
    acc = np.mean(p.argmax(1) == y)
    conf = p.max(1).mean()
    assert 0.6 < acc < 0.99  # an informative, not trivial, check
    assert abs(conf - acc) < 3 * np.sqrt(acc * (1 - acc) / n)
    # The defaults (rounding floor, modes below 1e8 x floor left out) on the same images
    # without the added noise: as accurate, within sampling error.
    x0 = np.stack([_model_image(t, int(c), 7 * 10**6 + i, 0.0) for i, c in enumerate(y)])
    acc0 = np.mean(LikelihoodOracle(t).predict(x0) == y)
    assert abs(acc0 - acc) < 3 * np.sqrt(2 * acc * (1 - acc) / n)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"noise_floor": 0.0}, ValueError, "noise_floor: must be finite and > 0"),
    ({"noise_floor": float("nan")}, ValueError, "noise_floor"),
    ({"min_snr": -1.0}, ValueError, "min_snr: must be finite and >= 0"),
    ({"min_snr": 1e300}, ValueError, "leaves out every frequency"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LikelihoodOracle(presets.get("tiny"), **kwargs)


def test_unsupported_textures_and_images():
    lv = (Level("s", (1.0, 2.0)), Level("l", (4.0, 6.0)))
    with pytest.raises(ValueError, match="mix='sum'"):
        LikelihoodOracle(TextureSpec(64, lv, mix="product"))
    with pytest.raises(ValueError, match="periodic=True"):
        LikelihoodOracle(TextureSpec(64, lv, periodic=False))
    with pytest.raises(TypeError, match="TextureSpec or DatasetSpec"):
        LikelihoodOracle("tiny")
    oracle = LikelihoodOracle(TextureSpec(64, lv))
    with pytest.raises(ValueError, match=r"expected shape \(B, 64, 64\)"):
        oracle.log_likelihood(np.zeros((2, 32, 32)))
    with pytest.raises(TypeError, match="float array"):
        oracle.log_likelihood(np.zeros((64, 64), dtype=np.int32))
    bad = np.zeros((2, 64, 64))
    bad[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\]: contains NaN"):
        oracle.log_likelihood(bad)


# ---- spectral baseline ---------------------------------------------------------------------

def test_fit_logistic_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, 60)
    w = fit_logistic(x, y, 3, c=0.7)
    z = np.hstack([x, np.ones((60, 1))]) @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = sklearn.LogisticRegression(C=0.7, tol=1e-12, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(p, ref.predict_proba(x), atol=1e-4)


def test_radial_log_power_of_white_noise():
    rng = np.random.default_rng(1)
    sigma2 = 2.5
    x = rng.normal(scale=np.sqrt(sigma2), size=(8, 128, 128))
    f = radial_log_power(x, n_bins=8)
    # E|X_k|^2 / N = sigma^2 for white noise; each ring averages >= ~100 modes x 8 images.
    assert f.shape == (8, 8)
    np.testing.assert_allclose(f.mean(0), np.log(sigma2), atol=0.15)


def test_spectral_baseline_is_a_product_of_levels():
    spec = DatasetSpec("s", "1", TextureSpec(32, (Level("a", (1.0, 2.0)),
                                                  Level("b", (3.0, 5.0)))),
                       splits={"train": 3, "test": 2}, seed=4)
    tr = np.stack([spec.sample("train", i).image for i in range(12)])
    te = np.stack([spec.sample("test", i).image for i in range(8)])
    model = SpectralBaseline(spec, n_bins=8)
    with pytest.raises(ValueError, match="call fit"):
        model.predict_proba(te)
    model.fit(tr, np.arange(12) % 4)
    p = model.predict_proba(te)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-12)
    table = labels.decode_array(np.arange(4), (2, 2))
    for j, pl in enumerate(model.level_proba(te)):
        marg = np.stack([p[:, table[:, j] == a].sum(1) for a in range(2)], axis=1)
        np.testing.assert_allclose(marg, pl, rtol=1e-10)
    assert model.num_params == 2 * (8 + 1) * 2
    ev = Evaluator(spec)
    assert ev.evaluate(y_true=ev.true_labels(), y_pred=p).count == 8


def test_radial_log_power_ignores_float32_rounding_above_the_band():
    """Above the generator's band limit an image holds only rounding noise; the features must
    not see it (it depends on the FFT plan, not on the texture)."""
    spec = TextureSpec(128, (Level("a", (3.0, 3.5)), Level("b", (12.0, 16.0))))
    x = render(spec, 1, seed=3).astype(np.float64)
    rng = np.random.default_rng(0)
    # A different rounding of the same image: white noise at float32's relative precision.
    y = x + rng.standard_normal(x.shape) * 6e-8
    fx, fy = radial_log_power(x, 16), radial_log_power(y, 16)
    floor = np.log(POWER_FLOOR * x.var())
    high = fx <= floor + 1e-9
    assert high.sum() >= 3  # l = 3.5 px: the outer rings are below the floor
    np.testing.assert_allclose(fy[high], fx[high], atol=1e-6)
    np.testing.assert_allclose(fy, fx, atol=1e-3)
    # Without the floor the same perturbation moves the outermost rings by tenths of a nat
    # (measured 0.33): features a one-shot classifier would happily fit.
    raw_x, raw_y = radial_log_power(x, 16, floor=0), radial_log_power(y, 16, floor=0)
    assert np.abs(raw_y - raw_x)[high].max() > 0.1


def test_spectral_baseline_is_stable_under_float32_rounding():
    """Re-rounding the images at float32 precision must not change the predictions: floored
    rings vary by ~1e-7 with each image's variance and must not be standardised into signal."""
    spec = DatasetSpec("s", "1", TextureSpec(128, (Level("a", (3.0, 3.5)),
                                                   Level("b", (12.0, 16.0)))),
                       splits={"train": 1, "test": 3}, seed=2)
    tr = np.stack([spec.sample("train", i).image for i in range(4)]).astype(np.float64)
    te = np.stack([spec.sample("test", i).image for i in range(12)]).astype(np.float64)
    rng = np.random.default_rng(5)
    tr2 = tr * (1 + 1e-7 * rng.standard_normal(tr.shape))
    te2 = te * (1 + 1e-7 * rng.standard_normal(te.shape))
    p1 = SpectralBaseline(spec).fit(tr, np.arange(4)).predict_proba(te)
    p2 = SpectralBaseline(spec).fit(tr2, np.arange(4)).predict_proba(te2)
    np.testing.assert_allclose(p2, p1, atol=1e-3)


def test_an_empty_batch_says_so():
    from gptextures.spectral_baseline import SpectralBaseline

    spec = presets.get("tiny")
    empty = np.empty((0, 64, 64), np.float32)
    with pytest.raises(ValueError, match=r"no training images \(N = 0\)"):
        SpectralBaseline(spec).fit(empty, np.empty(0, np.int64))
    assert LikelihoodOracle(spec).predict_proba(empty).shape == (0, 4)  # nothing to predict
