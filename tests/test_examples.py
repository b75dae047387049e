"""The end-to-end example runs: data -> backdrop CNN -> per-scale scores."""

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_train_backdrop_example_scores_every_level():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_backdrop.py"
    spec = importlib.util.spec_from_file_location("train_backdrop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.train_and_evaluate("tiny", epochs=3)
    assert result.count == 16
    assert set(result.level_accuracy) == {"small", "large"}
    assert 0.0 <= result.accuracy <= min(result.level_accuracy.values()) <= 1.0
    assert result.log_loss is not None and result.log_loss > 0
