"""HDF5 writer/reader: bit-exact round trip, layout, checksums, corruption, resume, merge."""

from __future__ import annotations

import errno
import filecmp

import h5py
import numpy as np
import pytest

import gptextures
from gptextures import presets
from gptextures.generation import generate
from gptextures.io import FORMAT_VERSION, CorruptDataError, FormatError, load, read_spec
from gptextures.io import hdf5 as h5io

SPEC = presets.get("tiny")


def assert_same_file(a, b):
    """Byte-identical files (and so identical datasets and attributes)."""
    assert filecmp.cmp(a, b, shallow=False), f"{a} and {b} differ"
    assert h5io.content_digest(a) == h5io.content_digest(b)


def _write_all(path, spec=SPEC, block=5, **kw):
    w = h5io.HDF5Writer.open(path, spec, **kw)
    for s in w.splits:
        lo, hi = w.range(s)
        for a in range(w.next_index(s), hi, block):
            b = min(a + block, hi)
            smp = [spec.sample(s, i) for i in range(a, b)]
            w.write(s, a, np.stack([x.image for x in smp]), [x.label for x in smp],
                    [x.seed for x in smp])
    return w.finish()


def _corrupt_image_chunk(path, split, row):
    with h5py.File(path, "r") as f:
        info = f[split]["images"].id.get_chunk_info(row)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(4)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(x ^ 0xFF for x in b))


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory):
    return _write_all(tmp_path_factory.mktemp("h5") / "tiny.h5")


def test_round_trip_is_bit_exact(tiny_h5):
    for split in SPEC.splits:
        d = load(tiny_h5, split)
        assert d.images.dtype == np.float32 and d.images.shape == (16, 64, 64)
        for i in range(SPEC.num_samples(split)):
            ref = SPEC.sample(split, i)
            assert d.images[i].tobytes() == ref.image.tobytes()
            assert d.labels[i] == ref.label
            assert tuple(d.level_labels[i]) == ref.level_labels
            assert d.seeds[i] == ref.seed
    assert read_spec(tiny_h5) == SPEC
    top = gptextures.load(tiny_h5, "test")
    assert top.images.tobytes() == load("tiny", "test").images.tobytes()


def test_layout_and_provenance(tiny_h5):
    from gptextures.fft import backend_name

    with h5py.File(tiny_h5, "r") as f:
        a = f.attrs
        assert bool(a["complete"]) is True
        assert a["fingerprint"] == SPEC.fingerprint
        assert a["spec_json"] == SPEC.to_json(indent=None)
        assert a["package_version"] == gptextures.__version__
        assert a["algorithm_version"] == gptextures.ALGORITHM_VERSION
        assert a["fft_backend"] == backend_name()
        assert int(a["format_version"]) == FORMAT_VERSION
        g = f["train"]
        img = g["images"]
        assert img.dtype == np.float32 and img.shape == (16, 64, 64)
        assert img.chunks == (1, 64, 64) and img.fletcher32 and img.compression is None
        assert img.maxshape == (None, 64, 64)
        assert set(g["levels"]) == {"small", "large"}
        assert g["label"].dtype == np.int64 and g["seed"].dtype == np.int64
        assert int(g.attrs["written"]) == 16 and int(g.attrs["stop"]) == 16


def test_gzip_compression_round_trips(tmp_path):
    p = _write_all(tmp_path / "z.h5", compression="gzip")
    with h5py.File(p, "r") as f:
        assert f["test"]["images"].compression == "gzip"
    assert load(p, "test").images.tobytes() == load("tiny", "test").images.tobytes()
    with pytest.raises(ValueError, match="compression"):
        h5io.HDF5Writer.open(tmp_path / "bad.h5", SPEC, compression="zip")


