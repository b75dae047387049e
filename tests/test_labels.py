"""Class index <-> per-level labels (mixed radix, first level most significant)."""

import itertools

import numpy as np
import pytest

from gptextures import labels


@pytest.mark.parametrize("radices", [(2,), (2, 2), (3, 2, 4), (2, 3, 2, 5)])
def test_round_trip_all_classes_depth_1_to_4(radices):
    n = labels.num_classes(radices)
    assert n == int(np.prod(radices))
    combos = list(itertools.product(*[range(r) for r in radices]))
    # mixed radix, first level most significant: itertools.product order is class order
    for c, combo in enumerate(combos):
        assert labels.decode(c, radices) == combo
        assert labels.encode(combo, radices) == c
    arr = labels.decode_array(np.arange(n), radices)
    assert arr.shape == (n, len(radices)) and arr.tolist() == [list(x) for x in combos]
    assert labels.encode_array(arr, radices).tolist() == list(range(n))


def test_class_names_in_class_order():
    names = labels.class_names(["small", "large"], [(9.5, 10.0), (80.0, 140.0)])
    assert names == [
        "small=l9.5|large=l80", "small=l9.5|large=l140",
        "small=l10|large=l80", "small=l10|large=l140",
    ]


def test_bad_labels():
    with pytest.raises(ValueError, match=r"class_index: must be in \[0, 3\], got 4"):
        labels.decode(4, (2, 2))
    with pytest.raises(ValueError, match=r"class_index: must be in \[0, 3\], got -1"):
        labels.decode(-1, (2, 2))
    with pytest.raises(TypeError, match="class_index"):
        labels.decode(1.0, (2, 2))
    with pytest.raises(ValueError, match=r"level_labels\[1\]: must be in \[0, 1\], got 2"):
        labels.encode((0, 2), (2, 2))
    with pytest.raises(ValueError, match="expected 2 labels"):
        labels.encode((0,), (2, 2))
    with pytest.raises(ValueError, match=r"class_indices\[2\]"):
        labels.decode_array(np.array([0, 1, 9]), (2, 2))
    with pytest.raises(ValueError, match="depth >= 1"):
        labels.num_classes(())
