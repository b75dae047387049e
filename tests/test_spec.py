"""Data model: validation, JSON round-trip, fingerprint, sample order, presets."""

import json

import numpy as np
import pytest

from gptextures import DatasetSpec, Level, TextureSpec, presets, render
from gptextures.spec import ALGORITHM_VERSION


def small_spec(**kw):
    tex = TextureSpec(size=64, levels=(Level("small", (2.0, 3.0)), Level("large", (6.0, 10.0))))
    args = dict(name="t", version="1", texture=tex, splits={"train": 2, "test": 3}, seed=7)
    args.update(kw)
    return DatasetSpec(**args)


def test_json_round_trip_and_fingerprint():
    for name in presets.names():
        spec = presets.get(name)
        again = DatasetSpec.from_json(spec.to_json())
        assert again == spec and again.fingerprint == spec.fingerprint
        assert list(again.splits) == list(spec.splits) and again.summary() == spec.summary()
        assert len(spec.fingerprint) == 64
    a = small_spec()
    assert small_spec(seed=8).fingerprint != a.fingerprint
    assert small_spec(splits={"train": 2, "test": 4}).fingerprint != a.fingerprint
    # the fingerprint depends on the algorithm version, not on JSON formatting
    assert DatasetSpec.from_json(a.to_json(indent=None)).fingerprint == a.fingerprint
    assert ALGORITHM_VERSION


def test_spec_is_frozen_and_hashable():
    spec = small_spec()
    with pytest.raises(AttributeError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.splits["train"] = 5  # type: ignore[index]
    assert len({spec, small_spec()}) == 1


def test_sizes_labels_and_interleaved_order():
    spec = small_spec()
    assert spec.num_classes == 4 and spec.texture.depth == 2
    assert spec.num_samples("train") == 8 and spec.num_samples("test") == 12
    assert [spec.label_of("test", i) for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    s = spec.sample("test", 6)
    assert s.label == 2 and s.level_labels == (1, 0) and s.index == 6 and s.split == "test"
    assert s.image.shape == (64, 64) and s.image.dtype == np.float32
    assert np.array_equal(s.image, render(spec.texture, 2, seed=spec.seed_of("test", 6)))
    assert spec.texture.length_scales(2) == (3.0, 6.0)


def test_sample_is_independent_of_generation_order():
    spec = small_spec()
    later_first = [spec.sample("train", i).image for i in (5, 0, 3)]
    fresh = small_spec()
    for img, i in zip(later_first, (5, 0, 3)):
        assert img.tobytes() == fresh.sample("train", i).image.tobytes()
    # different indices and splits give different images and seeds
    assert spec.seed_of("train", 0) != spec.seed_of("test", 0)
    assert not np.array_equal(spec.sample("train", 0).image, spec.sample("train", 4).image)


def test_depth_1_and_depth_3_specs():
    d1 = TextureSpec(size=32, levels=(Level("only", (1.5, 2.5, 4.0)),))
    assert d1.num_classes == 3 and d1.depth == 1
    assert d1.class_names == ["only=l1.5", "only=l2.5", "only=l4"]
    d3 = presets.get("gp3-512").texture
    assert d3.depth == 3 and d3.num_classes == 8


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: Level("a", (1.0,)), ValueError, "needs >= 2 length scales"),
        (lambda: Level("a", (2.0, 2.0)), ValueError, "duplicate length scales"),
        (lambda: Level("a", (2.0, -1.0)), ValueError, r"length_scales\[1\].*> 0"),
        (lambda: Level("a", (2.0, float("inf"))), ValueError, "finite"),
        (lambda: Level("a b", (1.0, 2.0)), ValueError, "name"),
        (lambda: Level("a", (1.0, 2.0), weight=0), ValueError, "weight"),
        (lambda: TextureSpec(64, ()), ValueError, "depth must be >= 1"),
        (lambda: TextureSpec(64, (Level("a", (1.0, 2.0)),), kernel="rbf"), ValueError,
         "kernel: unknown kernel 'rbf'"),
        (lambda: TextureSpec(64, (Level("a", (1.0, 2.0)),), mix="max"), ValueError,
         "mix: unknown mix 'max'; known mixes: sum, product"),
        (lambda: TextureSpec(64, (Level("a", (1.0, 20.0)),)), ValueError,
         r"levels\[0\].length_scales\[1\]: 20 px is too large for a 64x64 image.*limit is 10.5"),
        (lambda: TextureSpec(64, (Level("a", (1.0, 2.0)), Level("a", (3.0, 4.0)))), ValueError,
         "distinct"),
        (lambda: TextureSpec(4, (Level("a", (1.0, 2.0)),)), ValueError, "size"),
        (lambda: small_spec(splits={"train": 0}), ValueError, "images per class"),
        (lambda: small_spec(seed=-2), ValueError, "seed"),
        (lambda: small_spec(name="bad name"), ValueError, "name"),
    ],
)
def test_bad_specs(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_json_names_the_field():
    good = json.loads(small_spec().to_json())
    bad = dict(good)
    del bad["seed"]
    with pytest.raises(ValueError, match=r"spec: missing field\(s\) \['seed'\]"):
        DatasetSpec.from_dict(bad)
    bad = json.loads(json.dumps(good))
    bad["texture"]["levels"][0]["lenght_scales"] = bad["texture"]["levels"][0].pop("length_scales")
    with pytest.raises(ValueError, match=r"texture.levels\[0\]: missing field"):
        DatasetSpec.from_dict(bad)
    bad = json.loads(json.dumps(good))
    bad["texture"]["colour"] = "red"
    with pytest.raises(ValueError, match=r"texture: unknown field\(s\) \['colour'\]"):
        DatasetSpec.from_dict(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        DatasetSpec.from_json("{nope")


def test_bad_sample_arguments():
    spec = small_spec()
    with pytest.raises(ValueError, match=r"split: unknown split 'val'.*\['train', 'test'\]"):
        spec.sample("val", 0)
    with pytest.raises(IndexError, match=r"index: must be in \[0, 7\]"):
        spec.sample("train", 8)
    with pytest.raises(ValueError, match=r"class_index: must be in \[0, 3\], got 4"):
        render(spec.texture, 4, seed=0)


def test_presets():
    assert presets.names()[0] == "golkar2018"
    g = presets.get("golkar2018")
    assert g.texture.size == (1024, 1024) and g.num_classes == 4
    assert g.texture.levels[0].length_scales == (9.5, 10.0)
    assert g.texture.levels[1].length_scales == (80.0, 140.0)
    assert g.num_samples("train") == 4 and g.num_samples("test") == 100
    m = presets.get("golkar2018-mini")
    ratio = g.texture.size[0] / m.texture.size[0]
    for lg, lm in zip(g.texture.levels, m.texture.levels):
        assert tuple(s / ratio for s in lg.length_scales) == lm.length_scales
    assert any(presets.get(n).texture.depth >= 3 for n in presets.names())
    with pytest.raises(ValueError, match="unknown preset 'cifar'; known presets: golkar2018"):
        presets.get("cifar")
