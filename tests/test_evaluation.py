"""Evaluator against direct numpy/sklearn computations; bad inputs; submission files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptextures import DatasetSpec, Level, TextureSpec, labels, presets
from gptextures.evaluation import (
    Evaluator,
    FingerprintMismatchError,
    evaluate_submission,
    read_submission,
    write_submission,
)

_metrics = pytest.importorskip("sklearn.metrics")  # the reference implementation (dev extra)
confusion_matrix, log_loss = _metrics.confusion_matrix, _metrics.log_loss


def _spec(depth: int) -> DatasetSpec:
    levels = {
        1: (Level("a", (1.0, 2.0, 3.0)),),
        2: (Level("small", (1.0, 1.5)), Level("large", (3.0, 4.0, 5.0))),
        3: (Level("fine", (1.0, 1.5)), Level("mid", (2.0, 2.5)), Level("coarse", (4.0, 5.0))),
    }[depth]
    return DatasetSpec(name=f"d{depth}", version="1", texture=TextureSpec(32, levels),
                       splits={"train": 2, "test": 10}, seed=1)


def _marginals_loop(p: np.ndarray, radices: tuple[int, ...]) -> list[np.ndarray]:
    """P(level j = a) by an explicit loop over classes (independent of the evaluator)."""
    out = [np.zeros((p.shape[0], r)) for r in radices]
    for c in range(p.shape[1]):
        labs = labels.decode(c, radices)
        for j, a in enumerate(labs):
            out[j][:, a] += p[:, c]
    return out


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_scores_match_direct_computation(depth):
    spec = _spec(depth)
    ev = Evaluator(spec)
    rng = np.random.default_rng(depth)
    n, c, radices = 300, spec.num_classes, spec.texture.radices
    y = rng.integers(0, c, n)
    p = rng.dirichlet(np.ones(c) * 0.5, size=n)
    r = ev.evaluate(y_true=y, y_pred=p)

    assert r.count == n
    assert r.accuracy == pytest.approx(np.mean(p.argmax(1) == y), abs=0)
    assert r.log_loss == pytest.approx(log_loss(y, p, labels=range(c)), rel=1e-12)
    true_levels = np.array([labels.decode(int(t), radices) for t in y])
    margs = _marginals_loop(p, radices)
    accs = []
    for j, name in enumerate(spec.texture.level_names):
        pred_j = margs[j].argmax(1)
        acc = np.mean(pred_j == true_levels[:, j])
        accs.append(acc)
        assert r.level_accuracy[name] == pytest.approx(acc, abs=0)
        assert r.level_log_loss[name] == pytest.approx(
            log_loss(true_levels[:, j], margs[j], labels=range(radices[j])), rel=1e-10)
        np.testing.assert_array_equal(
            r.confusion[name], confusion_matrix(true_levels[:, j], pred_j,
                                                labels=range(radices[j])))
    assert r.mean_level_accuracy == pytest.approx(np.mean(accs), rel=1e-15)
    assert r.worst_level_accuracy == min(accs)
    assert r.worst_level == spec.texture.level_names[int(np.argmin(accs))]
    np.testing.assert_array_equal(r.class_confusion,
                                  confusion_matrix(y, p.argmax(1), labels=range(c)))


def test_logits_equal_probabilities_and_class_indices():
    spec = _spec(2)
    ev = Evaluator(spec)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 200)
    z = rng.normal(size=(200, 6)) * 3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    rz, rp = ev.evaluate(y_true=y, y_pred=z), ev.evaluate(y_true=y, y_pred=p)
    assert rz.prediction_type == "scores:logits" and rp.prediction_type == "scores:probabilities"
    for k, v in rp.metrics().items():
        assert rz.metrics()[k] == pytest.approx(v, rel=1e-9, abs=1e-12)
    # Class indices: joint accuracy equal; per level decoded from the class (no marginalising).
    rc = ev.evaluate(y_true=y, y_pred=p.argmax(1))
    assert rc.accuracy == rp.accuracy and rc.log_loss is None
    lv_true = labels.decode_array(y, (2, 3))
    lv_pred = labels.decode_array(p.argmax(1), (2, 3))
    assert rc.level_accuracy["large"] == np.mean(lv_true[:, 1] == lv_pred[:, 1])


def test_level_mapping_and_torch_inputs():
    torch = pytest.importorskip("torch")
    spec = _spec(3)
    ev = Evaluator(spec)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 8, 100)
    pred = rng.integers(0, 8, 100)
    lv = labels.decode_array(pred, spec.texture.radices)
    mapping = {n: lv[:, j] for j, n in enumerate(spec.texture.level_names)}
    r1 = ev.evaluate(y_true=y, y_pred=pred)
    r2 = ev.evaluate(y_true=y, y_pred=mapping)
    r3 = ev.evaluate(y_true=torch.from_numpy(y), y_pred=torch.from_numpy(pred))
    r4 = ev.evaluate(y_true=y, y_pred={k: torch.from_numpy(v) for k, v in mapping.items()})
    for r in (r2, r3, r4):
        assert r.metrics() == r1.metrics()
    # Per-level scores in the mapping: per-level log-loss, no joint log-loss.
    ps = {n: rng.dirichlet(np.ones(2), 100) for n in spec.texture.level_names}
    r5 = ev.evaluate(y_true=y, y_pred=ps)
    tl = labels.decode_array(y, spec.texture.radices)
    for j, n in enumerate(spec.texture.level_names):
        assert r5.level_accuracy[n] == np.mean(ps[n].argmax(1) == tl[:, j])
        assert r5.level_log_loss[n] == pytest.approx(log_loss(tl[:, j], ps[n], labels=[0, 1]))
    assert r5.log_loss is None


def test_bootstrap_percentile_interval():
    ev = Evaluator(_spec(2))
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 6, n)
    pred = np.where(rng.random(n) < 0.7, y, (y + 1) % 6)
    r = ev.evaluate(y_true=y, y_pred=pred, bootstrap=2000, seed=3)
    again = ev.evaluate(y_true=y, y_pred=pred, bootstrap=2000, seed=3)
    assert r.ci == again.ci  # seeded
    assert r.ci_info == {"method": "percentile", "resamples": 2000, "confidence": 0.95,
                         "seed": 3}
    # Same draws by hand: percentile interval of the resampled means.
    ok = (pred == y).astype(float)
    idx = np.random.default_rng(3).integers(0, n, size=(2000, n))
    lo, hi = np.quantile(ok[idx].mean(1), [0.025, 0.975])
    assert r.ci["accuracy"] == pytest.approx((lo, hi), abs=1e-12)
    # Width of a 95% interval for a proportion: 2 * 1.96 * sqrt(p (1 - p) / n), +-15%
    # (Monte Carlo error of 2000 resamples on the quantiles is a few percent).
    p = r.accuracy
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.15)
    for a, b in r.ci.values():
        assert a <= b
    assert r.ci["accuracy"][0] <= r.accuracy <= r.ci["accuracy"][1]
    assert "[" in r.summary()


def test_formats_and_true_labels():
    ev = Evaluator("tiny")
    assert "[0, 3]" in ev.expected_input_format and "'small'" in ev.expected_input_format
    assert "level_accuracy" in ev.expected_output_format
    spec = presets.get("tiny")
    y = ev.true_labels("test")
    assert y.dtype == np.int64
    assert [spec.label_of("test", i) for i in range(len(y))] == y.tolist()


def test_evaluator_sources(tmp_path):
    spec = presets.get("tiny")
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    for src in (spec, "tiny", path, str(path)):
        assert Evaluator(src).fingerprint == spec.fingerprint
    with pytest.raises(ValueError, match="neither a preset"):  # as every resolver raises
        Evaluator("no-such-preset")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        Evaluator(tmp_path / "missing.h5")
    with pytest.raises(TypeError, match="dataset"):
        Evaluator(3)


@pytest.mark.parametrize("y_pred, exc, match", [
    (np.zeros((16, 1), dtype=np.int64), ValueError, r"got int64 array of shape \(16, 1\).*no"
                                                    " broadcasting"),
    (np.zeros(15, dtype=np.int64), ValueError, r"expected shape \(16,\)"),
    (np.zeros(16), TypeError, "expected integer class indices, got dtype float64"),
    (np.full(16, 4), ValueError, r"y_pred\[0\]: must be in \[0, 3\], got 4"),
    (np.full(16, -1), ValueError, r"must be in \[0, 3\], got -1"),
    (np.full((16, 4), np.nan), ValueError, "NaN or infinite"),
    (np.ones((16, 5)) / 5, ValueError, r"float \(16, 4\) scores"),
    (np.ones((16, 4), dtype=np.int64), TypeError, "must be floats"),
    ({"small": np.zeros(16, int)}, ValueError, r"missing \['large'\]"),
    ({"small": np.zeros(16, int), "large": np.zeros(16, int), "x": np.zeros(16, int)},
     ValueError, r"unknown \['x'\]"),
    ({"small": np.zeros(16, int), "large": np.full(16, 2)}, ValueError,
     r"y_pred\['large'\]\[0\]: must be in \[0, 1\]"),
    ([0.5] * 16, TypeError, "expected integer"),
    ("abc", TypeError, "numpy array or torch tensor"),
])
def test_bad_predictions(y_pred, exc, match):
    ev = Evaluator("tiny")
    with pytest.raises(exc, match=match):
        ev.evaluate(y_true=ev.true_labels(), y_pred=y_pred)


def test_bad_arguments():
    ev = Evaluator("tiny")
    y = ev.true_labels()
    with pytest.raises(ValueError, match=r"y_true: expected shape \(N,\).*no broadcasting"):
        ev.evaluate(y_true=y[:, None], y_pred=y)
    with pytest.raises(ValueError, match="at least one sample"):
        ev.evaluate(y_true=y[:0], y_pred=y[:0])
    with pytest.raises(ValueError, match="probabilities must be in"):
        ev.evaluate(y_true=y, y_pred=np.ones((16, 4)), prediction_type="probabilities")
    with pytest.raises(ValueError, match="probabilities must be in"):  # the former name
        ev.evaluate(y_true=y, y_pred=np.ones((16, 4)), score_type="probabilities")
    with pytest.raises(ValueError, match="prediction_type: expected one of"):
        ev.evaluate(y_true=y, y_pred=y, prediction_type="probs")
    with pytest.raises(ValueError, match=r"bootstrap: expected an int in \[0, 100000\]"):
        ev.evaluate(y_true=y, y_pred=y, bootstrap=-1)
    with pytest.raises(ValueError, match=r"bootstrap: expected an int in \[0, 100000\]"):
        ev.evaluate(y_true=y, y_pred=y, bootstrap=10**11)
    with pytest.raises(ValueError, match="confidence"):
        ev.evaluate(y_true=y, y_pred=y, confidence=1.5)
    with pytest.raises(TypeError):
        ev.evaluate(y, y)  # keyword-only


# ---- submission files -------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".json", ".csv"])
@pytest.mark.parametrize("kind", ["class", "scores", "levels"])
def test_submission_round_trip(tmp_path, suffix, kind):
    spec = presets.get("tiny")
    ev = Evaluator(spec)
    rng = np.random.default_rng(0)
    if kind == "class":
        y_pred = rng.integers(0, 4, 16)
    elif kind == "scores":
        y_pred = rng.dirichlet(np.ones(4), 16)
    else:
        y_pred = {"small": rng.integers(0, 2, 16), "large": rng.integers(0, 2, 16)}
    path = write_submission(tmp_path / f"p{suffix}", spec, y_pred, metadata={"method": "m"})
    sub = read_submission(path)
    assert sub.fingerprint == spec.fingerprint and sub.split == "test"
    assert sub.metadata == {"method": "m"}
    np.testing.assert_array_equal(sub.ids, np.arange(16))
    if kind == "levels":
        for k in y_pred:
            np.testing.assert_array_equal(sub.y_pred[k], y_pred[k])
    else:
        np.testing.assert_array_equal(sub.y_pred, y_pred)  # scores bit-exact
    direct = ev.evaluate(y_true=ev.true_labels(), y_pred=y_pred)
    assert evaluate_submission(path).metrics() == direct.metrics()
    assert evaluate_submission(path, "tiny").metrics() == direct.metrics()


def test_submission_shuffled_ids_are_sorted(tmp_path):
    rng = np.random.default_rng(2)
    ev = Evaluator("tiny")
    pred = rng.integers(0, 4, 16)
    perm = rng.permutation(16)
    path = write_submission(tmp_path / "p.json", "tiny", pred[perm], ids=perm)
    assert ev.evaluate_submission(path).metrics() == ev.evaluate(
        y_true=ev.true_labels(), y_pred=pred).metrics()


def _doc(tmp_path, mutate):
    path = write_submission(tmp_path / "p.json", "tiny", np.arange(16) % 4)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda d: d["dataset"].update(fingerprint="0" * 64), FingerprintMismatchError,
     "fingerprint 0000000000000000.*this dataset"),
    (lambda d: d["predictions"].pop(3), ValueError, "missing ids \\(1\\): 3"),
    (lambda d: d["predictions"][5].update(id=4), ValueError, "duplicate id 4"),
    (lambda d: d["predictions"][5].update(id=16), ValueError, r"in \[0, 15\].*got 16"),
    (lambda d: d["predictions"][2].update({"class": 7}), ValueError, r"must be in \[0, 3\]"),
    (lambda d: d["predictions"][2].update({"class": 1.0}), ValueError, "expected an integer"),
    (lambda d: d.update(format_version=2), ValueError, "format_version must be 1"),
    (lambda d: d.pop("dataset"), ValueError, "missing dataset.fingerprint"),
    (lambda d: d["predictions"][1].update(extra=1), ValueError, "expected keys"),
    (lambda d: d.update(split="validation"), ValueError, "unknown split 'validation'"),
])
def test_bad_submission(tmp_path, mutate, exc, match):
    path = _doc(tmp_path, mutate)
    with pytest.raises(exc, match=match):
        evaluate_submission(path, "tiny")


def test_bad_submission_scores(tmp_path):
    path = write_submission(tmp_path / "p.json", "tiny", np.full((16, 4), 0.25))
    doc = json.loads(path.read_text())
    doc["predictions"][1]["scores"] = [0.5, 0.5, 0.0]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"predictions\[1\].scores: expected 4 scores like row 0,"
                                         " got 3"):
        evaluate_submission(path)
    doc["predictions"][1]["scores"] = [float("nan"), 0.5, 0.0, 0.5]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_submission(path)
    doc["predictions"] = [dict(r, scores=[0.5, 0.5, 0.0]) for r in doc["predictions"]]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"expected int \(16,\) class indices, float \(16, 4\)"):
        evaluate_submission(path)


def test_submission_unknown_fingerprint_needs_dataset(tmp_path):
    spec = _spec(2)
    path = write_submission(tmp_path / "p.csv", spec, np.zeros(60, dtype=int))
    with pytest.raises(ValueError, match="no preset's"):
        evaluate_submission(path)
    assert evaluate_submission(path, spec).count == 60
    with pytest.raises(FileNotFoundError):
        evaluate_submission(tmp_path / "nope.json", spec)


# ---- scores in other dtypes and units -----------------------------------------------------

def _probabilities(n: int, k: int = 4) -> np.ndarray:
    p = np.random.default_rng(0).dirichlet(np.ones(k), size=n)
    assert p.min() > np.finfo(np.float16).smallest_normal  # float16 keeps them normal
    return p


def test_float16_probabilities_are_probabilities():
    """Probabilities stored as float16 sum to 1 only within float16 rounding; they were read
    as logits (log-loss 1.95 became 1.41)."""
    ev = Evaluator("golkar2018-mini")
    y = ev.true_labels("test")
    p = _probabilities(len(y))
    ref = ev.evaluate(y_true=y, y_pred=p)
    r16 = ev.evaluate(y_true=y, y_pred=p.astype(np.float16))
    assert r16.prediction_type == "scores:probabilities"
    # Each value rounds by <= eps/2 relative and so does their sum: after renormalisation a
    # log-probability moves by <= eps16 (to first order), and so does their mean.
    assert abs(r16.log_loss - ref.log_loss) <= 1.1 * float(np.finfo(np.float16).eps)
    assert r16.accuracy == ref.accuracy
    for name in ev.level_names:  # marginals: sums of the same rounded values, same bound
        assert abs(r16.level_log_loss[name] - ref.level_log_loss[name]) \
            <= 1.1 * float(np.finfo(np.float16).eps)
    mapping = {"small": p[:, :2] / p[:, :2].sum(1, keepdims=True), "large":
               (p[:, 2:] / p[:, 2:].sum(1, keepdims=True)).astype(np.float16)}
    assert ev.evaluate(y_true=y, y_pred=mapping).prediction_type == "levels:scores"


def test_percent_scores_are_refused_as_ambiguous_until_stated():
    """Percentages were read as logits (log-loss 31.97): "auto" refuses them and says how to
    state what they are."""
    ev = Evaluator("golkar2018-mini")
    y = ev.true_labels("test")
    p = _probabilities(len(y))
    with pytest.raises(ValueError, match=r"sums to about 100 \(percentages\?\).*"
                                         r"prediction_type='probabilities'.*--prediction-type"):
        ev.evaluate(y_true=y, y_pred=100 * p)
    with pytest.raises(ValueError, match=r"probabilities must be in \[0, 1\]"):
        ev.evaluate(y_true=y, y_pred=100 * p, prediction_type="probabilities")
    as_logits = ev.evaluate(y_true=y, y_pred=100 * p, prediction_type="logits")
    assert as_logits.prediction_type == "scores:logits"
    with pytest.raises(ValueError, match="could be probabilities or logits"):
        ev.evaluate(y_true=y, y_pred=np.round(p, 2) + 0.01)  # sums 1.01-1.06: not within 1e-4
    logits = np.log(p)  # negative: unmistakably logits, softmax gives p back
    r = ev.evaluate(y_true=y, y_pred=logits)
    assert r.prediction_type == "scores:logits"
    assert r.log_loss == pytest.approx(ev.evaluate(y_true=y, y_pred=p).log_loss, abs=1e-12)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_file_states_its_prediction_type(tmp_path, suffix):
    ev = Evaluator("golkar2018-mini")
    p = _probabilities(ev.spec.num_samples("test"))
    plain = write_submission(tmp_path / f"p{suffix}", "golkar2018-mini", 100 * p)
    with pytest.raises(ValueError, match="percentages"):
        evaluate_submission(plain)
    assert evaluate_submission(plain, prediction_type="logits").prediction_type \
        == "scores:logits"
    stated = write_submission(tmp_path / f"s{suffix}", "golkar2018-mini", p,
                              prediction_type="probabilities")
    assert read_submission(stated).prediction_type == "probabilities"
    assert evaluate_submission(stated).prediction_type == "scores:probabilities"


def test_utf8_bom_and_other_encodings(tmp_path):
    """A CSV saved with a byte-order mark (Excel) is read; a non-UTF-8 file is refused naming
    it; a submission of no predictions is refused when written."""
    y = Evaluator("tiny").true_labels("test")
    plain = write_submission(tmp_path / "p.csv", "tiny", y).read_bytes()
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + plain)
    assert evaluate_submission(tmp_path / "bom.csv").accuracy == 1.0
    js = write_submission(tmp_path / "p.json", "tiny", y).read_bytes()
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + js)
    assert evaluate_submission(tmp_path / "bom.json").accuracy == 1.0
    latin = plain.replace(b"# metadata={}", '# metadata={"m": "caf\xe9"}'.encode("latin-1"))
    (tmp_path / "latin.csv").write_bytes(latin)
    with pytest.raises(ValueError, match=r"latin\.csv' is not UTF-8 text .*save it as UTF-8"):
        evaluate_submission(tmp_path / "latin.csv")
    with pytest.raises(ValueError, match=r"no predictions \(N = 0\)"):
        write_submission(tmp_path / "e.json", "tiny", y[:0])
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_submission(tmp_path)
