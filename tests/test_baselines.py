"""Baseline training (benchmarks.baselines): run folders, entries, determinism, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gptextures as gt
from benchmarks.baselines import scan as bscan
from benchmarks.baselines.__main__ import main as baselines_main
from benchmarks.baselines.config import default_patch, default_stages, make_config
from benchmarks.baselines.grid import run_jobs
from benchmarks.baselines.train import (
    RunFolderError,
    build_model,
    load_weights,
    predict_logits,
    tile,
    train,
)
from gptextures import runs as gruns
from gptextures.leaderboard import Leaderboard

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**kw):
    args = {"p": {"small": 0.9, "large": 0.5}, "width": 4, "steps": 4, "seed": 0}
    args.update(kw)
    return make_config("tiny", **args)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a), load_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_defaults_follow_the_paper_scaled_with_the_preset():
    # 1024 px: 7 stages (8x8 heatmap), 16 and 256 px patches = Table 1's 64x64 and 4x4 lattices
    spec = gt.presets.get("golkar2018")
    assert default_stages(1024) == 7 and default_stages(256) == 5 and default_stages(512) == 6
    assert [default_patch(lv.length_scales) for lv in spec.texture.levels] == [16.0, 256.0]
    mini = gt.presets.get("golkar2018-mini")
    assert [default_patch(lv.length_scales) for lv in mini.texture.levels] == [4.0, 64.0]
    cfg = make_config("golkar2018-mini", spec=mini, p={"small": 0.99, "large": 0.94})
    net = build_model(cfg)
    assert net.lattices == {"small": (64, 64), "large": (4, 4)}
    full = build_model(make_config("golkar2018", spec=spec, width=2))
    assert full.lattices == {"small": (64, 64), "large": (4, 4)}


def test_run_folder_is_complete_and_scores_what_it_predicts(tmp_path):
    cfg = tiny_config()
    res = train(cfg, tmp_path / "run", progress=False)
    folder = tmp_path / "run"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "dataset.json", "model.safetensors", "predictions.json",
            "evaluation.json", "loss_curve.csv", "run.json"} <= names
    assert "checkpoint.pt" not in names  # removed once the run is complete
    run = gruns.load_run(folder)
    assert run.evaluation.accuracy == res.test.accuracy
    assert run.config["masks"] == [{"name": "small", "patch_px": 4.0, "p": 0.9},
                                   {"name": "large", "patch_px": 16.0, "p": 0.5}]
    assert run.run["hardware"]["device"] == "cpu" and run.run["wall_time_s"] > 0
    curve = (folder / "loss_curve.csv").read_text().splitlines()
    assert curve[0] == "step,loss,elapsed_s" and len(curve) == 1 + cfg.steps
    # the weights load (safetensors, no pickle) into a fresh model of the config
    net = build_model(cfg)
    net.load_state_dict(load_weights(folder))
    test = gt.load("tiny", "test")
    logits = predict_logits(net, test.images, 1, torch.device("cpu"))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    sub = gt.evaluation.read_submission(folder / "predictions.json")
    np.testing.assert_allclose(sub.y_pred, probs, rtol=1e-6, atol=1e-9)
    # a second call with the same config reports the finished run instead of retraining
    again = train(cfg, folder, progress=False)
    assert again.already_complete and again.test.accuracy == res.test.accuracy


@pytest.mark.slow  # 11-26 s on 2 shared cores (training runs)
@pytest.mark.parametrize("efficient", [False, True])
def test_same_seed_gives_the_same_weights_and_other_seeds_differ(tmp_path, efficient):
    # p_small 0.99: the efficient path really crops (net.last_plan), it is not the naive step
    cfg = tiny_config(steps=3, efficient=efficient, p={"small": 0.99, "large": 0.5})
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    train(cfg.replace(seed=1), tmp_path / "c", progress=False)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")
    if efficient:
        net = build_model(cfg, torch.Generator().manual_seed(0))
        net(torch.from_numpy(gt.load("tiny", "train").images)[:, None]).sum().backward()
        assert net.last_plan[0]["cropped"]


@pytest.mark.slow  # 11-26 s on 2 shared cores (training runs)
@pytest.mark.parametrize("efficient", [False, True])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, efficient):
    cfg = tiny_config(steps=6, efficient=efficient, p={"small": 0.99, "large": 0.5})
    train(cfg, tmp_path / "whole", progress=False)
    part = train(cfg, tmp_path / "split", progress=False, stop_after=2)
    assert part.test is None and (tmp_path / "split" / "checkpoint.pt").is_file()
    assert not (tmp_path / "split" / "run.json").exists()
    with pytest.raises(ValueError, match="run.json"):
        gruns.load_run(tmp_path / "split")  # an unfinished run is not an entry
    res = train(cfg, tmp_path / "split", progress=False)
    assert res.resumed_from == 2
    assert same_weights(tmp_path / "whole", tmp_path / "split")
    a = (tmp_path / "whole" / "loss_curve.csv").read_text().splitlines()
    b = (tmp_path / "split" / "loss_curve.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in a] == [r.split(",")[:2] for r in b]


@pytest.mark.slow  # 5-10 s
def test_signal_mid_step_stops_at_the_step_boundary_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGINT or SIGTERM arriving inside a forward pass: the step finishes, its checkpoint is
    written, the run stops; the rerun ends with the weights of an uninterrupted run."""
    import benchmarks.baselines.train as train_mod

    cfg = tiny_config(steps=6)
    train(cfg, tmp_path / "whole", progress=False)
    real = train_mod.build_model

    for signum, expected in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)):
        calls = []

        def with_hook(c, generator=None, signum=signum, calls=calls):
            net = real(c, generator)

            def hook(module, inputs, output):
                calls.append(1)
                if len(calls) == 3:  # inside the third training step's forward
                    os.kill(os.getpid(), signum)
            net.register_forward_hook(hook)
            return net

        monkeypatch.setattr(train_mod, "build_model", with_hook)
        run = tmp_path / f"sig{signum}"
        with pytest.raises(expected) as info:
            train(cfg, run, progress=False)
        if expected is SystemExit:
            assert info.value.code == 128 + signal.SIGTERM
        ck = torch.load(run / "checkpoint.pt", weights_only=True)
        assert ck["step"] == 3 and len(ck["losses"]) == 3
        monkeypatch.setattr(train_mod, "build_model", real)
        res = train(cfg, run, progress=False)
        assert res.resumed_from == 3
        assert same_weights(tmp_path / "whole", run)
    # the handlers of the caller are back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_rerun_with_other_evaluation_settings_is_refused(tmp_path):
    cfg = tiny_config(steps=2)
    train(cfg, tmp_path / "r", progress=False, test=False)
    with pytest.raises(RunFolderError, match=r"evaluation\.test: False here vs True asked"):
        train(cfg, tmp_path / "r", progress=False)


