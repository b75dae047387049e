"""torch datasets: bit-exact images, targets, lazy per-worker files, streaming across workers."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from gptextures import presets
from gptextures.generation import generate
from gptextures.io import load
from gptextures.torch import StreamingTextureDataset, TextureDataset

SPEC = presets.get("tiny")


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    return generate(SPEC, tmp_path_factory.mktemp("t")).paths["hdf5"]


@pytest.fixture(scope="module")
def ref():
    return {s: load("tiny", s) for s in SPEC.splits}


def test_texture_dataset_items(h5, ref):
    ds = TextureDataset(h5, "test")
    assert len(ds) == 16 and ds.class_names == SPEC.class_names
    x, y = ds[5]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(ref["test"].images[5]))
    assert y.dtype == torch.int64 and int(y) == 5 % 4
    assert torch.equal(ds[-1][0], ds[15][0])
    lv = TextureDataset(h5, "test", target="levels")
    assert lv[3][1].tolist() == list(ref["test"].level_labels[3])
    with pytest.raises(IndexError, match=r"\[-16, 15\]"):
        ds[16]


def _open_files(path):
    """Open descriptors of this process on ``path``."""
    import os

    fds = os.listdir("/proc/self/fd")
    found = 0
    for fd in fds:
        try:
            found += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return found


def test_texture_dataset_is_lazy_and_pickles(h5):
    ds = TextureDataset(h5, "train")
    assert _open_files(h5) == 0  # nothing open until the first item
    ds[0]
    assert _open_files(h5) == 1
    clone = pickle.loads(pickle.dumps(ds))  # a DataLoader worker's copy opens its own
    assert torch.equal(clone[0][0], ds[0][0])
    ds.close()
    clone.close()
    assert _open_files(h5) == 0


def test_dataloader_with_workers_is_bit_exact(h5, ref):
    ds = TextureDataset(h5, "train", transform=lambda t: t * 2)
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(x[:, 0], 2 * torch.from_numpy(ref["train"].images))
    assert torch.equal(y, torch.from_numpy(ref["train"].labels))


def test_bad_arguments(h5):
    with pytest.raises(ValueError, match="target: unknown target 'level'"):
        TextureDataset(h5, "train", target="level")
    with pytest.raises(ValueError, match="split: 'val'"):
        TextureDataset(h5, "val")
    with pytest.raises(TypeError, match="transform"):
        TextureDataset(h5, "train", transform=3)
    with pytest.raises(FileNotFoundError):
        TextureDataset(h5.parent / "missing.h5", "train")
    with pytest.raises(IndexError, match="start/stop"):
        StreamingTextureDataset(SPEC, "train", start=5, stop=2)
    with pytest.raises(ValueError, match=r"the range is empty \(start = stop = 3\)"):
        StreamingTextureDataset(SPEC, "train", start=3, stop=3)
    with pytest.raises(TypeError, match="target_transform"):
        TextureDataset(h5, "train", target_transform="x")


def test_streaming_single_process(ref):
    st = StreamingTextureDataset("tiny", "test", target="levels", start=2, stop=9)
    items = list(st)
    assert len(items) == len(st) == 7
    for j, (x, y) in enumerate(items):
        assert torch.equal(x[0], torch.from_numpy(ref["test"].images[2 + j]))
        assert y.tolist() == list(ref["test"].level_labels[2 + j])


def test_streaming_split_across_workers(ref):
    workers = 2
    st = StreamingTextureDataset(SPEC, "train")
    loader = DataLoader(st, batch_size=1, num_workers=workers)
    xs, ys = zip(*loader)
    # each index exactly once, and with batch_size=1 in index order
    assert torch.equal(torch.cat(xs)[:, 0], torch.from_numpy(ref["train"].images))
    assert torch.cat(ys).tolist() == ref["train"].labels.tolist()
    parts = [list(st.indices(k, 3)) for k in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(16))
    clone = pickle.loads(pickle.dumps(st))  # spawn-started workers receive a pickled copy
    assert torch.equal(next(iter(clone))[0], xs[0][0])


@pytest.mark.parametrize("kind", ["hdf5", "hf", "preset", "spec"])
def test_texture_dataset_reads_every_source(tmp_path, ref, kind):
    """Any source gptextures.load accepts, the same items; out of range is an IndexError."""
    if kind == "hf":
        pytest.importorskip("pyarrow")
        source = generate(SPEC, tmp_path, formats="hf", rows_per_file=5).paths["hf"]
    elif kind == "hdf5":
        source = generate(SPEC, tmp_path).paths["hdf5"]
    else:
        source = "tiny" if kind == "preset" else SPEC
    ds = TextureDataset(source, "test", target="levels",
                        target_transform=lambda t: t.tolist())
    assert len(ds) == 16 and ds.class_names == SPEC.class_names
    for i in (0, 7, 11, 15, 6):  # across files and row groups, back and forth
        x, y = ds[i]
        assert torch.equal(x[0], torch.from_numpy(ref["test"].images[i]))
        assert y == list(ref["test"].level_labels[i])
    with pytest.raises(IndexError, match=r"\[-16, 15\]"):
        ds[16]
    loader = DataLoader(TextureDataset(source, "train"), batch_size=8, num_workers=2)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(xs)[:, 0], torch.from_numpy(ref["train"].images))
    assert torch.cat(ys).tolist() == ref["train"].labels.tolist()
