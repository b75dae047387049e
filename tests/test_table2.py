"""Table 2 machinery: statistics over seeds, the claims' verdicts, the report, a smoke grid."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmarks.paper import stats, table2


def test_t_interval_matches_the_t_quantile():
    s = stats.summary([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * np.sqrt(2.5) / np.sqrt(5)  # t_{0.975, 4} * std / sqrt(n)
    assert s["mean"] == 3.0 and s["std"] == pytest.approx(np.sqrt(2.5))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((3 - half, 3 + half))


def test_paired_bootstrap_of_a_constant_shift_is_exact():
    a = np.array([0.5, 0.6, 0.4, 0.7, 0.55])
    b = stats.paired_bootstrap(a + 0.1, a)
    assert (b["diff"], b["ci_low"], b["ci_high"]) == pytest.approx((0.1, 0.1, 0.1))
    assert b["p_le0"] == 0.0
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_bootstrap(a, a[:3])


def test_welch_matches_its_definition():
    a, b = np.array([0.6, 0.7, 0.65, 0.72, 0.68]), np.array([0.5, 0.45, 0.55, 0.52, 0.4])
    w = stats.welch(a, b)
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5
    assert w["t"] == pytest.approx((a.mean() - b.mean()) / np.sqrt(va + vb))
    assert w["p_greater"] < 0.001 and stats.welch(b, a)["p_greater"] > 0.999


def _rows(shift: dict[str, dict[str, float]], base=(0.45, 0.65, 0.74)) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for row, *_ in table2.PAPER:
        d = shift.get(row, {})
        out[row] = {key: list(np.clip(base[i] + d.get(key, 0.0) + 0.01 * rng.standard_normal(5),
                                      0, 1))
                    for i, key in enumerate(("accuracy", "accuracy/small", "accuracy/large"))}
    return out


def test_claims_are_judged_in_the_papers_direction():
    good = _rows({"(0.99, 0.94)": {"accuracy": 0.2}, "(0, 0.94)": {"accuracy/large": 0.1},
                  "512x512 crop": {"accuracy/small": -0.1, "accuracy/large": 0.1},
                  "256x256 crop": {"accuracy": -0.1}})
    claims = table2.analyse(good)
    by = {(c["a"], c["b"], c["metric"]): c["verdict"] for c in claims}
    assert by[("(0.99, 0.94)", "(0, 0)", "accuracy")] == "reproduced"
    assert by[("(0, 0.94)", "(0, 0)", "accuracy/large")] == "reproduced"
    assert by[("512x512 crop", "(0, 0)", "accuracy/small")] == "reproduced"  # lower, as claimed
    assert by[("256x256 crop", "(0, 0)", "accuracy")] == "reproduced"
    assert by[("(0, 0.75)", "(0, 0)", "accuracy")] == "not significant"
    bad = _rows({"(0, 0)": {"accuracy": 0.2}})
    claims = table2.analyse(bad)
    assert {c["verdict"] for c in claims if c["b"] == "(0, 0)" and c["metric"] == "accuracy"
            and "beats" in c["claim"]} == {"contradicted"}


@pytest.mark.slow
def test_smoke_grid_writes_the_report(tmp_path):
    args = argparse.Namespace(scale="smoke", quick=True, seeds=None, jobs=1, scheduler=None,
                              runs=str(tmp_path / "runs"), results=str(tmp_path / "res"),
                              rescan=False, efficient=True, device="cpu", leaderboard=False,
                              no_progress=True, scan_only=False, naive_check="(0.99, 0.94)",
                              overwrite=False)
    report = table2.run(args)
    assert report["rows"] == [r[0] for r in table2.PAPER]
    saved = json.loads((tmp_path / "res" / "table2-smoke-quick.json").read_text())
    assert saved["results"]["(0, 0)"]["Total"]["n"] == 3
    md = (tmp_path / "res" / "table2-smoke-quick.md").read_text()
    assert "| (0.99, 0.94) |" in md and "66.2" in md  # ours beside the paper's
    assert (tmp_path / "res" / "table2-smoke-quick.png").stat().st_size > 10_000
    cmp = saved["efficient_vs_naive"]
    assert cmp["row"] == "(0.99, 0.94)" and cmp["Total"]["naive"]["n"] == 3
    assert "## Efficient vs naive" in md
    # rerunning resumes: every run is already complete, nothing is trained again
    again = table2.run(args)
    assert again["results"]["(0, 0)"]["per_seed"] == report["results"]["(0, 0)"]["per_seed"]


def test_a_scan_made_with_other_settings_is_not_used_for_the_grid():
    """A recorded choice applies to the recipe it was scanned for: rows trained with the
    efficient path do not take a naive-masking scan's (lr, steps), they ask for --rescan."""
    scale = table2.SCALES["mini"]
    naive = table2.row_configs(scale, efficient=False)
    scan = {"file": "table2-mini-scan.json", "selected": {
        table2._label(kw): {"lr": 3e-3, "steps": 100,
                            "key": table2.make_config(**kw).selection_key()}
        for kw in naive.values()}}
    assert table2.choices(scan, naive)["(0.99, 0.94)"]["steps"] == 100
    with pytest.raises(ValueError, match=r"no choice for row \(0, 0.75\).*--rescan"):
        table2.choices(scan, table2.row_configs(scale, efficient=True))
