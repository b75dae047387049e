"""Publishing through ``huggingface_hub`` for real, against the stand-in (tests/hub_standin.py).

Each scenario runs the ``gptextures`` CLI in a subprocess with ``HF_ENDPOINT`` pointing at the
stand-in (127.0.0.1) and ``HF_HUB_DISABLE_XET=1``; the data are loaded back with
``datasets.load_dataset`` from the stand-in. A recognisable fake token must never appear in any
output, card, stored file or folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
pytest.importorskip("safetensors")

from gptextures import presets  # noqa: E402
from gptextures.generation import generate  # noqa: E402
from gptextures.spec import DatasetSpec  # noqa: E402

from .hub_standin import HubServer  # noqa: E402
from .publish_helpers import (  # noqa: E402
    READ_ONLY,
    ROOT,
    SECRET,
    every_file_text,
    hub_env,
    make_run_folder,
    run_cli,
)


@pytest.fixture(scope="module")
def hub():
    with HubServer({SECRET: ("alice", "write"), READ_ONLY: ("alice", "read")}) as server:
        yield server


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    tiny = presets.get("tiny")
    other = DatasetSpec.from_dict({**json.loads(tiny.to_json()), "seed": 1})
    return {"tiny": generate(tiny, root / "a", formats="hf").paths["hf"],
            "other": generate(other, root / "b", formats="hf").paths["hf"],
            "root": root}


@pytest.fixture
def env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    return hub_env(hub.url, tmp_path / "hf-home")


def _publish(source: Path, repo: str, *extra: str) -> dict:
    return {"argv": ["publish", str(source), "--repo", repo, "--no-progress", *extra]}


def _no_secret(hub: HubServer, text: str, *folders: Path) -> None:
    assert SECRET not in text
    for repo in hub.state.repos.values():
        for commit in repo.commits.values():
            for blob in commit.files.values():
                assert SECRET.encode() not in blob.data
        for blob in repo.lfs.values():
            assert SECRET.encode() not in blob
    for f in folders:
        assert SECRET not in every_file_text(f)


def _tag_commit(hub: HubServer, repo: str, tag: str, kind: str = "dataset") -> str | None:
    return hub.state.repo(kind, repo).tags.get(tag)


# ---- the round trip ------------------------------------------------------------------------
_LOAD = r"""
import json, sys
import numpy as np
from datasets import load_dataset
from huggingface_hub import HfFileSystem

repo, rev, out, first_test_file = sys.argv[1:5]
ds = load_dataset(repo, revision=rev)
arrays = {}
for split in ds:
    d = ds[split].with_format("numpy")[:]
    arrays[f"{split}/image"] = d["image"]
    arrays[f"{split}/label"] = d["label"]
np.savez(out + ".npz", **arrays)
names = {s: ds[s].features["label"].names for s in ds}
# Range requests: read the last 8 bytes of a Parquet file (its footer length and magic).
with HfFileSystem().open(f"datasets/{repo}@{rev}/{first_test_file}", "rb") as f:
    f.seek(-8, 2)
    tail = f.read(8).hex()
