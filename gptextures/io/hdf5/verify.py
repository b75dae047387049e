"""Checking HDF5 files: :func:`verify` (checksums, columns, regenerated images) and
:func:`content_digest` (the content of a file, independent of HDF5's allocation order)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import h5py
import numpy as np

from ..meta import CorruptDataError, progress_bar
from ..verify import VerifyReport, check_samples
from .reader import HDF5Dataset


def verify(path: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
           progress: bool = False) -> VerifyReport:
    """Check an HDF5 file: every chunk's checksum, counts, fingerprint, labels and seeds, and
    regenerate ``samples`` random images per split from their seeds (``-1``: all).

    Images are compared byte for byte when this machine renders with the FFT backend that
    wrote the file, else within float32 rounding (:func:`gptextures.io.verify.image_tolerance`).

    Args:
        path: the ``.h5`` file (an unfinished ``.partial`` one too).
        samples: images to regenerate per split (``-1``: all of them).
        seed: seed of the random choice of images (``None``: fresh).
        progress: show a tqdm bar over chunks.
    """
    check_samples(samples)
    report = VerifyReport(path=str(path), format="hdf5", unit="chunks")
    with HDF5Dataset(path, allow_incomplete=True) as ds:
        spec = ds.spec
        report.start(spec, str(ds.attrs.get("fft_backend", "")))
        if not ds.complete:
            report.problems.append("file is not complete (complete=False): an unfinished run")
        rng = np.random.default_rng(seed)
        bar = progress_bar(len(ds), "verify", progress)
        try:
            for s in ds.splits:
                _verify_split(ds, s, rng, samples, report, bar)
        finally:
            if bar is not None:
                bar.close()
        try:
            planned = list(json.loads(str(ds.attrs["layout"]))["splits"])
        except (KeyError, ValueError, TypeError):
            planned = ds.splits
        missing = [s for s in planned if s not in ds.splits]
        if missing:
            report.problems.append(f"splits {missing} of the file's layout are missing")
    return report


def _verify_split(ds: HDF5Dataset, s: str, rng: np.random.Generator, samples: int,
                  report: VerifyReport, bar: Any) -> None:
    spec = ds.spec
    lo, hi = ds.range(s)
    n = ds.written(s)
    report.counts[s] = n
    if ds.complete and n != hi - lo:
        report.problems.append(f"split {s!r}: {n} samples, expected {hi - lo}")
    if hi > spec.num_samples(s):
        report.problems.append(f"split {s!r}: range [{lo}, {hi}) exceeds the spec's "
                               f"{spec.num_samples(s)} samples")
        return
    bad: set[int] = set()
    for i in range(n):
        try:
            ds.image(s, i)
        except CorruptDataError:
            bad.add(i)
            report.problems.append(f"split {s!r}, index {lo + i}: image chunk fails its checksum")
        report.units_checked += 1
        if bar is not None:
            bar.update(1)
    try:
        report.check_columns(spec, s, lo, ds.labels(s), ds.level_labels(s), ds.seeds(s))
    except CorruptDataError as exc:
        report.problems.append(str(exc))
    candidates = [i for i in range(n) if i not in bad]
    k = len(candidates) if samples == -1 else min(samples, len(candidates))
    chosen = sorted(rng.choice(candidates, size=k, replace=False).tolist()) if k else []
    for i in chosen:
        report.check_image(spec, s, lo + i, ds.image(s, i))


def content_digest(path: str | os.PathLike[str]) -> str:
    """sha256 over every attribute and dataset of a file in a canonical order.

    Two files with the same digest hold the same bytes in every dataset and attribute, whatever
    the order of their internal HDF5 allocations. In a split's datasets only the first
    ``written`` rows count (the valid ones; all of them in a complete file), hashed as if the
    dataset had that length.
    """
    h = hashlib.sha256()

    def visit(name: str, obj: Any) -> None:
        h.update(name.encode())
        for k in sorted(obj.attrs):
            h.update(k.encode())
            h.update(repr(obj.attrs[k]).encode())
        if isinstance(obj, h5py.Dataset):
            shape = obj.shape
            top = f[name.split("/")[0]]
            if shape and isinstance(top, h5py.Group) and "written" in top.attrs:
                shape = (min(shape[0], int(top.attrs["written"])), *shape[1:])
            h.update(str(obj.dtype).encode() + str(shape).encode())
            for i in range(shape[0] if shape else 0):
                h.update(np.ascontiguousarray(obj[i]).tobytes())

    with h5py.File(path, "r") as f:
        visit("/", f)
        names: list[str] = []
        f.visit(names.append)
        for name in sorted(names):
            visit(name, f[name])
    return h.hexdigest()