def test_corrupt_chunk_is_named_and_reading_raises(tmp_path, tiny_h5):
    p = tmp_path / "c.h5"
    p.write_bytes(tiny_h5.read_bytes())
    _corrupt_image_chunk(p, "test", 5)
    rep = h5io.verify(p, samples=0)
    assert not rep.ok
    assert any("split 'test', index 5" in m for m in rep.problems), rep.problems
    assert len(rep.problems) == 1
    with h5io.HDF5Dataset(p) as ds:
        ds.image("test", 4)  # neighbours still read
        with pytest.raises(CorruptDataError, match=r"split 'test', index 5"):
            ds.image("test", 5)
    with pytest.raises(CorruptDataError, match="corrupted"):
        load(p, "test")


def test_verify_regenerates_and_catches_a_swapped_image(tmp_path, tiny_h5):
    p = tmp_path / "s.h5"
    p.write_bytes(tiny_h5.read_bytes())
    assert h5io.verify(p, samples=-1).ok
    with h5py.File(p, "r+") as f:  # valid checksums, wrong content: only regeneration sees it
        f["train"]["images"][3] = f["train"]["images"][7]
    rep = h5io.verify(p, samples=-1)
    assert [m for m in rep.problems if "index 3" in m and "regenerated" in m]


def test_complete_file_is_not_overwritten(tmp_path, tiny_h5):
    p = tmp_path / "tiny.h5"
    p.write_bytes(tiny_h5.read_bytes())
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        h5io.HDF5Writer.open(p, SPEC)
    assert p.read_bytes() == before


def test_failed_overwrite_keeps_the_old_file(tmp_path, tiny_h5, monkeypatch):
    p = tmp_path / "tiny.h5"
    p.write_bytes(tiny_h5.read_bytes())
    before = p.read_bytes()
    calls = {"n": 0}
    real = h5io.HDF5Writer.write

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(h5io.HDF5Writer, "write", failing)
    with pytest.raises(OSError, match="No space"):
        generate(SPEC, tmp_path, overwrite=True)
    assert p.read_bytes() == before  # the complete file is untouched until a new one is done