json.dump({"splits": sorted(ds), "names": names, "tail": tail}, open(out + ".json", "w"))
"""


def test_publish_then_load_dataset_from_the_hub(hub: HubServer, data: dict, env: dict,
                                                tmp_path: Path) -> None:
    from gptextures.io import load

    repo = "alice/tiny"
    hub.state.faults["lfs-upload"] = 1  # one upload dropped mid-body: the client retries it
    start = len(hub.state.requests)
    (res, again), whole = run_cli([_publish(data["tiny"], repo), _publish(data["tiny"], repo)],
                                  env)
    assert res["rc"] == 0, res
    assert "tag v1.0.0 (new)" in res["out"]
    assert f'load_dataset("{repo}", revision="v1.0.0")' in res["out"]
    puts = [r for r in hub.state.requests[start:] if r.startswith("PUT /lfs-upload/")]
    assert len(puts) == len(set(puts)) + 1 == 4  # 3 LFS files, one of them sent twice
    # Publishing the unchanged folder again makes no commit and keeps the tag.
    assert again["rc"] == 0, again
    assert "no new commit" in again["out"] and "already there, same fingerprint" in again["out"]
    repo_state = hub.state.repo("dataset", repo)
    assert len(repo_state.commits) == 2  # the repo's initial commit + one publication
    tagged = repo_state.tags["v1.0.0"]
    assert repo_state.branches["main"] == tagged
    files = hub.files("dataset", repo, "v1.0.0")
    rec = json.loads((data["tiny"] / "gptextures.json").read_text())
    for f in rec["files"]:
        assert files[f["name"]] == (data["tiny"] / f["name"]).read_bytes()
    assert files["gptextures.json"] == (data["tiny"] / "gptextures.json").read_bytes()
    assert files["preview.png"][:8] == b"\x89PNG\r\n\x1a\n"

    # Load it back with datasets from the stand-in: splits, class names and bytes.
    first = json.loads((data["tiny"] / "gptextures.json").read_text())["files"]
    first_test = next(f["name"] for f in first if f["split"] == "test")
    r = subprocess.run([sys.executable, "-c", _LOAD, repo, "v1.0.0", str(tmp_path / "got"),
                        first_test], env=env, capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((tmp_path / "got.json").read_text())
    spec = presets.get("tiny")
    assert got["splits"] == ["test", "train"]
    assert got["names"] == {"test": spec.class_names, "train": spec.class_names}
    parquet = (data["tiny"] / first_test).read_bytes()
    assert bytes.fromhex(got["tail"]) == parquet[-8:]
    arrays = np.load(tmp_path / "got.npz")
    for split in ("train", "test"):
        want = load(data["tiny"], split)
        assert arrays[f"{split}/image"].dtype == np.float32
        assert arrays[f"{split}/image"].tobytes() == want.images.tobytes()
        np.testing.assert_array_equal(arrays[f"{split}/label"], want.labels)
    assert any(r.startswith("GET /datasets/alice/tiny/resolve/") for r in hub.state.requests)
    _no_secret(hub, whole + r.stdout + r.stderr, data["root"], tmp_path)


def test_a_tag_holding_another_fingerprint_is_refused(hub: HubServer, data: dict,
                                                      env: dict) -> None:
    repo = "alice/tiny-tags"
    (first, clash, other_tag), whole = run_cli(
        [_publish(data["tiny"], repo, "--private"), _publish(data["other"], repo),
         _publish(data["other"], repo, "--tag", "v1.0.0-seed1", "--revision", "seed1")], env)
    assert first["rc"] == 0, first
    assert clash["rc"] == 2
    assert "tag: v1.0.0 of alice/tiny-tags already holds fingerprint" in clash["err"]
    assert "tags are immutable versions" in clash["err"]
    assert other_tag["rc"] == 0, other_tag
    state = hub.state.repo("dataset", repo)
    assert state.private
    assert len(state.commits) == 3  # initial + tiny + the other dataset under its own tag
    assert state.tags["v1.0.0"] == state.branches["main"]
    assert state.tags["v1.0.0-seed1"] == state.branches["seed1"] != state.branches["main"]
    held = json.loads(hub.files("dataset", repo, "v1.0.0")["gptextures.json"])
    assert held["fingerprint"] == presets.get("tiny").fingerprint
    _no_secret(hub, whole)


# ---- credentials -------------------------------------------------------------------------
def test_token_problems_give_one_clear_error_and_never_show_the_token(
        hub: HubServer, data: dict, env: dict) -> None:
    unknown = SECRET.replace("SECRET", "UNKNOWN")
    steps = [
        {**_publish(data["tiny"], "alice/auth"), "env": {"HF_TOKEN": None}},
        {**_publish(data["tiny"], "alice/auth"), "env": {"HF_TOKEN": unknown}},
        {**_publish(data["tiny"], "alice/auth"), "env": {"HF_TOKEN": READ_ONLY}},
        {**_publish(data["tiny"], "bob/auth"), "env": {"HF_TOKEN": SECRET}},
    ]
    (missing, invalid, read_only, forbidden), whole = run_cli(steps, env)
    assert missing["rc"] == 2 and "no Hugging Face token: set HF_TOKEN" in missing["err"]
    assert invalid["rc"] == 2 and "rejected the token (401" in invalid["err"]
    assert read_only["rc"] == 2 and "the token is read-only" in read_only["err"]
    assert forbidden["rc"] == 2 and "cannot write to bob/auth (403 Forbidden" in forbidden["err"]
    for r in (missing, invalid, read_only, forbidden):
        assert r["err"].count("\n") == 1 and "Traceback" not in r["err"]
    assert hub.state.repo("dataset", "alice/auth") is None
    assert hub.state.repo("dataset", "bob/auth") is None
    assert unknown not in whole and READ_ONLY not in whole
    _no_secret(hub, whole, data["root"])


# ---- failures and reruns -----------------------------------------------------------------
def test_a_failure_mid_publication_leaves_no_tag_and_a_rerun_finishes(
        hub: HubServer, data: dict, env: dict) -> None:
    repo = "alice/tiny-rerun"
    # First run: the commit request is cut (files uploaded, no commit). Second run: the commit
    # lands, the tag request is cut. Third run: finishes. The probe reads the refs in between.
    hub.state.faults.update({"commit": 1, "tag": 1})
    start = len(hub.state.requests)
    step = {**_publish(data["tiny"], repo), "probe": f"/api/datasets/{repo}/refs"}
    (cut, untagged, done), whole = run_cli([step, step, step], env)
    assert cut["rc"] == 2, cut
    assert "network failure while uploading" in cut["err"]
    assert "Nothing was tagged; rerun the same command to finish" in cut["err"]
    assert cut["probe"]["tags"] == []
    assert untagged["rc"] == 2 and "network failure while tagging" in untagged["err"]
    assert untagged["probe"]["tags"] == []
    published = untagged["probe"]["branches"][0]["targetCommit"]
    assert done["rc"] == 0, done
    assert "no new commit" in done["out"] and "tag v1.0.0 (new)" in done["out"]
    assert done["probe"]["tags"] == [{"name": "v1.0.0", "ref": "refs/tags/v1.0.0",
                                      "targetCommit": published}]
    state = hub.state.repo("dataset", repo)
    assert len(state.commits) == 2  # the initial commit and one publication
    puts = [r for r in hub.state.requests[start:] if r.startswith("PUT /lfs-upload/")]
    assert len(puts) == 3  # each LFS file was sent once, by the first run
    _no_secret(hub, whole)


@pytest.mark.slow  # the client retries a failing upload 5 times with back-off (~23 s)
def test_a_connection_dropped_during_every_upload_attempt(hub: HubServer, data: dict,
                                                          env: dict) -> None:
    repo = "alice/tiny-drop"
    hub.state.faults["lfs-upload"] = 1000
    (r,), whole = run_cli([_publish(data["tiny"], repo)], env, timeout=300)
    hub.state.faults.clear()
    assert r["rc"] == 2 and "network failure while uploading" in r["err"]
    state = hub.state.repo("dataset", repo)
    assert len(state.commits) == 1 and not state.tags
    (r,), out = run_cli([_publish(data["tiny"], repo)], env)
    assert r["rc"] == 0 and "tag v1.0.0 (new)" in r["out"]
    _no_secret(hub, whole + out)


# ---- runs and leaderboards ---------------------------------------------------------------
def test_publish_a_run_folder_with_its_results_on_the_dataset_repo(
        hub: HubServer, data: dict, env: dict, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    run = make_run_folder(tmp_path / "run", presets.get("tiny"), wrong=2)
    steps = [
        {"argv": ["publish", str(run), "--repo", "alice/gpnet", "--dataset-repo",
                  "alice/tiny-models", "--no-progress"]},
        _publish(data["tiny"], "alice/tiny-models"),
        {"argv": ["publish", str(run), "--repo", "alice/gpnet", "--dataset-repo",
                  "alice/tiny-models", "--tag", "seed0", "--no-progress"]},
        {"argv": ["publish", str(run), "--repo", "alice/gpnet", "--dataset-repo",
                  "alice/tiny-models", "--dataset-revision", "v9", "--no-progress"]},
    ]
    (early, dataset, model, wrong_rev), whole = run_cli(steps, env)
    assert early["rc"] == 2 and "alice/tiny-models does not exist" in early["err"]
    assert "publish it there first" in early["err"]
    assert dataset["rc"] == 0 and model["rc"] == 0, model
    assert "tag seed0 (new)" in model["out"]
    assert wrong_rev["rc"] == 2 and "revision not found" in wrong_rev["err"]
    assert "publish it there first" in wrong_rev["err"]
    files = hub.files("model", "alice/gpnet", "seed0")
    assert files["model.safetensors"] == (run / "model.safetensors").read_bytes()
    assert files["config.json"] == (run / "config.json").read_bytes()
    card = ModelCard(files["README.md"].decode())
    joint = next(r for r in card.data.eval_results if r.metric_name.startswith("Joint"))
    assert joint.metric_value == pytest.approx(14 / 16)
    assert (joint.dataset_type, joint.dataset_revision) == ("alice/tiny-models", "v1.0.0")
    # The card's "Use" snippet, run as written, rebuilds the model with the published weights.
    snippet = card.text.split("## Use")[1].split("```python")[1].split("```")[0]
    check = snippet + (
        "\nimport sys, torch\nfrom safetensors.torch import load_file\n"
        "want = load_file(sys.argv[1])\n"
        "assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())\n"
        "print(model(torch.zeros(1, 1, 64, 64)).shape)\n")
    r = subprocess.run([sys.executable, "-c", check, str(run / "model.safetensors")], env=env,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "torch.Size([1, 4])"
    _no_secret(hub, whole + r.stdout + r.stderr, run)


def test_leaderboard_push_and_pull(hub: HubServer, data: dict, env: dict,
                                   tmp_path: Path) -> None:
    from gptextures.leaderboard import Leaderboard
    from gptextures.publication import shipped_board

    repo = "alice/tiny-board"
    shipped = Leaderboard.load(shipped_board("tiny"))
    mine = Leaderboard(shipped.dataset, shipped.level_names, shipped.split, shipped.entries)
    mine.add(dict(shipped.entries[-1], method="my model", notes="a new entry"))
    mine.save(tmp_path / "mine.json")
    clash = Leaderboard(shipped.dataset, shipped.level_names, shipped.split,
                        [dict(shipped.entries[0], notes="other results")])
    clash.save(tmp_path / "clash.json")
    pulled = tmp_path / "pulled" / "tiny.json"
    steps = [
        _publish(data["tiny"], repo),  # the card shows the 3 shipped entries
        {"argv": ["leaderboard", "push", str(tmp_path / "mine.json"), "--repo", repo]},
        {"argv": ["leaderboard", "push", str(tmp_path / "clash.json"), "--repo", repo]},
        {"argv": ["leaderboard", "pull", "tiny", "--dir", str(pulled.parent), "--repo", repo]},
        {"argv": ["leaderboard", "render", str(pulled)]},
    ]
    (pub, push, refused, pull, render), whole = run_cli(steps, env)
    assert pub["rc"] == 0 and push["rc"] == 0, push
    assert "1 entries added" in push["out"]
    assert refused["rc"] == 2 and "already has other results for" in refused["err"]
    assert pull["rc"] == 0 and render["rc"] == 0, pull
    fp = presets.get("tiny").fingerprint
    files = hub.files("dataset", repo)
    remote = Leaderboard.from_dict(json.loads(files[f"leaderboards/{fp}.json"]))
    assert sorted(e["method"] for e in remote.entries) == sorted(e["method"]
                                                                 for e in mine.entries)
    assert "| my model |" in files["README.md"].decode()  # the card's section followed
    assert "| my model |" not in hub.files("dataset", repo, "v1.0.0")["README.md"].decode()
    local = Leaderboard.load(pulled)
    assert local.to_json() == remote.to_json()
    assert "| my model |" in pulled.with_suffix(".md").read_text()
    _no_secret(hub, whole)