@pytest.mark.slow
def test_killed_process_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL mid-run (no chance to clean up), then the same command: same final weights."""
    cmd = [sys.executable, "-m", "benchmarks.baselines", "train", "--dataset", "tiny",
           "--p-small", "0.9", "--p-large", "0.5", "--width", "4", "--steps", "80",
           "--lr", "1e-3", "--seed", "3", "--threads", "1", "--checkpoint-every", "5",
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = subprocess.run([*cmd, "--run-dir", str(tmp_path / "ref")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([*cmd, "--run-dir", str(tmp_path / "k")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "k" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed")
    assert not (tmp_path / "k" / "run.json").exists()
    out = subprocess.run([*cmd, "--run-dir", str(tmp_path / "k")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resumed from step" in out.stdout
    assert same_weights(tmp_path / "ref", tmp_path / "k")


@pytest.mark.slow  # 11-26 s on 2 shared cores (training runs)
def test_entry_from_three_seeds_is_a_valid_leaderboard_entry(tmp_path):
    folders = []
    for seed in range(3):
        folders.append(tmp_path / f"s{seed}")
        train(tiny_config(seed=seed, steps=2), folders[-1], progress=False)
    entry = gruns.entry_from_runs(folders)
    board = Leaderboard.for_dataset(gt.presets.get("tiny"))
    e = board.add(entry)
    assert e["seeds"] == [0, 1, 2] and e["params"] > 0
    assert [m["name"] for m in e["backdrop_masks"]] == ["small", "large"]
    accs = [gruns.load_run(f).evaluation.accuracy for f in folders]
    assert e["aggregate"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert "GPNet backdrop small p=0.9, large p=0.5" in board.to_markdown()
    # runs of another recipe are not seeds of this one
    train(tiny_config(seed=5, steps=3), tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="training.steps"):
        gruns.entry_from_runs([*folders, tmp_path / "other"])
    with pytest.raises(ValueError, match="repeated seeds"):
        gruns.entry_from_runs([folders[0], folders[0], folders[1]])
    # the CLI prints the same entry
    assert baselines_main(["entry", *map(str, folders)]) == 0


def test_tampered_evaluation_is_caught(tmp_path):
    train(tiny_config(steps=1), tmp_path / "r", progress=False)
    ev = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    ev["accuracy"] = 1.0 - ev["accuracy"] + 0.01
    (tmp_path / "r" / "evaluation.json").write_text(json.dumps(ev))
    with pytest.raises(ValueError, match="disagrees with predictions.json"):
        gruns.load_run(tmp_path / "r")


def test_tiling_cuts_fixed_location_tiles():
    images = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    t = tile(images, 4)
    assert t.shape == (8, 4, 4)
    for n in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(t[4 * n + 2 * i + j],
                                              images[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4])
    assert tile(images, 1) is images
    assert tile(images, 16).shape == (32, 2, 2)
    with pytest.raises(ValueError, match="k\\*k"):
        tile(images, 3)


def test_crop_baseline_trains_on_tiles_and_scores_whole_images(tmp_path):
    cfg = make_config("tiny", crop_tiles=4, width=4, steps=2)
    assert cfg.input_px == 32 and cfg.label() == "32x32 crop (4 tiles)"
    res = train(cfg, tmp_path / "crop", progress=False)
    run = gruns.load_run(tmp_path / "crop")
    assert run.config["crop"]["tiles"] == 4 and run.config["model"]["kwargs"]["input_size"] == 32
    assert res.test.count == gt.presets.get("tiny").num_samples("test")  # whole test images
    # a test image's score is the mean of its four tiles' logits
    net = build_model(cfg)
    net.load_state_dict(load_weights(tmp_path / "crop"))
    img = gt.load("tiny", "test").images[:1]
    whole = predict_logits(net, img, 4, torch.device("cpu"))
    net.eval()
    with torch.no_grad():
        tiles = net(torch.from_numpy(tile(img, 4))[:, None]).double().numpy()
    np.testing.assert_allclose(whole[0], tiles.mean(0), rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"dataset": "no-such-preset"}, "no-such-preset"),
    ({"p": {"small": 1.0}}, r"p\['small'\].*\[0, 1\)"),
    ({"p": {"small": -0.1}}, r"p\['small'\].*\[0, 1\)"),
    ({"p": {"medium": 0.5}}, "unknown level"),
    ({"p": {"small": 0.5}, "patch": {"small": 1}}, r"does not fit the network.*\[2, 64\] px"),
    ({"p": {"large": 0.5}, "patch": {"large": 128}},
     r"does not fit the network.*\[2, 64\] px"),
    ({"threads": 0}, "threads must be an int"),
    ({"crop_tiles": 3}, "square number"),
    ({"width": 0}, "width must be an int"),
    ({"steps": 0}, "steps must be an int"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_bad_input_is_refused_with_the_range(kwargs, match):
    args = {"dataset": "tiny", **kwargs}
    with pytest.raises(ValueError, match=match):
        make_config(args.pop("dataset"), **args)


def test_run_folder_of_another_config_is_refused(tmp_path):
    train(tiny_config(steps=1), tmp_path / "r", progress=False)
    with pytest.raises(RunFolderError, match=r"another config \(training\.lr: 0\.001 here vs"):
        train(tiny_config(steps=1, lr=3e-3), tmp_path / "r", progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no config.json"):
        train(tiny_config(steps=1), tmp_path / "junk", progress=False)
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"  # nothing deleted
    res = train(tiny_config(steps=1, lr=3e-3), tmp_path / "r", progress=False, overwrite=True)
    assert res.config["training"]["lr"] == 3e-3


def test_test_split_is_never_used_for_selection(tmp_path):
    with pytest.raises(ValueError, match="'test' cannot be used for model selection"):
        train(tiny_config(), tmp_path / "r", eval_split="test", eval_every=1, progress=False)


def test_cli_errors_name_the_value(tmp_path, capsys):
    assert baselines_main(["train", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert baselines_main(["train", "--dataset", "tiny", "--p-small", "1.5", "--out",
                           str(tmp_path)]) == 2
    assert "[0, 1)" in capsys.readouterr().err


@pytest.mark.slow  # 11-26 s on 2 shared cores (training runs)
def test_scan_selects_on_val_and_records_the_curves(tmp_path):
    spec = gt.DatasetSpec(
        name="valtest", version="1", seed=1, splits={"train": 1, "val": 2, "test": 1},
        texture=gt.TextureSpec(size=64, levels=(gt.Level("small", (2.0, 3.0)),
                                                gt.Level("large", (6.0, 10.0)))))
    path = tmp_path / "valtest.json"
    path.write_text(spec.to_json())
    rows = {"no masking": {"dataset": str(path), "width": 4}}
    scan = bscan.run_scan(rows, lrs=[1e-3, 1e-2], steps=4, eval_every=2, seeds=[0, 1],
                          runs_dir=tmp_path / "scan", progress=False)
    sel = scan["selected"]["no masking"]
    curves = scan["curves"]["no masking"]
    assert set(curves) == {"0.001", "0.01"} and all(set(c) == {"0", "1"} for c in
                                                    curves.values())
    assert [p["step"] for p in curves["0.01"]["0"]] == [2, 4]
    best = max(np.mean([c[k][i]["accuracy"] for k in c]) for c in curves.values()
               for i in range(2))
    assert sel["val_accuracy"] == pytest.approx(best)
    # scan runs never score test: no predictions written
    assert not list((tmp_path / "scan").rglob("predictions.json"))
    bscan.save(scan, tmp_path / "out" / "scan", "test scan")
    assert "| no masking |" in (tmp_path / "out" / "scan.md").read_text()
    # the choice applies to the scanned recipe only, whatever the lr, steps and seed
    cfg = make_config(str(path), width=4, lr=0.5, steps=9, seed=7)
    assert bscan.matching(scan, cfg)["lr"] == sel["lr"]
    assert bscan.matching(scan, make_config(str(path), width=8)) is None
    assert bscan.matching(scan, make_config(str(path), width=4, efficient=True)) is None


def test_select_rule_breaks_ties_by_log_loss_then_steps():
    pt = lambda s, a, ll: {"step": s, "accuracy": a, "log_loss": ll}  # noqa: E731
    curves = {1e-3: {0: [pt(10, 0.5, 1.0), pt(20, 0.6, 0.9)], 1: [pt(10, 0.5, 1.0),
                                                                  pt(20, 0.6, 0.9)]},
              1e-2: {0: [pt(10, 0.6, 0.8), pt(20, 0.6, 0.8)], 1: [pt(10, 0.6, 0.8),
                                                                  pt(20, 0.6, 0.8)]}}
    sel = bscan.select(curves)
    assert (sel["lr"], sel["steps"]) == (1e-2, 10)
    # only steps scored for every seed compete; one seed has no spread to show
    ragged = {1e-3: {0: [pt(10, 0.5, 1.0), pt(20, 0.9, 0.5)], 1: [pt(10, 0.5, 1.0)]}}
    assert bscan.select(ragged)["steps"] == 10
    assert bscan.select({1e-3: {0: [pt(10, 0.5, 1.0)]}})["val_accuracy_std"] is None
    with pytest.raises(ValueError, match="every scan seed"):
        bscan.select({1e-3: {0: [pt(10, 0.5, 1.0)], 1: [pt(20, 0.5, 1.0)]}})


@pytest.mark.slow  # 11-26 s on 2 shared cores (training runs)
def test_jobs_run_in_processes_and_on_dask_with_the_same_results(tmp_path):
    def job(d, seed):
        return {"config": {"dataset": "tiny", "width": 4, "steps": 2, "seed": seed},
                "run_dir": str(tmp_path / d / f"s{seed}")}

    serial = run_jobs([job("a", 0), job("a", 1)], progress=False)
    procs = run_jobs([job("b", 0), job("b", 1)], workers=2, progress=False)
    assert [s["test"] for s in serial] == [s["test"] for s in procs]
    assert same_weights(tmp_path / "a" / "s1", tmp_path / "b" / "s1")
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        dask = run_jobs([job("c", 0), job("c", 1)], scheduler=cluster.scheduler_address,
                        progress=False)
    assert [s["test"] for s in dask] == [s["test"] for s in serial]


def test_unreachable_scheduler_fails_fast_naming_it():
    pytest.importorskip("dask.distributed")
    t = time.monotonic()
    with pytest.raises(ValueError, match="tcp://127.0.0.1:9"):
        run_jobs([{"config": {"dataset": "tiny"}, "run_dir": "x"}],
                 scheduler="tcp://127.0.0.1:9", progress=False)
    assert time.monotonic() - t < 30


def test_gptextures_leaderboard_add_takes_run_folders(tmp_path, capsys):
    from gptextures.cli import main as gt_main

    folders = [tmp_path / f"s{seed}" for seed in range(3)]
    for seed, f in enumerate(folders):
        train(tiny_config(seed=seed, steps=1), f, progress=False)
    board = tmp_path / "tiny.json"
    assert gt_main(["leaderboard", "add", str(board), *map(str, folders), "--dataset", "tiny",
                    "--method", "my GPNet"]) == 0
    assert "added 'my GPNet'" in capsys.readouterr().out
    entry = Leaderboard.load(board).entries[0]
    assert entry["seeds"] == [0, 1, 2] and entry["training"]["steps"] == 1
    # a run folder next to an entry file is refused, naming what was given
    assert gt_main(["leaderboard", "add", str(board), str(folders[0]),
                    str(tmp_path / "e.json")]) == 2
    assert "run folders only" in capsys.readouterr().err
