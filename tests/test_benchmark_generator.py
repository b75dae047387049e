"""Smoke test of the generator speed benchmark: its report, and that its reference is right.

No timing is asserted: the benchmark's targets are ratios it reports, not test conditions.
What is asserted is that the plain-numpy reference the benchmark compares against draws the
same distribution as ``gptextures.render`` (otherwise the speed ratio would compare unlike
things), and that the report and files have the documented structure.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.speed import generator as bench
from gptextures import Level, TextureSpec, presets, render


def _lag_products(f: np.ndarray, r: int) -> tuple[float, float]:
    """Mean of ``f(x) f(x + r)`` along rows and along columns (torus)."""
    return float(np.mean(f * np.roll(f, r, axis=1))), float(np.mean(f * np.roll(f, r, axis=0)))


def test_reference_field_has_the_kernel_covariance():
    # 200 fields of 64x64 at a non-integer l = 2.5 px; lags 0..3l along both axes.
    shape, ell, m = (64, 64), 2.5, 200
    lags = [0, 1, 2, 3, 5, 7]
    amp = bench.reference_amplitude(shape, ell)
    rng = np.random.default_rng(12345)
    est = np.zeros((len(lags), 2))
    for _ in range(m):
        f = bench.reference_field(amp, shape, rng)
        assert f.dtype == np.float32 and f.shape == shape
        f = f.astype(np.float64)
        est += [_lag_products(f, r) for r in lags]
    est /= m
    # Exact sampling variance of the lag-r product mean of a zero-mean Gaussian field with
    # covariance C on the torus: Var = (1/N) sum_s [C(s)^2 + C(s + r) C(s - r)], / m fields.
    y, x = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    dy, dx = np.minimum(y, 64 - y), np.minimum(x, 64 - x)
    cov = np.exp(-(dx**2 + dy**2) / (2 * ell**2))
    n = cov.size
    for i, r in enumerate(lags):
        kernel = math.exp(-(r**2) / (2 * ell**2))
        var = (np.sum(cov**2) + np.sum(np.roll(cov, r, 1) * np.roll(cov, -r, 1))) / n / m
        se = math.sqrt(var)
        # 5 standard errors: a chance failure is < 1e-5 per check. Dropping the Hermitian
        # symmetry of column 0 would lower the variance by ~5% (about 7 standard errors).
        assert abs(est[i, 0] - kernel) < 5 * se, (r, est[i, 0], kernel, se)
        assert abs(est[i, 1] - kernel) < 5 * se, (r, est[i, 1], kernel, se)


def test_reference_image_matches_gptextures_statistics():
    # Same texture, class and number of images: the mean autocorrelation of the normalised
    # images at several lags agrees between the reference and render within sampling error.
    texture = TextureSpec(size=64, levels=(Level("small", (2.0, 3.0)), Level("large", (6.0, 9.0))))
    ref = bench.ReferenceRenderer(texture)
    m, lags, cls = 120, (1, 2, 4, 8), 1
    stats = {"ours": [], "ref": []}
    for s in range(m):
        for name, img in (("ours", render(texture, cls, seed=s)), ("ref", ref(cls, 10_000 + s))):
            assert img.dtype == np.float32 and img.shape == (64, 64)
            assert abs(float(img.mean())) < 1e-5 and abs(float(img.std()) - 1.0) < 1e-5
            f = img.astype(np.float64)
            stats[name].append([np.mean(_lag_products(f, r)) for r in lags])
    a, b = np.array(stats["ours"]), np.array(stats["ref"])
    se = np.sqrt(a.var(axis=0, ddof=1) / m + b.var(axis=0, ddof=1) / m)
    assert np.all(np.abs(a.mean(axis=0) - b.mean(axis=0)) < 5 * se), (a.mean(0), b.mean(0), se)
    # Deterministic per seed.
    np.testing.assert_array_equal(ref(cls, 3), ref(cls, 3))


def test_reference_rejects_what_it_does_not_implement():
    texture = TextureSpec(size=64, levels=(Level("a", (2.0, 3.0)), Level("b", (6.0, 9.0))),
                          mix="product")
    with pytest.raises(ValueError, match="texture:.*mix='product'"):
        bench.ReferenceRenderer(texture)


def test_peer_parameter_matching():
    # powerbox: P(k) is the 2-D Fourier transform of k(r): int P(k) d^2k / (2 pi)^2 = k(0) = 1.
    ell = 7.0
    k = np.linspace(0.0, 12.0 / ell, 20_001)
    integral = np.trapezoid(bench.powerbox_pk(ell)(k) * k, k) / (2 * math.pi)
    assert integral == pytest.approx(1.0, rel=1e-6)
    # gstools: Gaussian(len_scale=L) has the same correlation as exp(-r^2 / (2 l^2)).
    gstools = pytest.importorskip("gstools")
    model = gstools.Gaussian(dim=2, var=1.0, len_scale=bench.gstools_len_scale(ell))
    r = np.array([0.0, 0.5 * ell, ell, 2.0 * ell, 3.0 * ell])
    np.testing.assert_allclose(model.correlation(r), np.exp(-(r**2) / (2 * ell**2)), atol=1e-12)
    assert bench.gstools_mode_no((64, 64), 2.0) == [54, 54]


@pytest.mark.slow  # ~16 s under load: a whole (quick) benchmark run
def test_run_report_structure_and_files(tmp_path):
    texture = presets.get("tiny").texture
    report = bench.run(quick=True, repeats=2, texture=texture, texture_name="tiny",
                       context=("tiny",), peers=True)
    assert report["texture"]["size"] == [64, 64]
    assert report["machine"]["fft_backend"].split("-")[0] in ("pyfftw", "scipy", "numpy")
    for key in ("threads_1", "threads_2"):
        st = report["ours"][key]
        # 2 turns of BLOCK calls, the first of each turn a warm-up
        assert st["n"] == 2 * (bench.BLOCK - 1) and 0 < st["min_ms"] <= st["median_ms"]
    assert report["reference"]["median_ms"] > 0
    assert report["cold"]["ours"]["n"] == 2 and report["cold"]["reference"]["median_ms"] > 0
    assert report["ratios"]["reference_over_ours_1t_cold"] > 0
    assert {"numpy", "scipy_1t", "scipy_2t"} <= set(report["fft"])
    comp = report["components"]
    assert comp["available"], comp
    assert comp["noise_ms"] > 0 and comp["fft_ms"] > 0
    assert comp["total_ms"] >= comp["noise_ms"] + comp["fft_ms"] - 1e-9
    assert report["context"]["tiny"]["threads_1"]["median_ms"] > 0
    for peer in report["peers"].values():
        if peer["available"]:
            fields = peer["fields"]
            assert fields and all(f["median_ms"] > 0 for f in fields.values())
        else:
            assert "not installed" in peer["reason"]
    ratios = report["ratios"]
    assert ratios["reference_over_ours_1t"] > 0 and math.isfinite(ratios["ours_over_numpy_fft_1t"])
    names = [t["ratio"] for t in report["targets"]]
    assert names[:2] == ["reference_over_ours_1t", "ours_over_floor_1t"]
    for t in report["targets"]:  # judged when measured (the floor needs pyFFTW)
        assert t["met"] in ((True, False) if t["value"] is not None else (None,))

    text = bench.format_text(report)
    assert "gptextures render, tiny, 1 thread" in text and "target reference_over_ours_1t" in text
    jpath, mpath = bench.write_results(report, tmp_path, "python -m benchmarks.speed.generator")
    back = json.loads(jpath.read_text())
    assert back["command"] == "python -m benchmarks.speed.generator"
    assert back["ours"] == json.loads(json.dumps(report["ours"]))
    md = mpath.read_text()
    assert "| what | median wall |" in md and report["machine"]["fft_backend"] in md
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_repeats():
    with pytest.raises(ValueError, match="repeats: must be >= 1, got 0"):
        bench.run(repeats=0, texture=presets.get("tiny").texture, peers=False, context=())
    with pytest.raises(SystemExit) as exc:
        bench.main(["--repeats", "0"])
    assert exc.value.code == 2
