"""Publishing, offline: what gets uploaded, the cards, the preview, leaderboard merging."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("datasets")
pytest.importorskip("matplotlib")

from gptextures import presets  # noqa: E402
from gptextures.cli import main  # noqa: E402
from gptextures.generation import generate  # noqa: E402
from gptextures.leaderboard import Leaderboard  # noqa: E402

from .publish_helpers import make_run_folder  # noqa: E402


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    return generate(presets.get("tiny"), out, formats="hf").paths["hf"]


@pytest.fixture(scope="module")
def tiny_plan(tiny_hf: Path):
    from gptextures.publication import plan_dataset

    with plan_dataset(tiny_hf, "alice/tiny") as plan:
        yield plan


def hf_content(folder: Path) -> str:
    """The content id a folder's Parquet file names carry (gptextures.io.hf.content_id)."""
    return json.loads((folder / "gptextures.json").read_text())["content"]


# ---- the dataset card --------------------------------------------------------------------
def test_dataset_card_has_what_the_hub_shows_and_round_trips(tiny_plan) -> None:
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    spec = presets.get("tiny")
    card = DatasetCard(tiny_plan.card)
    meta = card.data.to_dict()
    assert meta["license"] == "bsd-3-clause"
    assert meta["task_categories"] == ["image-classification"]
    assert meta["pretty_name"] == "gptextures tiny v1.0.0"
    assert meta["size_categories"] == ["n<1K"]
    assert "gptextures" in meta["tags"]
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    from gptextures.io.hf import data_pattern

    files = [u.path_in_repo for u in tiny_plan.files if u.path_in_repo.startswith("data/")]
    content = files[0].rsplit("-", 1)[1].removesuffix(".parquet")  # the folder's content id
    assert all(content in f for f in files)
    assert sorted(configs["default"]["data_files"], key=str) == [
        {"split": "test", "path": data_pattern("test", content)},
        {"split": "train", "path": data_pattern("train", content)}]
    info = DatasetInfosDict.from_dataset_card_data(card.data)["default"]
    assert info.features["label"].names == spec.class_names
    assert info.features["label_small"].names == ["l2", "l3"]
    assert {s: info.splits[s].num_examples for s in info.splits} == {"train": 16, "test": 16}
    # The metadata survives a round trip through huggingface_hub's own YAML, offline.
    again = DatasetCard(card.content)
    assert again.data.to_dict() == meta
    assert DatasetCard(f"---\n{card.data.to_yaml()}\n---\n{card.text}").data.to_dict() == meta
    text = card.text
    assert spec.fingerprint in text
    assert "resolve/v1.0.0/preview.png" in text and 'width="800"' in text
    assert 'load_dataset("alice/tiny", revision="v1.0.0"' in text
    assert "gptextures generate tiny --out data --format hf" in text
    assert "<!-- leaderboard:start -->" in text and "| likelihood oracle |" in text
    assert "@article{golkar2018backdrop" in text


def test_the_cards_regenerate_command_rewrites_the_parquet_files(tiny_plan, tiny_hf: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch) -> None:
    line = next(x for x in tiny_plan.card.splitlines() if x.startswith("$ gptextures generate"))
    argv = line[2:].split()[1:]
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--no-progress"]) == 0
    rec = json.loads((tiny_hf / "gptextures.json").read_text())
    for f in rec["files"]:
        assert (tmp_path / "data" / "tiny-hf" / f["name"]).read_bytes() == \
            (tiny_hf / f["name"]).read_bytes()


def test_the_folder_card_is_unchanged_by_the_hub_sections(tiny_hf: Path) -> None:
    from gptextures.io.hf import data_pattern, dataset_card

    local = (tiny_hf / "README.md").read_text()
    content = json.loads((tiny_hf / "gptextures.json").read_text())["content"]
    patterns = {s: data_pattern(s, content) for s in ("test", "train")}
    assert local == dataset_card(presets.get("tiny"), splits=["test", "train"],
                                 data_files=patterns)
    assert "leaderboard:start" not in local and "path/or/repo" in local


def test_plan_lists_card_data_spec_preview_and_board(tiny_plan, tiny_hf: Path) -> None:
    spec = presets.get("tiny")
    paths = [u.path_in_repo for u in tiny_plan.files]
    assert paths[0] == "README.md"
    parquet = {f["name"] for f in json.loads((tiny_hf / "gptextures.json").read_text())["files"]}
    assert parquet == {f"data/{s}-00000-of-00001-{hf_content(tiny_hf)}.parquet"
                       for s in ("test", "train")}
    assert set(paths) == {"README.md", "gptextures.json", "spec.json", "preview.png",
                          *parquet, f"leaderboards/{spec.fingerprint}.json"}
    assert json.loads(tiny_plan.file("spec.json").source) == json.loads(spec.to_json())
    board = Leaderboard.from_dict(json.loads(tiny_plan.file(
        f"leaderboards/{spec.fingerprint}.json").source))
    assert board.fingerprint == spec.fingerprint and len(board.entries) == 3
    assert tiny_plan.tag == "v1.0.0" and tiny_plan.identity == ("fingerprint", spec.fingerprint)


