"""`gptextures evaluate` and `gptextures leaderboard show|add|render`, end to end on `tiny`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptextures import presets
from gptextures.cli import main
from gptextures.evaluation import Evaluator, write_submission
from gptextures.leaderboard import README_END, README_START, Leaderboard, make_entry


@pytest.fixture
def preds(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(4), 16)
    return write_submission(tmp_path / "p.json", "tiny", scores, metadata={"method": "m"}), scores


def test_evaluate_text_and_json(preds, capsys):
    path, scores = preds
    assert main(["evaluate", "--dataset", "tiny", "--predictions", str(path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy/small" in out and "log_loss" in out
    assert main(["evaluate", "--predictions", str(path), "--json", "--bootstrap", "50"]) == 0
    res = json.loads(capsys.readouterr().out)
    ev = Evaluator("tiny")
    direct = ev.evaluate(y_true=ev.true_labels(), y_pred=scores)
    assert res["accuracy"] == direct.accuracy
    assert res["level_accuracy"] == direct.level_accuracy
    assert res["ci_info"]["resamples"] == 50 and "accuracy" in res["ci"]


def test_evaluate_errors(preds, tmp_path, capsys):
    path, _ = preds
    assert main(["evaluate", "--dataset", "golkar2018-mini", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptextures evaluate: error: predictions:") and "fingerprint" in err
    doc = json.loads(path.read_text())
    doc["predictions"] = doc["predictions"][:-2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["evaluate", "--dataset", "tiny", "--predictions", str(bad)]) == 2
    assert "missing ids (2): 14, 15" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def _entry_file(tmp_path, method, acc_shift=0):
    ev = Evaluator("tiny")
    y = ev.true_labels()
    results = [ev.evaluate(y_true=y, y_pred=(y + (np.arange(16) < 4 * s + acc_shift)) % 4)
               for s in range(3)]
    e = make_entry(method=method, seeds=[0, 1, 2], results=results, params=10,
                   training={"epochs": 1}, hardware="cpu", train_time_s=1.0)
    path = tmp_path / f"{method}.json"
    path.write_text(json.dumps(e))
    return path


def test_leaderboard_add_show_render(tmp_path, capsys):
    board = tmp_path / "boards" / "tiny.json"
    board.parent.mkdir()
    a, b = _entry_file(tmp_path, "a"), _entry_file(tmp_path, "b", acc_shift=1)
    # Creating a leaderboard needs its dataset.
    assert main(["leaderboard", "add", str(board), str(a)]) == 2
    assert "pass --dataset" in capsys.readouterr().err
    assert main(["leaderboard", "add", str(board), str(a), "--dataset", "tiny"]) == 0
    assert "rank 1 of 1" in capsys.readouterr().out
    assert main(["leaderboard", "add", "tiny", str(b), "--dir", str(board.parent)]) == 0
    assert "rank 2 of 2" in capsys.readouterr().out
    # Same method again: refused unless --replace; the file is unchanged.
    before = board.read_bytes()
    assert main(["leaderboard", "add", str(board), str(b)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert board.read_bytes() == before
    # An invalid entry is refused with the field named; the file is unchanged.
    doc = json.loads(b.read_text())
    doc["seeds"] = [0, 1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["leaderboard", "add", str(board), str(bad), "--replace"]) == 2
    assert ">= 3 seeds" in capsys.readouterr().err
    assert board.read_bytes() == before

    assert main(["leaderboard", "show", str(board)]) == 0
    out = capsys.readouterr().out
    assert out.index("| 1 | a |") < out.index("| 2 | b |")
    assert main(["leaderboard", "show", "tiny", "--dir", str(board.parent), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == Leaderboard.load(board).to_dict()

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nold\n{README_END}\nrest\n")
    assert main(["leaderboard", "render", "--dir", str(board.parent), "--readme",
                 str(readme)]) == 0
    md = (board.parent / "tiny.md").read_text()
    assert md.startswith("### tiny\n") and "| 1 | a |" in md
    text = readme.read_text()
    assert md in text and "old" not in text and text.endswith(f"{README_END}\nrest\n")


def test_leaderboard_errors(tmp_path, capsys):
    assert main(["leaderboard", "show", "nope"]) == 2
    assert "neither a leaderboard file nor a preset" in capsys.readouterr().err
    assert main(["leaderboard", "render", "--dir", str(tmp_path)]) == 2
    assert "no leaderboard JSON files" in capsys.readouterr().err
    board = Leaderboard.for_dataset(presets.get("tiny")).save(tmp_path / "tiny.json")
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["leaderboard", "render", str(board), "--readme", str(readme)]) == 2
    assert "exactly once" in capsys.readouterr().err
    assert readme.read_text() == "no markers\n"


def test_evaluate_against_a_written_dataset_file(preds, tmp_path, capsys):
    path, scores = preds
    out = tmp_path / "data"
    assert main(["generate", "tiny", "--out", str(out), "--no-progress"]) == 0
    files = sorted(out.glob("*.h5"))
    assert len(files) == 1
    capsys.readouterr()
    assert Evaluator(files[0]).fingerprint == presets.get("tiny").fingerprint
    assert main(["evaluate", "--dataset", str(files[0]), "--predictions", str(path),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    ev = Evaluator("tiny")
    assert res["accuracy"] == ev.evaluate(y_true=ev.true_labels(), y_pred=scores).accuracy


def test_shipped_leaderboards_show_from_any_directory(tmp_path):
    """`gptextures leaderboard show NAME` reads the board shipped in the package, whatever the
    working directory (it was looked up relative to the current directory)."""
    import subprocess
    import sys

    from gptextures.leaderboard import shipped_board_path

    for name in presets.names():
        path = shipped_board_path(name)
        assert path.is_file() and path.with_suffix(".md").is_file()
        assert Leaderboard.load(path).fingerprint == presets.get(name).fingerprint
    res = subprocess.run([sys.executable, "-m", "gptextures", "leaderboard", "show", "tiny"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "likelihood oracle" in res.stdout and presets.get("tiny").fingerprint[:12] in res.stdout
    with pytest.raises(ValueError, match="not a preset"):
        shipped_board_path("nope")


def test_evaluate_prediction_type_and_bootstrap_cap(tmp_path, capsys):
    scores = np.random.default_rng(1).dirichlet(np.ones(4), 16)
    path = write_submission(tmp_path / "pct.csv", "tiny", 100 * scores)
    assert main(["evaluate", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "percentages" in err and "--prediction-type" in err
    assert main(["evaluate", "--predictions", str(path), "--prediction-type", "logits",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction_type"] == "scores:logits"
    assert main(["evaluate", "--predictions", str(path), "--bootstrap", str(10**11)]) == 2
    assert "bootstrap: expected an int in [0, 100000]" in capsys.readouterr().err
