"""The format interface: a third format is one module and one registry line."""

from __future__ import annotations

import pytest
import torch

from gptextures import generate, load, presets
from gptextures.cli import main
from gptextures.io import formats
from gptextures.torch import TextureDataset

SPEC = presets.get("tiny")


@pytest.fixture
def npz(monkeypatch):
    monkeypatch.setitem(formats._REGISTRY, "npz", "tests.npz_format")  # the one line


@pytest.mark.parametrize("workers", [1, "2 threads", "2 processes"])
def test_a_new_format_works_everywhere(tmp_path, npz, workers, capsys, monkeypatch):
    """Generation (in process, on threads and in worker processes), loading, the torch
    dataset, info and verify use only the interface."""
    from gptextures import generation

    if workers == "2 processes":  # every task to worker processes, even for this small run
        monkeypatch.setattr(generation, "LOCAL_THREADS", False)
    workers = 1 if workers == 1 else 2
    res = generate(SPEC, tmp_path, formats="npz", workers=workers)
    assert res.workers == workers
    path = res.paths["npz"]
    assert path.name == "tiny.npz" and res.counts == {"train": 16, "test": 16}
    for split in SPEC.splits:
        assert load(path, split).images.tobytes() == load("tiny", split).images.tobytes()
    ds = TextureDataset(path, "test")
    assert torch.equal(ds[5][0][0], torch.from_numpy(load("tiny", "test").images[5]))
    assert main(["verify", str(path), "--samples", "2"]) == 0
    assert main(["info", str(path)]) == 0
    assert "file: " in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="a complete npz dataset of this spec"):
        generate(SPEC, tmp_path, formats="npz")


def test_unknown_formats_are_named():
    with pytest.raises(ValueError, match="unknown format 'zarr'; known formats: hdf5, hf"):
        formats.check_formats("hdf5,zarr")