def test_dry_run_prints_files_and_card_without_token_or_network(tiny_hf: Path, capsys,
                                                                monkeypatch) -> None:
    # conftest sets HF_HUB_OFFLINE=1: any request would fail; no token is set either.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tiny_hf.parent / "no-home"))
    assert main(["publish", str(tiny_hf), "--repo", "alice/tiny", "--tag", "v1.0.0-rc1",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing is uploaded" in out
    assert "tag v1.0.0-rc1" in out
    assert f"data/train-00000-of-00001-{hf_content(tiny_hf)}.parquet" in out
    assert "---- README.md (the card) ----" in out and "pretty_name: gptextures tiny" in out
    assert not (tiny_hf.parent / "no-home").exists()


@pytest.mark.parametrize("argv, message", [
    (["--repo", "alice"], "repo: expected OWNER/NAME"),
    (["--repo", "alice/tiny", "--tag", "v1 .0"], "tag: expected a branch/tag name"),
    (["--repo", "alice/tiny", "--revision", "a..b"], "revision: expected"),
    (["--repo", "alice/tiny", "--dataset-repo", "alice/x"], "--dataset-repo: only for run"),
])
def test_bad_publish_arguments_are_named(tiny_hf: Path, capsys, argv, message) -> None:
    assert main(["publish", str(tiny_hf), *argv, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_shards_and_unfinished_folders_are_refused(tmp_path: Path) -> None:
    from gptextures.publication import plan_dataset

    spec = presets.get("tiny")
    shard = generate(spec, tmp_path, formats="hf", shard=(0, 2)).paths["hf"]
    with pytest.raises(ValueError, match="shard 0 of 2; join the shards first"):
        plan_dataset(shard, "alice/tiny")
    h5 = generate(spec, tmp_path, formats="hdf5", shard=(1, 2)).paths["hdf5"]
    with pytest.raises(ValueError, match="a shard"):
        plan_dataset(h5, "alice/tiny")
    with pytest.raises(FileNotFoundError):
        plan_dataset(tmp_path / "nothing", "alice/tiny")


def test_an_hdf5_file_is_exported_with_its_own_bytes(tmp_path: Path, tiny_hf: Path) -> None:
    import h5py

    from gptextures.publication import plan_dataset

    h5 = generate(presets.get("tiny"), tmp_path, formats="hdf5").paths["hdf5"]
    with plan_dataset(h5, "alice/tiny") as plan:
        assert any("exported" in n for n in plan.notes)
        for u in plan.files:
            if u.path_in_repo.startswith("data/"):
                assert u.source.read_bytes() == (tiny_hf / u.path_in_repo).read_bytes()
    # A file whose stored image is not what this machine renders is refused, not re-rendered.
    with h5py.File(h5, "r+") as f:
        img = f["test/images"][3]
        img[0, 0] += 1.0
        f["test/images"][3] = img
    with pytest.raises(ValueError, match="image 3 of split 'test'.*differs"):
        plan_dataset(h5, "alice/tiny")


# ---- the preview ---------------------------------------------------------------------------
def test_preview_panels_show_every_scale_at_a_visible_size() -> None:
    from gptextures.io.scale_preview import MIN_SCALE_DISPLAY_PX, scale_panels
    from gptextures.textures import render_components

    spec = presets.get("golkar2018-mini")
    panels = scale_panels("golkar2018-mini", panel_px=166)
    assert panels.split == "train" and len(panels.rows) == spec.num_classes
    crop = panels.crop
    finest = 2.375
    assert crop.zoom == 3 and crop.zoom * finest >= MIN_SCALE_DISPLAY_PX
    assert crop.size * crop.zoom <= 166 < (crop.size + 1) * crop.zoom
    for row in panels.rows:
        smp = spec.sample("train", row.index)
        assert smp.label == row.class_index and smp.seed == row.seed
        assert row.image.tobytes() == smp.image.tobytes()
        fields = render_components(spec.texture, row.class_index, seed=row.seed)
        for name, f in fields.items():
            assert row.fields[name].tobytes() == f.tobytes()
        # Each level's window spans ~24 of its longest length scale (whole image if larger).
        assert row.level_windows["small"].size == 60
        assert row.level_windows["large"].size == 256
        np.testing.assert_array_equal(crop.take(row.image),
                                      row.image[100:155, 100:155])


def test_preview_of_a_folder_shows_its_stored_images(tiny_hf: Path, tmp_path: Path) -> None:
    from PIL import Image

    from gptextures.io import load
    from gptextures.io.scale_preview import scale_panels, scale_preview

    panels = scale_panels(tiny_hf)
    data = load(tiny_hf, "train")
    for row in panels.rows:
        assert row.image.tobytes() == data.images[row.index].tobytes()
    out = scale_preview(tiny_hf, tmp_path / "p.png")
    with Image.open(out) as im:
        assert im.size[0] == 1600  # 800 display px at density 2
    with pytest.raises(ValueError, match="out: expected a .png"):
        scale_preview(tiny_hf, tmp_path / "p.jpg")
    assert main(["preview", str(tiny_hf), "--scales", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes() == out.read_bytes()  # same figure, same bytes


# ---- runs and the model card ---------------------------------------------------------------
def test_model_card_holds_per_level_results_as_eval_results(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from gptextures.publication import plan_run

    spec = presets.get("tiny")
    run = make_run_folder(tmp_path / "run", spec, wrong=3)
    with plan_run(run, "alice/gpnet", dataset_repo="alice/tiny", tag="seed0") as plan:
        card = ModelCard(plan.card)
        ev = json.loads((run / "evaluation.json").read_text())
        results = {r.metric_name: r for r in card.data.eval_results}
        assert results["Joint accuracy (all levels)"].metric_value == \
            pytest.approx(1 - 3 / 16) == ev["accuracy"]
        for lv in ("small", "large"):
            assert results[f"Accuracy, level {lv}"].metric_value == ev["level_accuracy"][lv]
        r = results["Joint accuracy (all levels)"]
        assert (r.dataset_type, r.dataset_revision, r.dataset_split) == \
            ("alice/tiny", "v1.0.0", "test")
        assert card.data.datasets == ["alice/tiny"] and card.data.license == "bsd-3-clause"
        for text in ("`small`: 4-px patches, drop probability p = 0.9", "| lr | `0.001` |",
                     "**Seed**: 0", "cpu: 2 threads, test cpu", "1.5 s"):
            assert text in card.text
        assert plan.requires == [("alice/tiny", "v1.0.0", spec.fingerprint)]
        assert {u.path_in_repo for u in plan.files} >= {"model.safetensors", "config.json",
                                                        "predictions.json", "run.json"}


def test_torch_state_dict_weights_are_converted_to_safetensors(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from gptextures.publication import plan_run

    run = make_run_folder(tmp_path / "run", presets.get("tiny"), weights="pt")
    with plan_run(run, "alice/gpnet", dataset_repo="alice/tiny") as plan:
        up = plan.file("model.safetensors")
        got = load_file(str(up.source))
        want = torch.load(run / "model.pt", weights_only=True)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k])
        assert any("converted model.pt" in n for n in plan.notes)


def test_unfinished_or_inconsistent_runs_are_refused(tmp_path: Path) -> None:
    from gptextures.publication import plan_run

    spec = presets.get("tiny")
    run = make_run_folder(tmp_path / "a", spec)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(ValueError, match="run.json.*status is 'running'"):
        plan_run(run, "alice/m", dataset_repo="alice/tiny")
    run = make_run_folder(tmp_path / "b", spec)
    ev = json.loads((run / "evaluation.json").read_text())
    (run / "evaluation.json").write_text(json.dumps({**ev, "accuracy": 0.99}))
    with pytest.raises(ValueError, match="evaluation.json.*disagrees with predictions.json"):
        plan_run(run, "alice/m", dataset_repo="alice/tiny")
    shutil.rmtree(run)
    with pytest.raises(FileNotFoundError):
        plan_run(run, "alice/m", dataset_repo="alice/tiny")


# ---- leaderboards ------------------------------------------------------------------------
def _board(tmp_path: Path) -> Leaderboard:
    from gptextures.publication import shipped_board

    return Leaderboard.load(shipped_board("tiny"))


def test_merge_adds_skips_and_reports_conflicts(tmp_path: Path) -> None:
    from gptextures.evaluation import FingerprintMismatchError
    from gptextures.hub import merge_boards

    full = _board(tmp_path)
    base = Leaderboard(full.dataset, full.level_names, full.split, full.entries[:1])
    incoming = Leaderboard(full.dataset, full.level_names, full.split, full.entries)
    rep = merge_boards(base, incoming, replace=False)
    assert rep.same == [full.entries[0]["method"]] and len(rep.added) == 2
    assert len(base.entries) == 3
    changed = dict(full.entries[1], notes="rerun")
    other = Leaderboard(full.dataset, full.level_names, full.split, [changed])
    rep = merge_boards(base, other, replace=False)
    assert rep.conflicts == [changed["method"]]
    assert next(e for e in base.entries if e["method"] == changed["method"])["notes"] != "rerun"
    rep = merge_boards(base, other, replace=True)
    assert rep.replaced == [changed["method"]]
    mini = Leaderboard.for_dataset(presets.get("golkar2018-mini"))
    with pytest.raises(FingerprintMismatchError):
        merge_boards(base, mini, replace=False)
