"""Reference leaderboard entries that need no deep training: chance, spectral baseline, oracle.

    python -m benchmarks.reference [--preset NAME ...] [--bootstrap B] [--oracle-check N]

For each preset it generates the train and test splits in memory, scores

- ``chance``: uniformly random class predictions, seeds 0, 1, 2 (expected joint accuracy
  1 / num_classes, level accuracy 1 / r);
- ``spectral baseline``: :class:`gptextures.spectral_baseline.SpectralBaseline` fit on the
  training split (deterministic: run for seeds 0, 1, 2, predictions checked identical);
- ``likelihood oracle``: :class:`gptextures.oracle.LikelihoodOracle`, no training
  (deterministic, likewise run three times),

and writes the shipped leaderboards ``gptextures/leaderboards/<preset>.json`` and ``.md``
(package data, :func:`gptextures.leaderboard.shipped_board_path`; entries of other methods
already in the file are kept).

``--oracle-check N`` measures how close the oracle is to Bayes-optimal: its accuracy on N fresh
images per class from the generator against its accuracy on N images per class drawn from
exactly its model (levels not normalised one by one): ``results/oracle_check.json``.
``--calibration N`` checks the oracle's calibration on images from its own model for several
``min_snr``: ``results/oracle_calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from gptextures import ALGORITHM_VERSION, __version__, presets, render
from gptextures import fft as gfft
from gptextures.evaluation import Evaluator
from gptextures.fields import sample_field
from gptextures.leaderboard import SHIPPED_DIR, Leaderboard, make_entry, shipped_board_path
from gptextures.oracle import LikelihoodOracle
from gptextures.spectra import grid_weights
from gptextures.spectral_baseline import SpectralBaseline

OUT = SHIPPED_DIR  # gptextures/leaderboards: the boards ship with the package
RESULTS = Path(__file__).parent / "results"
DEFAULT_PRESETS = ("golkar2018-mini", "gp3-512", "tiny", "golkar2018")
SEEDS = (0, 1, 2)


def _hardware() -> str:
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}),"
            " shared with other jobs; no GPU")


def _images(spec, split: str, threads: int) -> np.ndarray:
    return np.stack([spec.sample(split, i, threads=threads).image
                     for i in range(spec.num_samples(split))])


def _ci(ev: Evaluator, y: np.ndarray, pred, b: int, seed: int) -> dict:
    r = ev.evaluate(y_true=y, y_pred=pred, bootstrap=b, seed=seed)
    return {"of": "seed 0's predictions (test-set sampling uncertainty)", **r.ci_info,
            "intervals": {k: list(v) for k, v in r.ci.items()}}


def run_preset(name: str, *, bootstrap: int, threads: int) -> tuple[Leaderboard, dict]:
    spec = presets.get(name)
    ev = Evaluator(spec)
    y = ev.true_labels("test")
    t0 = time.perf_counter()
    train = _images(spec, "train", threads)
    y_train = np.arange(len(train)) % spec.num_classes
    test = _images(spec, "test", threads)
    t_gen = time.perf_counter() - t0
    generator = {"fft_backend": gfft.backend_name(), "algorithm_version": ALGORITHM_VERSION}
    timing = {"generate_s": t_gen}
    entries = []

    # chance
    results = [ev.evaluate(y_true=y, y_pred=np.random.default_rng(s).integers(
        0, spec.num_classes, size=len(y))) for s in SEEDS]
    entries.append(make_entry(
        method="chance", seeds=SEEDS, results=results, params=0,
        training={"recipe": "none: uniformly random class per test image,"
                            " numpy.random.default_rng(seed).integers(0, num_classes)",
                  "generator": generator},
        hardware=_hardware(), train_time_s=0.0, deterministic=False, reference=True,
        description="Uniform random guess; expected joint accuracy 1/num_classes, each level"
                    " 1/(its number of classes).",
        ci=_ci(ev, y, np.random.default_rng(0).integers(0, spec.num_classes, size=len(y)),
               bootstrap, 0)))

    # spectral baseline
    preds, fit_times = [], []
    for _ in SEEDS:
        t0 = time.perf_counter()
        model = SpectralBaseline(spec).fit(train, y_train)
        fit_times.append(time.perf_counter() - t0)
        preds.append(model.predict_proba(test))
    if not all(np.array_equal(preds[0], p) for p in preds):
        raise RuntimeError("spectral baseline: predictions differ between runs")
    results = [ev.evaluate(y_true=y, y_pred=p) for p in preds]
    entries.append(make_entry(
        method="spectral baseline", seeds=SEEDS, results=results, params=model.num_params,
        training={"recipe": "radially averaged log power spectrum (32 rings of equal width in"
                            " |f| over (0, 0.5] cycles/px), standardised; per level an L2"
                            " multinomial logistic regression (C=1, L-BFGS) fit on the whole"
                            " training split; class scores = product of level probabilities",
                  "train_images": int(len(train)), "generator": generator},
        hardware=_hardware(), train_time_s=float(np.mean(fit_times)), deterministic=True,
        reference=True,
        description="Learned non-deep baseline (gptextures.spectral_baseline).",
        ci=_ci(ev, y, preds[0], bootstrap, 0)))
    timing["spectral_fit_s"] = float(np.mean(fit_times))

    # likelihood oracle
    preds, times = [], []
    for _ in SEEDS:
        t0 = time.perf_counter()
        preds.append(LikelihoodOracle(spec).predict_proba(test, threads=threads))
        times.append(time.perf_counter() - t0)
    if not all(np.array_equal(preds[0], p) for p in preds):
        raise RuntimeError("oracle: predictions differ between runs")
    results = [ev.evaluate(y_true=y, y_pred=p) for p in preds]
    entries.append(make_entry(
        method="likelihood oracle", seeds=SEEDS, results=results, params=0,
        training={"recipe": "none: knows the generator's spectra; exact Gaussian"
                            " log-likelihood in Fourier space, overall scale profiled,"
                            " modes below 1e8 x the float32 rounding floor left out,"
                            " uniform prior (gptextures.oracle)", "generator": generator},
        hardware=_hardware(), train_time_s=0.0, deterministic=True, reference=True,
        description="Bayes-optimal for a Gaussian image normalised once; the generator also"
                    " normalises each level, see docs/evaluation.md for the measured gap.",
        ci=_ci(ev, y, preds[0], bootstrap, 0)))
    timing["oracle_s_per_image"] = float(np.mean(times)) / len(test)

    path = shipped_board_path(name)
    board = Leaderboard.load(path) if path.exists() else Leaderboard.for_dataset(spec)
    if board.fingerprint != spec.fingerprint:
        # The preset's bytes changed (a new ALGORITHM_VERSION): scores on the old data do not
        # rank on the new one, so the board starts again.
        others = [e for e in board.entries if not e.get("reference")]
        if others:
            print(f"{name}: dataset fingerprint changed; dropping {len(others)} non-reference"
                  " entries scored on the old data", file=sys.stderr)
        board = Leaderboard.for_dataset(spec)
    for e in entries:
        board.add(e, replace=True)
    return board, timing


def _exact_model_image(texture, c: int, seed: int, noise: float = 0.0) -> np.ndarray:
    """An image drawn from exactly the oracle's model: unit-variance periodic fields (mean
    excluded, as the oracle's level spectra), weighted and summed without per-level
    normalisation, plus white noise of variance ``noise`` (relative to the unit expected signal
    variance), then the image normalised once."""
    n = texture.size[0] * texture.size[1]
    total = np.sqrt(sum(lv.weight**2 for lv in texture.levels))
    x = np.sqrt(noise) * np.random.default_rng(seed).normal(size=texture.size) if noise else 0.0
    for i, (lv, ell) in enumerate(zip(texture.levels, texture.length_scales(c))):
        f = sample_field(texture.size, ell, seed=seed * 16 + i).astype(np.float64)
        var_no_dc = 1.0 - grid_weights(texture.kernel, texture.size, ell)[0, 0] / n
        x = x + lv.weight / total * f / np.sqrt(var_no_dc)
    x = x - x.mean()
    return (x / x.std()).astype(np.float32 if not noise else np.float64)


def oracle_check(name: str, n_per_class: int, threads: int) -> dict:
    """Oracle accuracy on fresh generator images vs on images from exactly its model."""
    spec = presets.get(name)
    t = spec.texture
    ev = Evaluator(spec)
    oracle = LikelihoodOracle(spec)
    y = np.arange(n_per_class * t.num_classes) % t.num_classes
    out = {"preset": name, "images": int(len(y)), "seed_base": 10**9}
    for kind in ("generator", "exact_model"):
        scores = np.empty((len(y), t.num_classes))
        for i, c in enumerate(y):
            seed = 10**9 + i
            img = (render(t, int(c), seed=seed) if kind == "generator"
                   else _exact_model_image(t, int(c), seed))
            scores[i] = oracle.predict_proba(img[None], threads=threads)[0]
        r = ev.evaluate(y_true=y, y_pred=scores, bootstrap=1000, seed=0)
        out[kind] = {"accuracy": r.accuracy, "level_accuracy": r.level_accuracy,
                     "log_loss": r.log_loss,
                     # = accuracy in expectation when the posterior is exact (calibration)
                     "mean_confidence": float(scores.max(axis=1).mean()),
                     "ci95": {k: list(v) for k, v in r.ci.items() if k.startswith("accuracy")}}
    return out


def calibration_check(name: str, n_per_class: int, threads: int) -> dict:
    """Oracle accuracy and mean confidence on images from exactly its model, for several
    ``min_snr`` thresholds, and with the floor as explicit white noise (every mode kept)."""
    spec = presets.get(name)
    t = spec.texture
    y = np.arange(n_per_class * t.num_classes) % t.num_classes
    seeds = 9 * 10**6 + np.arange(len(y))
    clean = np.stack([_exact_model_image(t, int(c), int(s)) for c, s in zip(y, seeds)])
    floor = 1e-6
    noisy = [_exact_model_image(t, int(c), int(s), floor) for c, s in zip(y, seeds)]
    runs = [("default floor, min_snr", snr, clean, {"min_snr": snr})
            for snr in (1e2, 1e4, 1e6, 1e8, 1e10)]
    runs.append(("white noise 1e-6 in the images, floor 1e-6, every mode", None,
                 np.stack(noisy), {"noise_floor": floor, "min_snr": 0.0}))
    out = {"preset": name, "images": int(len(y)), "runs": []}
    for label, snr, images, kw in runs:
        oracle = LikelihoodOracle(t, **kw)
        p = oracle.predict_proba(images, threads=threads)
        out["runs"].append({"setting": label, "min_snr": snr, "modes_dof": oracle.dof,
                            "accuracy": float(np.mean(p.argmax(1) == y)),
                            "mean_confidence": float(p.max(1).mean())})
    return out


def summary_tables() -> str:
    """Markdown tables of the committed results (what docs/evaluation.md shows)."""
    lines = ["| preset | chance | spectral baseline | likelihood oracle |", "|---|---|---|---|"]
    for name in presets.names():
        path = shipped_board_path(name)
        if not path.exists():
            continue
        board = Leaderboard.load(path)
        cells = {}
        for e in board.entries:
            if not e.get("reference"):
                continue
            a = e["aggregate"]
            lv = ", ".join(f"{n} {100 * a['accuracy/' + n]['mean']:.1f}" for n in board.level_names)
            lo, hi = e["ci"]["intervals"]["accuracy"]
            sd = "" if e["deterministic"] else f" ± {100 * a['accuracy']['std']:.1f}"
            cells[e["method"]] = (f"{100 * a['accuracy']['mean']:.1f}{sd} [{100 * lo:.0f},"
                                  f" {100 * hi:.0f}] ({lv})")
        count = board.entries[0]["count"] if board.entries else 0
        lines.append(f"| {name} ({count} test images) | " + " | ".join(
            cells.get(m, "–") for m in ("chance", "spectral baseline", "likelihood oracle"))
            + " |")
    check = RESULTS / "oracle_check.json"
    if check.exists():
        lines += ["", "| preset | images | oracle on generator images |"
                  " oracle on its own model's images |", "|---|---:|---|---|"]

        def cell(x: dict) -> str:
            lo, hi = x["ci95"]["accuracy"]
            lv = ", ".join(f"{k} {100 * v:.1f}" for k, v in x["level_accuracy"].items())
            return (f"{100 * x['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (levels: {lv};"
                    f" mean confidence {100 * x['mean_confidence']:.1f})")

        for p in json.loads(check.read_text(encoding="utf-8"))["presets"]:
            lines.append(f"| {p['preset']} | {p['images']} | {cell(p['generator'])} |"
                         f" {cell(p['exact_model'])} |")
    cal = RESULTS / "oracle_calibration.json"
    if cal.exists():
        lines += ["", "| preset | modes kept | accuracy | mean confidence |", "|---|---|---:|---:|"]
        for p in json.loads(cal.read_text(encoding="utf-8"))["presets"]:
            for r in p["runs"]:
                kept = (f"signal > {r['min_snr']:.0e} x floor" if r["min_snr"] is not None
                        else r["setting"])
                lines.append(f"| {p['preset']} ({p['images']} images) | {kept} |"
                             f" {100 * r['accuracy']:.1f} | {100 * r['mean_confidence']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=presets.names(), default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--oracle-check", type=int, default=0, metavar="N",
                    help="images per class for the oracle's Bayes-gap check (0: skip)")
    ap.add_argument("--calibration", type=int, default=0, metavar="N",
                    help="images per class for the oracle's calibration check on its own model"
                         " vs min_snr (0: skip); writes results/oracle_calibration.json")
    ap.add_argument("--skip-leaderboards", action="store_true",
                    help="only run the requested checks")
    ap.add_argument("--summary", action="store_true",
                    help="only print Markdown tables of the committed results and exit")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary_tables(), end="")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name in [] if args.skip_leaderboards else (args.preset or DEFAULT_PRESETS):
        t0 = time.perf_counter()
        board, timing = run_preset(name, bootstrap=args.bootstrap, threads=args.threads)
        board.save(OUT / f"{name}.json")
        (OUT / f"{name}.md").write_text(board.to_markdown(heading=f"### {name}"),
                                        encoding="utf-8")
        timing["total_s"] = time.perf_counter() - t0
        timings[name] = timing
        print(board.to_markdown(heading=f"### {name}"))
        print(f"timing: {json.dumps(timing)}\n", flush=True)
    if args.oracle_check:
        check = {"gptextures": __version__, "fft_backend": gfft.backend_name(),
                 "n_per_class": args.oracle_check,
                 "presets": [oracle_check(n, args.oracle_check, args.threads)
                             for n in (args.preset or DEFAULT_PRESETS)]}
        path = RESULTS / "oracle_check.json"
        path.write_text(json.dumps(check, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(check, indent=2))
    if args.calibration:
        cal = {"gptextures": __version__, "fft_backend": gfft.backend_name(),
               "n_per_class": args.calibration,
               "presets": [calibration_check(n, args.calibration, args.threads)
                           for n in (args.preset or ["tiny"])]}
        path = RESULTS / "oracle_calibration.json"
        path.write_text(json.dumps(cal, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(cal, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
