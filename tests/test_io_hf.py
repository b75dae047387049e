"""Hugging Face folder: load_dataset offline is bit-exact, features, card, verify, resume, merge."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest

pytest.importorskip("datasets")
pytest.importorskip("pyarrow")

import datasets  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

from gptextures import presets  # noqa: E402
from gptextures.io import CorruptDataError, hf, load, read_spec  # noqa: E402

SPEC = presets.get("tiny")


def _write(folder, spec=SPEC, **kw):
    w = hf.HFWriter.open(folder, spec, **kw)
    for f in w.pending():
        hf.write_file(*w.task(f))
    return w.finish()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("hf") / "tiny-hf", rows_per_file=5)


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(tmp_path / "cache")


def _cid(spec=SPEC, compression="zstd", rows_per_file=5):
    return hf.content_id(spec, compression, rows_per_file)


def test_layout(folder):
    names = sorted(p.name for p in (folder / "data").iterdir())
    cid = _cid()
    assert len(cid) == 12
    assert names == [f"{s}-{i:05d}-of-00004-{cid}.parquet" for s in ("test", "train")
                     for i in range(4)]
    assert (folder / "README.md").is_file() and (folder / "gptextures.json").is_file()
    rec = json.loads((folder / "gptextures.json").read_text())
    assert rec["fingerprint"] == SPEC.fingerprint and rec["complete"] is True
    meta = pq.ParquetFile(folder / "data" / names[0]).schema_arrow.metadata
    assert json.loads(meta[b"gptextures"])["fingerprint"] == SPEC.fingerprint
    assert b"huggingface" in meta
    assert read_spec(folder) == SPEC


def test_load_dataset_offline_is_bit_exact(folder, hf_cache):
    dd = datasets.load_dataset(str(folder), cache_dir=hf_cache)
    assert set(dd) == set(SPEC.splits)
    feats = dd["train"].features
    assert feats["label"].names == SPEC.class_names
    assert feats["label_small"].names == ["l2", "l3"]
    assert feats["label_large"].names == ["l6", "l10"]
    assert feats["image"].shape == (64, 64) and feats["image"].dtype == "float32"
    for split in SPEC.splits:
        got = dd[split].with_format("numpy")[:]
        ref = load("tiny", split)
        assert got["image"].dtype == np.float32
        assert got["image"].tobytes() == ref.images.tobytes()
        np.testing.assert_array_equal(got["label"], ref.labels)
        np.testing.assert_array_equal(got["label_small"], ref.level_labels[:, 0])
        np.testing.assert_array_equal(got["label_large"], ref.level_labels[:, 1])
        np.testing.assert_array_equal(got["seed"], ref.seeds)
        np.testing.assert_array_equal(got["index"], np.arange(len(ref)))


def test_gptextures_load_reads_the_folder(folder):
    d = load(folder, "train")
    assert d.images.tobytes() == load("tiny", "train").images.tobytes()
    with pytest.raises(ValueError, match="split: 'val'"):
        load(folder, "val")


def test_card_front_matter_and_credit(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "bsd-3-clause"
    assert front["task_categories"] == ["image-classification"]
    assert "pretty_name" in front and "synthetic" in front["tags"]
    cfg = front["configs"][0]
    assert {d["split"] for d in cfg["data_files"]} == set(SPEC.splits)
    info = datasets.DatasetInfo._from_yaml_dict(front["dataset_info"])
    assert info.features["label"].names == SPEC.class_names
    assert info.splits["test"].num_examples == 16
    assert "Backdrop: Stochastic Backpropagation" in text and "Golkar" in text
    assert "BSD-3-Clause" in text and "generated" in text and SPEC.fingerprint in text


def test_row_groups_keep_memory_flat(tmp_path, monkeypatch):
    monkeypatch.setattr(hf, "TARGET_ROW_GROUP_BYTES", 3 * 64 * 64 * 4)
    out = _write(tmp_path / "rg", rows_per_file=16)
    md = pq.ParquetFile(out / "data" / f"train-00000-of-00001-{_cid(rows_per_file=16)}.parquet"
                        ).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [3, 3, 3, 3, 3, 1]
    assert load(out, "train").images.tobytes() == load("tiny", "train").images.tobytes()


def test_parquet_write_error_surfaces_and_leaves_no_file(tmp_path, monkeypatch):
    """Row groups are written by a background thread: its failure is the caller's exception,
    rendering stops, and only the .partial file is left behind."""
    monkeypatch.setattr(hf, "TARGET_ROW_GROUP_BYTES", 3 * 64 * 64 * 4)
    calls = []
    real = pq.ParquetWriter.write_table

    def failing(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    folder = tmp_path / "out"
    (folder / "data").mkdir(parents=True)
    spec = presets.get("tiny")
    with pytest.raises(OSError, match="disk full"):
        hf.write_file(spec.to_json(indent=None), str(folder), "train", 0, 1, 0, 16, "none",
                      "c0ffee")
    assert len(calls) == 2  # stopped at the failure, not after rendering every group
    names = sorted(p.name for p in (folder / "data").iterdir())
    assert names == ["train-00000-of-00001-c0ffee.parquet.partial"]


def test_resume_keeps_finished_files_and_matches(tmp_path, folder):
    w = hf.HFWriter.open(tmp_path / "r", SPEC, rows_per_file=5)
    first = w.pending()[:3]
    for f in first:
        hf.write_file(*w.task(f))
    stale = w.work / (w.pending()[0].name + ".partial")
    stale.write_bytes(b"half a file")  # a file being written when the run died
    assert not (tmp_path / "r").exists()
    w2 = hf.HFWriter.open(tmp_path / "r", SPEC, rows_per_file=5)
    assert len(w2.pending()) == len(w2.files) - 3 and not stale.exists()
    for f in w2.pending():
        hf.write_file(*w2.task(f))
    out = w2.finish()
    for p in (folder / "data").iterdir():
        assert filecmp.cmp(p, out / "data" / p.name, shallow=False), p.name
    with pytest.raises(FileExistsError, match="another spec or layout"):
        hf.HFWriter.open(tmp_path / "x", SPEC, rows_per_file=5)  # leaves a partial folder
        hf.HFWriter.open(tmp_path / "x", SPEC, rows_per_file=7)


def test_verify_and_corruption(tmp_path, folder):
    rep = hf.verify(folder, samples=-1)
    assert rep.ok, rep.problems
    assert len(rep.regenerated) == 32
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(folder, bad)
    victim = bad / "data" / f"test-00001-of-00004-{_cid()}.parquet"
    raw = bytearray(victim.read_bytes())
    mid = len(raw) // 3
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    victim.write_bytes(bytes(raw))
    rep = hf.verify(bad, samples=0)
    assert not rep.ok
    assert any("split 'test', index 5..9" in m for m in rep.problems), rep.problems
    with pytest.raises(CorruptDataError, match="split 'test', rows 5..9"):
        load(bad, "test")


def test_shards_merge_byte_identical(tmp_path, folder):
    shards = [_write(hf.default_path(tmp_path, SPEC, (i, 2)), shard=(i, 2), rows_per_file=5)
              for i in range(2)]
    assert sorted(p.name for p in (shards[0] / "data").iterdir()) == [
        f"{s}-0000{i}-of-00004-{_cid()}.parquet" for s in ("test", "train") for i in (0, 1)]
    assert not (shards[0] / "README.md").exists()
    out = hf.merge(shards, tmp_path / "merged")
    for p in (folder / "data").iterdir():
        assert filecmp.cmp(p, out / "data" / p.name, shallow=False)
    assert (out / "README.md").read_text() == (folder / "README.md").read_text()
    with pytest.raises(ValueError, match="missing shard"):
        hf.merge(shards[:1], tmp_path / "m2")


def test_dataset_dict_in_memory():
    dd = hf.to_dataset_dict("tiny")
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == set(SPEC.splits)
    assert dd["test"].features["label"].names == SPEC.class_names
    got = dd["test"].with_format("numpy")[:]
    assert got["image"].tobytes() == load("tiny", "test").images.tobytes()


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        hf.HFWriter.open(tmp_path / "a", SPEC, compression="brotli9")
    with pytest.raises(ValueError, match="rows_per_file"):
        hf.HFWriter.open(tmp_path / "a", SPEC, rows_per_file=0)


def test_folder_with_one_split_loads(tmp_path, hf_cache):
    out = _write(tmp_path / "one", splits=["test"])
    front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert [d["split"] for d in front["configs"][0]["data_files"]] == ["test"]
    dd = datasets.load_dataset(str(out), cache_dir=hf_cache)
    assert list(dd) == ["test"] and dd["test"].num_rows == 16


def test_a_truncated_parquet_file_is_corrupt_data_naming_it(tmp_path, folder):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    victim = bad / "data" / f"test-00002-of-00004-{_cid()}.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match=r"test-00002-of-00004-.*\.parquet'.*split"
                                               r" 'test', rows 10\.\.14"):
        load(bad, "test")
    assert load(bad, "train").images.shape == (16, 64, 64)  # the other split still reads
    rep = hf.verify(bad, samples=0)
    assert [m for m in rep.problems if "index 10..14" in m]


def test_load_dataset_never_serves_another_folders_content(tmp_path, hf_cache, monkeypatch):
    """Two folders of the same name with different content (another FFT backend, another
    spec) load as themselves in one process: the card names the content, and
    datasets.load_dataset keys its cache on the card (it served the first folder's images)."""
    from gptextures.generation import generate

    monkeypatch.setenv("GPTEXTURES_FFT", "scipy")
    a = generate(SPEC, tmp_path / "a", formats="hf").paths["hf"]
    monkeypatch.setenv("GPTEXTURES_FFT", "numpy")
    b = generate(SPEC, tmp_path / "b", formats="hf").paths["hf"]
    other = type(SPEC).from_dict({**SPEC.to_dict(), "seed": 1})  # same name, other content
    c = generate(other, tmp_path / "c", formats="hf").paths["hf"]
    assert a.name == b.name == c.name
    for folder in (a, b, c):
        got = datasets.load_dataset(str(folder), cache_dir=hf_cache)["test"]
        images = got.with_format("numpy")[:]["image"]
        assert images.tobytes() == load(folder, "test").images.tobytes(), folder
    assert (a / "README.md").read_text() != (b / "README.md").read_text()