def test_write_error_keeps_earlier_data_and_resume_matches(tmp_path, tiny_h5, monkeypatch):
    real = h5io.HDF5Writer.write
    calls = {"n": 0}

    def full_disk(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(h5io.HDF5Writer, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        _write_all(tmp_path / "tiny.h5", block=5)
    final, partial = tmp_path / "tiny.h5", h5io.partial_path(tmp_path / "tiny.h5")
    assert not final.exists() and partial.exists()
    with pytest.raises(FormatError, match="unfinished"):
        h5io.HDF5Dataset(partial)
    with h5io.HDF5Dataset(partial, allow_incomplete=True) as ds:
        assert not ds.complete
        assert ds.written("train") == 10  # two blocks of 5 before the error
        ref = load("tiny", "train")
        assert ds.images("train").tobytes() == ref.images[:10].tobytes()
    rep = h5io.verify(partial, samples=-1)
    assert any("not complete" in m for m in rep.problems)
    monkeypatch.setattr(h5io.HDF5Writer, "write", real)
    _write_all(tmp_path / "tiny.h5", block=3)  # resumes with another block size
    assert not partial.exists()
    assert_same_file(final, tiny_h5)


def test_resume_discards_rows_past_the_counter(tmp_path, tiny_h5):
    w = h5io.HDF5Writer.open(tmp_path / "t.h5", SPEC)
    smp = [SPEC.sample("train", i) for i in range(4)]
    w.write("train", 0, np.stack([x.image for x in smp]), [x.label for x in smp],
            [x.seed for x in smp])
    w.close()
    # a crash after data were written but before the counter moved
    with h5py.File(h5io.partial_path(tmp_path / "t.h5"), "r+") as f:
        f["train"]["images"][4:7] = np.ones((3, 64, 64), np.float32)
    w = h5io.HDF5Writer.open(tmp_path / "t.h5", SPEC)
    assert w.resumed["train"] == 4 and w.next_index("train") == 4
    w.close()
    p = _write_all(tmp_path / "t.h5")
    assert_same_file(p, tiny_h5)


def test_partial_of_another_spec_is_not_resumed(tmp_path):
    other = gptextures.DatasetSpec.from_dict({**SPEC.to_dict(), "seed": 1})
    w = h5io.HDF5Writer.open(tmp_path / "tiny.h5", other)
    w.close()
    with pytest.raises(FileExistsError, match="another spec"):
        h5io.HDF5Writer.open(tmp_path / "tiny.h5", SPEC)
    w = h5io.HDF5Writer.open(tmp_path / "tiny.h5", SPEC, overwrite=True)
    assert w.written("train") == 0
    w.close()


def test_write_checks_order_and_shape(tmp_path):
    w = h5io.HDF5Writer.open(tmp_path / "o.h5", SPEC)
    s = SPEC.sample("train", 1)
    with pytest.raises(ValueError, match="in order"):
        w.write("train", 1, s.image[None], [s.label], [s.seed])
    with pytest.raises(ValueError, match="float32"):
        w.write("train", 0, s.image[None].astype(np.float64), [s.label], [s.seed])
    w.close()


def test_shards_merge_into_the_single_file(tmp_path, tiny_h5):
    paths = [_write_all(h5io.default_path(tmp_path, SPEC, (i, 3)), shard=(i, 3)) for i in (2, 0, 1)]
    with h5io.HDF5Dataset(paths[1]) as ds:
        assert ds.range("train") == (0, 5) and int(ds.attrs["shard_count"]) == 3
    out = h5io.merge(paths, tmp_path / "merged.h5")
    assert_same_file(out, tiny_h5)
    with pytest.raises(ValueError, match=r"missing shard\(s\) \[1\]"):
        h5io.merge([paths[0], paths[1]], tmp_path / "m2.h5")
    with pytest.raises(ValueError, match="given twice"):
        h5io.merge([paths[0], paths[0], paths[1]], tmp_path / "m3.h5")


def test_merge_copies_chunks_but_refuses_a_corrupt_one(tmp_path, tiny_h5):
    """merge copies the stored chunks of uncompressed shards (checksums verified); a corrupt
    chunk is named, like any read of it, and no merged file appears."""
    paths = [_write_all(h5io.default_path(tmp_path, SPEC, (i, 2)), shard=(i, 2)) for i in (0, 1)]
    _corrupt_image_chunk(paths[1], "test", 2)  # shard 1 holds test rows 8..15: row 10
    with pytest.raises(CorruptDataError, match=r"split 'test', index 10 "):
        h5io.merge(paths, tmp_path / "merged.h5")
    assert not (tmp_path / "merged.h5").exists()


def test_not_a_dataset(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["a"] = 1
    with pytest.raises(FormatError, match="spec_json"):
        read_spec(p)
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(FormatError, match="not a gptextures dataset"):
        read_spec(tmp_path / "t.txt")
    with pytest.raises(FileNotFoundError):
        read_spec(tmp_path / "missing.h5")


def _hdf5_chunk(tmp_path, arr):
    p = tmp_path / "ref.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("x", data=arr[None], chunks=(1, *arr.shape), fletcher32=True)
        return d.id.read_direct_chunk((0,) * 3)[1]


@pytest.mark.parametrize("kind", ["normal", "zeros", "ones_bits", "tiny", "image", "blocks_tail"])
def test_fletcher32_matches_hdf5(tmp_path, kind):
    rng = np.random.default_rng(3)
    arr = {
        "normal": rng.standard_normal((64, 96)).astype(np.float32),
        "zeros": np.zeros((16, 16), np.float32),
        "ones_bits": np.full((32, 32), np.uint32(0xFFFFFFFF)).view(np.float32),
        "tiny": np.array([[1.5]], np.float32),
        "image": SPEC.sample("test", 3).image,
        "blocks_tail": rng.standard_normal((33, 50)).astype(np.float32),  # 3 blocks + 228 words
    }[kind]
    ref = _hdf5_chunk(tmp_path, arr)
    assert h5io.encode_chunks(arr[None]).chunks[0] == ref
    assert h5io.fletcher32(arr.tobytes()) == int.from_bytes(ref[-4:], "little")


def test_encoded_chunks_write_the_same_file_content(tmp_path, tiny_h5):
    w = h5io.HDF5Writer.open(tmp_path / "e.h5", SPEC)
    for s in w.splits:
        n = SPEC.num_samples(s)
        smp = [SPEC.sample(s, i) for i in range(n)]
        w.write(s, 0, h5io.encode_chunks(np.stack([x.image for x in smp])),
                [x.label for x in smp], [x.seed for x in smp])
    p = w.finish()
    assert_same_file(p, tiny_h5)
    assert h5io.verify(p, samples=2).ok
    bad = h5io.EncodedChunks((b"\x00" * 10,))
    w = h5io.HDF5Writer.open(tmp_path / "f.h5", SPEC)
    with pytest.raises(ValueError, match="encoded chunks must be"):
        w.write("train", 0, bad, [0], [SPEC.seed_of("train", 0)])
    w.close()


def test_resume_regenerates_a_corrupted_row_of_the_partial_file(tmp_path, tiny_h5):
    w = h5io.HDF5Writer.open(tmp_path / "t.h5", SPEC)
    smp = [SPEC.sample("train", i) for i in range(8)]
    w.write("train", 0, np.stack([x.image for x in smp]), [x.label for x in smp],
            [x.seed for x in smp])
    w.close()
    partial = h5io.partial_path(tmp_path / "t.h5")
    _corrupt_image_chunk(partial, "train", 5)
    w = h5io.HDF5Writer.open(tmp_path / "t.h5", SPEC)
    assert w.resumed == {"train": 5, "test": 0}  # rows 0-4 copied, 5.. generated again
    w.close()
    assert_same_file(_write_all(tmp_path / "t.h5"), tiny_h5)


def test_file_bytes_do_not_depend_on_block_size(tmp_path, tiny_h5):
    for block in (1, 7, 16):
        assert_same_file(_write_all(tmp_path / f"b{block}.h5", block=block), tiny_h5)
    ref = _write_all(tmp_path / "gz.h5", block=16, compression="gzip")
    for block in (1, 5):  # compressed chunks go through h5py, also in order, no chunk cache
        assert_same_file(_write_all(tmp_path / f"gz{block}.h5", block=block,
                                    compression="gzip"), ref)


def test_columns_are_complete_at_creation_and_write_checks_labels_and_seeds(tmp_path):
    h5io.HDF5Writer.open(tmp_path / "c.h5", SPEC).close()
    n = SPEC.num_samples("train")
    with h5py.File(h5io.partial_path(tmp_path / "c.h5"), "r") as f:
        g = f["train"]
        assert g["images"].shape == (n, 64, 64) and g["images"].maxshape == (None, 64, 64)
        assert g["label"][:].tolist() == [SPEC.label_of("train", i) for i in range(n)]
        assert g["seed"][:].tolist() == [SPEC.seed_of("train", i) for i in range(n)]
        assert int(g.attrs["written"]) == 0
    w = h5io.HDF5Writer.open(tmp_path / "c.h5", SPEC)
    smp = [SPEC.sample("train", i) for i in range(3)]
    images = np.stack([x.image for x in smp])
    labels, seeds = [x.label for x in smp], [x.seed for x in smp]
    with pytest.raises(ValueError, match=r"^labels: samples 0\.\.2 of split 'train'"):
        w.write("train", 0, images, [labels[0], labels[0], labels[2]], seeds)
    with pytest.raises(ValueError, match=r"^seeds: samples 0\.\.2"):
        w.write("train", 0, images, labels, [seeds[0], seeds[1], seeds[1] + 1])
    with pytest.raises(ValueError, match=r"^labels:"):
        w.write("train", 0, images, labels[:2], seeds)
    assert w.written("train") == 0  # nothing moved
    w.write("train", 0, images, labels, seeds)
    w.close()
    partial = h5io.partial_path(tmp_path / "c.h5")
    with h5io.HDF5Dataset(partial, allow_incomplete=True) as ds:  # readers stop at `written`
        assert ds.written("train") == 3 and len(ds.labels("train")) == 3
        assert ds.seeds("train").tolist() == seeds and ds.images("train").shape == (3, 64, 64)
        assert ds.level_labels("train").shape == (3, 2)
        assert ds.indices("train").tolist() == [0, 1, 2]
        with pytest.raises(IndexError):
            ds.image("train", 3)
    before = h5io.content_digest(partial)
    with h5py.File(partial, "r+") as f:  # rows past the counter do not count
        f["train"]["images"][5] = np.ones((64, 64), np.float32)
    assert h5io.content_digest(partial) == before


def test_verify_with_another_fft_backend_compares_within_rounding(tmp_path, monkeypatch):
    """A file written with one FFT backend verifies on a machine that renders with another:
    images are compared within float32 rounding and the report names both backends and the
    largest difference; a wrong image still fails; with the same backend, bytes must match."""
    from gptextures.fft import backend_name
    from gptextures.io.verify import image_tolerance

    monkeypatch.setenv("GPTEXTURES_FFT", "scipy")
    path = generate(SPEC, tmp_path).paths["hdf5"]
    written = backend_name()
    same = h5io.verify(path, samples=-1)
    assert same.ok and same.exact and same.max_difference == 0.0
    monkeypatch.setenv("GPTEXTURES_FFT", "numpy")
    rep = h5io.verify(path, samples=-1)
    assert rep.ok, rep.problems
    assert not rep.exact and rep.written_with == written
    assert rep.checked_with == backend_name() and rep.checked_with.startswith("numpy")
    stored = load(path, "test").images
    fresh = load("tiny", "test").images  # rendered with numpy now
    assert rep.max_difference == pytest.approx(float(np.abs(stored - fresh.astype(np.float64))
                                                     .max()))
    assert 0 < rep.max_difference <= max(image_tolerance(SPEC, im) for im in fresh)
    lines = "\n".join(rep.summary())
    assert f"written with FFT {written}, checked with {rep.checked_with}" in lines
    assert f"largest difference {rep.max_difference:.3g}" in lines
    with h5py.File(path, "r+") as f:  # a valid chunk of the wrong image: beyond rounding
        f["train"]["images"][3] = f["train"]["images"][7]
    bad = h5io.verify(path, samples=-1)
    assert [m for m in bad.problems if "index 3" in m and "numpy" in m and "scipy" in m]


def test_an_existing_directory_or_other_file_is_not_called_complete(tmp_path):
    (tmp_path / "tiny.h5").mkdir()
    with pytest.raises(FileExistsError, match="is a directory that is not a gptextures hdf5"):
        generate(SPEC, tmp_path)
    with pytest.raises(FileExistsError, match="is a directory that is not a gptextures hdf5"):
        generate(SPEC, tmp_path, overwrite=True)  # --overwrite replaces datasets only
    (tmp_path / "tiny.h5").rmdir()
    (tmp_path / "tiny.h5").write_text("notes")
    with pytest.raises(FileExistsError, match="is a file that is not a gptextures hdf5"):
        generate(SPEC, tmp_path, overwrite=True)
    assert (tmp_path / "tiny.h5").read_text() == "notes"
    (tmp_path / "tiny.h5").unlink()
    other = gptextures.DatasetSpec.from_dict({**SPEC.to_dict(), "seed": 5})
    generate(other, tmp_path)
    with pytest.raises(FileExistsError, match=r"a complete hdf5 dataset of another spec \(tiny"):
        generate(SPEC, tmp_path)
