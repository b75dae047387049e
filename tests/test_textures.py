"""render: normalisation, the class's own length scales, mixes, determinism across processes."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from gptextures import Level, TextureSpec, presets, render, render_components, sample_field
from gptextures.fields import draw_field, field_plan
from gptextures.seeds import level_seed_sequence, rng
from gptextures.textures import _torus, carrier_level


def tex(**kw):
    args = dict(size=(64, 96), levels=(Level("small", (2.0, 3.0)), Level("large", (6.0, 10.0))))
    args.update(kw)
    return TextureSpec(**args)


@pytest.mark.parametrize(
    "spec",
    [tex(), tex(mix="product"), tex(periodic=False), tex(kernel="matern32", size=96),
     TextureSpec(size=48, levels=(Level("a", (1.0, 2.0, 3.0)),)),
     # depth 3, a full-band level (0.6 px reaches the Nyquist column), a length scale shared by
     # two levels, odd and even sides, unequal weights: the sum's power from the levels' powers
     # and their cross terms must still give std 1
     TextureSpec(size=(45, 64), levels=(Level("a", (0.6, 1.5), weight=0.5),
                                        Level("b", (1.5, 4.0)), Level("c", (4.0, 7.0), 2.0)))],
)
def test_image_is_normalised(spec):
    for c in range(spec.num_classes):
        x = render(spec, c, seed=11 + c)
        assert x.shape == spec.size and x.dtype == np.float32
        # float32 accumulation over ~6000 pixels: a few ulps of 1
        assert abs(float(x.astype(np.float64).mean())) < 1e-6
        assert float(x.astype(np.float64).std()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("spec", [tex(), tex(periodic=False), tex(mix="product")])
def test_render_uses_exactly_the_class_length_scales(spec):
    seed = 1234
    for c in range(spec.num_classes):
        comps = render_components(spec, c, seed=seed)
        for i, (lv, ell) in enumerate(zip(spec.levels, spec.length_scales(c))):
            if spec.periodic:
                ref = sample_field(spec.size, ell, seed=level_seed_sequence(seed, i))
            else:
                # a non-periodic texture draws every level on the torus of its longest scale
                plan = field_plan(spec.kernel, _torus(spec), ell)
                ref = draw_field(plan, rng(level_seed_sequence(seed, i)), spec.size)
            ref = ref.astype(np.float64)
            ref = (ref - ref.mean()) / ref.std()
            assert np.allclose(comps[lv.name], ref, atol=1e-5)
        g = {k: v.astype(np.float64) for k, v in comps.items()}
        if spec.mix == "sum":
            x = g["small"] + g["large"]
        else:
            assert carrier_level(spec) == 0
            x = g["small"] * np.exp(g["large"])
        x = (x - x.mean()) / x.std()
        assert np.allclose(render(spec, c, seed=seed), x, atol=2e-5)


def test_length_scale_is_visible_in_the_statistics():
    # The large-scale component's correlation at lag l is exp(-1/2) for its own scale and
    # clearly different for the other class (a 10 vs 6 px choice), averaged over seeds.
    spec = tex(size=128)
    for c, ell in ((0, 6.0), (1, 10.0)):
        corr = np.mean([
            (lambda f: np.mean(f[:, : 128 - 8] * f[:, 8:]))(
                render_components(spec, c, seed=s)["large"].astype(np.float64))
            for s in range(40)
        ])
        assert corr == pytest.approx(np.exp(-0.5 * (8 / ell) ** 2), abs=0.06)


def test_sum_fast_path_matches_real_space_mix_on_golkar2018():
    spec = presets.get("golkar2018").texture
    x = render(spec, 3, seed=5)
    comps = render_components(spec, 3, seed=5)
    y = comps["small"].astype(np.float64) + comps["large"]
    y = (y - y.mean()) / y.std()
    assert np.abs(x - y).max() < 1e-4


def test_threads_do_not_change_bytes():
    spec = presets.get("golkar2018-mini").texture
    one = render(spec, 1, seed=9, threads=1)
    assert one.tobytes() == render(spec, 1, seed=9, threads=2).tobytes()


def _digest(spec_name, split, index):
    return hashlib.sha256(presets.get(spec_name).sample(split, index).image.tobytes()).hexdigest()


def test_same_bytes_in_a_separate_process():
    code = (
        "import hashlib; from gptextures import presets; "
        "print(hashlib.sha256(presets.get('golkar2018-mini').sample('test', 7).image.tobytes())"
        ".hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest("golkar2018-mini", "test", 7)


def test_different_seeds_differ():
    spec = tex()
    assert not np.array_equal(render(spec, 0, seed=1), render(spec, 0, seed=2))


def test_bad_render_arguments():
    with pytest.raises(TypeError, match="texture_spec"):
        render("golkar2018", 0, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        render(tex(), 0, seed=-5)
    with pytest.raises(ValueError, match="mix: 'product' needs depth >= 2"):
        TextureSpec(size=32, levels=(Level("a", (1.0, 2.0)),), mix="product")


def test_concurrent_renders_from_several_threads_give_the_same_bytes():
    """Plans and buffers are per calling thread and the FFT pool is shared: renders from
    several user threads at once (e.g. a threaded loader) must not mix their data."""
    from concurrent.futures import ThreadPoolExecutor

    spec = presets.get("golkar2018-mini").texture
    jobs = [(c % spec.num_classes, 100 + c, 1 + c % 2) for c in range(12)]
    expected = [render(spec, c, seed=s).tobytes() for c, s, _ in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: render(spec, j[0], seed=j[1], threads=j[2]).tobytes(), jobs))
    assert got == expected
