"""Leaderboard entries: building, validation on load, ranking, JSON round trip, rendering."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from gptextures import presets
from gptextures.evaluation import Evaluator, FingerprintMismatchError
from gptextures.leaderboard import (
    README_END,
    README_START,
    Leaderboard,
    aggregate,
    make_entry,
    update_readme,
)


def _entry(method: str, p_correct: float, seeds=(0, 1, 2), dataset="tiny", **kw):
    ev = Evaluator(dataset)
    y = ev.true_labels()
    results = []
    for s in seeds:
        rng = np.random.default_rng(s)
        pred = np.where(rng.random(len(y)) < p_correct, y, (y + 1) % ev.num_classes)
        results.append(ev.evaluate(y_true=y, y_pred=pred))
    args = dict(method=method, seeds=list(seeds), results=results, params=1234,
                training={"optimizer": "adam", "lr": 1e-3, "epochs": 3},
                hardware="2 CPU cores", train_time_s=12.5,
                backdrop_masks=[{"name": "large", "p": 0.5}], date="2026-11-26")
    args.update(kw)
    return make_entry(**args)


def test_make_entry_aggregates_with_ddof_1():
    e = _entry("m", 0.6)
    acc = [r["accuracy"] for r in e["per_seed"]]
    assert e["aggregate"]["accuracy"]["mean"] == pytest.approx(np.mean(acc), rel=1e-15)
    assert e["aggregate"]["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1), rel=1e-12)
    assert set(e["aggregate"]) == {"accuracy", "accuracy/small", "accuracy/large",
                                   "mean_level_accuracy", "worst_level_accuracy"}
    assert e["dataset_fingerprint"] == presets.get("tiny").fingerprint
    assert e["count"] == 16 and e["split"] == "test"
    assert e["package_version"]


def test_round_trip(tmp_path):
    board = Leaderboard.for_dataset(presets.get("tiny"))
    board.add(_entry("a", 0.9))
    board.add(_entry("b", 0.3, seeds=(5, 6, 7, 8)))
    path = board.save(tmp_path / "tiny.json")
    again = Leaderboard.load(path)
    assert again.to_dict() == board.to_dict()
    assert again.to_json() == path.read_text()
    assert not (tmp_path / "tiny.json.tmp").exists()


def test_ranking_and_ties():
    board = Leaderboard.for_dataset(presets.get("tiny"))
    low, high = _entry("low", 0.2), _entry("high", 0.95)
    board.add(low)
    board.add(high)
    twin = copy.deepcopy(high)
    twin["method"] = "high twin"
    board.add(twin)
    ranked = board.ranked()
    assert [e["method"] for _, e in ranked] == ["high", "high twin", "low"]
    assert [r for r, _ in ranked] == [1, 1, 3]
    md = board.to_markdown()
    assert md.index("| 1 | high |") < md.index("| 1 | high twin |") < md.index("| 3 | low |")
    assert "| Rank | Method | Total | small | large |" in md
    assert "large p=0.5" in md


def test_duplicate_method_needs_replace():
    board = Leaderboard.for_dataset(presets.get("tiny"))
    board.add(_entry("a", 0.5))
    with pytest.raises(ValueError, match="already on this leaderboard"):
        board.add(_entry("a", 0.9))
    board.add(_entry("a", 0.9), replace=True)
    assert len(board.entries) == 1


def _mut(path, value):
    def f(e):
        obj = e
        for k in path[:-1]:
            obj = obj[k]
        if value is _DEL:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return f


_DEL = object()


@pytest.mark.parametrize("mutate, match", [
    (_mut(["seeds"], [0, 1]), ">= 3 seeds, got 2"),
    (_mut(["seeds"], [0, 1, 1]), "seeds must be distinct"),
    (_mut(["aggregate", "accuracy", "mean"], 0.99), r"aggregate.accuracy.mean: does not match"),
    (_mut(["aggregate", "accuracy", "std"], 0.0), r"aggregate.accuracy.std: does not match"),
    (_mut(["per_seed", 1, "accuracy"], 1.5), r"an accuracy must be in \[0, 1\]"),
    (_mut(["per_seed", 1, "seed"], 9), "seed 1"),
    (_mut(["per_seed", 0, "accuracy/small"], _DEL), "missing metric 'accuracy/small'"),
    (_mut(["hardware"], _DEL), r"missing field\(s\) \['hardware'\]"),
    (_mut(["colour"], "red"), r"unknown field\(s\) \['colour'\]"),
    (_mut(["date"], "26/11/2026"), "expected YYYY-MM-DD"),
    (_mut(["date"], "2026-02-30"), "not a valid date"),
    (_mut(["params"], -1), r"params: expected an int >= 0"),
    (_mut(["backdrop_masks"], [{"name": "x", "p": 1.0}]), r"p': float in \[0, 1\)"),
    (_mut(["train_time_s"], -3), "seconds >= 0"),
    (_mut(["training"], "sgd"), "expected an object"),
    (_mut(["dataset_fingerprint"], "abc"), "64 hex digits"),
])
def test_validation_on_load(tmp_path, mutate, match):
    board = Leaderboard.for_dataset(presets.get("tiny"))
    board.add(_entry("a", 0.5))
    doc = board.to_dict()
    mutate(doc["entries"][0])
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=match):
        Leaderboard.load(path)


def test_one_leaderboard_per_fingerprint():
    board = Leaderboard.for_dataset(presets.get("tiny"))
    other = _entry("x", 0.5, dataset="golkar2018-mini")
    with pytest.raises(FingerprintMismatchError, match="this leaderboard is for"):
        board.add(other)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Leaderboard.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Leaderboard.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="gptextures-leaderboard"):
        Leaderboard.load(tmp_path / "y.json")


def test_aggregate_needs_two_seeds():
    with pytest.raises(ValueError, match="need >= 2 seeds"):
        aggregate([{"seed": 0, "accuracy": 0.5}])


def test_update_readme(tmp_path):
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro ü\n", "\n## Next\ntext\n"
    readme.write_text(f"{before}{README_START}\nold table\n{README_END}{after}")
    update_readme(readme, ["### tiny\n\n| a |\n", "### b\n"])
    text = readme.read_text()
    assert text.startswith(before + README_START + "\n### tiny\n\n| a |\n\n### b\n")
    assert text.endswith(README_END + after)
    assert "old table" not in text
    update_readme(readme, ["### tiny\n\n| a |\n", "### b\n"])
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="exactly once"):
        update_readme(readme, ["x"])
    readme.write_text(f"{README_END} {README_START}")
    with pytest.raises(ValueError, match="comes before"):
        update_readme(readme, ["x"])
    assert readme.read_text() == f"{README_END} {README_START}"  # untouched on error


def test_shipped_leaderboards_are_valid():
    from gptextures.leaderboard import SHIPPED_DIR

    files = sorted(SHIPPED_DIR.glob("*.json"))
    assert {f.stem for f in files} == set(presets.names())
    for f in files:
        board = Leaderboard.load(f)
        spec = presets.get(board.dataset["name"])
        assert board.fingerprint == spec.fingerprint, f"{f.name} is stale: regenerate it"
