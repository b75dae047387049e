"""What ``verify`` reports, and the checks every format shares.

A stored image is compared with the image regenerated from its seed. With the FFT backend that
wrote the file (``fft_backend`` in its provenance: library, version and planning) the bytes
must be equal. With another backend (no pyFFTW here, ``GPTEXTURES_FFT=scipy``, FFTW wisdom that
does not apply) the two float32 inverse FFTs round differently, so images are compared within
:func:`image_tolerance`, and the report names both backends and the largest difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spec import DatasetSpec


def check_samples(samples: object) -> int:
    """``verify``'s ``samples``: images to regenerate per split, an int >= -1 (-1: all)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < -1:
        raise ValueError(f"samples: expected an int >= -1 (-1 = all), got {samples!r}")
    return samples


def image_tolerance(spec: DatasetSpec, image: np.ndarray) -> float:
    """Largest difference allowed between two renderings of ``image`` by different backends.

    A float32 FFT of ``N = H W`` points rounds in each of its ``log2 N`` stages by at most
    float32's machine epsilon relative to the largest magnitude it carries, so two
    implementations differ by at most ``2 eps log2(N) max|x|`` (both err); in practice by a
    few percent of that (about 1e-6 on unit-variance 1024x1024 images).
    """
    h, w = spec.texture.size
    eps = float(np.finfo(np.float32).eps)
    return 2.0 * eps * math.log2(h * w) * max(1.0, float(np.abs(image).max()))


@dataclass
class VerifyReport:
    """Outcome of ``verify`` for any format; ``ok`` is true when ``problems`` is empty.

    Attributes:
        path: the file or folder checked.
        format: its format name (``"hdf5"``, ``"hf"``).
        fingerprint: the stored spec's fingerprint.
        counts: split -> samples held.
        units_checked: checksummed units read (HDF5 image chunks, Parquet files); ``unit``
            names them.
        regenerated: ``(split, index)`` of every image regenerated from its seed.
        written_with: FFT backend recorded in the file; ``checked_with``: the one used here.
        exact: images compared byte for byte (same backend) or within ``tolerance``.
        max_difference: largest absolute difference of a regenerated image (0.0 when exact).
        problems: one line per problem found.
    """

    path: str
    format: str
    unit: str = "chunks"
    fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    units_checked: int = 0
    regenerated: list[tuple[str, int]] = field(default_factory=list)
    written_with: str = ""
    checked_with: str = ""
    exact: bool = True
    max_difference: float = 0.0
    tolerance: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chunks_checked(self) -> int:
        """Alias of :attr:`units_checked`."""
        return self.units_checked

    def start(self, spec: DatasetSpec, written_with: str) -> None:
        """Record the spec and the backends: exact comparison only with the writer's backend."""
        from ..fft import backend_name

        self.fingerprint = spec.fingerprint
        self.written_with = written_with
        self.checked_with = backend_name()
        self.exact = self.written_with == self.checked_with

    def check_columns(self, spec: DatasetSpec, split: str, start: int, labels: np.ndarray,
                      level_labels: np.ndarray, seeds: np.ndarray, where: str = "") -> None:
        """Labels, per-level labels and seeds of rows ``start, start + 1, ...`` against the
        spec's (at most 10 problems of each kind are listed)."""
        stop = start + len(labels)
        want_lab = spec.labels(split, start, stop)
        want_lev = spec.level_labels(split, start, stop)
        want_seed = spec.seeds(split, start, stop)
        where = f" ({where})" if where else ""
        for name, got, want in (("label", labels, want_lab), ("seed", seeds, want_seed)):
            got = np.asarray(got)
            for i in np.flatnonzero(got != want)[:10]:
                self.problems.append(f"split {split!r}, index {start + i}: {name} {got[i]},"
                                     f" expected {want[i]}{where}")
        level_labels = np.asarray(level_labels)
        for i in np.flatnonzero((level_labels != want_lev).any(axis=1))[:10]:
            self.problems.append(f"split {split!r}, index {start + i}: level labels"
                                 f" {level_labels[i].tolist()}, expected"
                                 f" {want_lev[i].tolist()}{where}")

    def check_image(self, spec: DatasetSpec, split: str, index: int,
                    stored: np.ndarray) -> None:
        """Regenerate image ``index`` from its seed and compare it with ``stored``."""
        fresh = spec.sample(split, index).image
        self.regenerated.append((split, int(index)))
        if self.exact:
            if fresh.tobytes() != np.ascontiguousarray(stored).tobytes():
                self.problems.append(f"split {split!r}, index {index}: stored image differs from"
                                     " the image regenerated from its seed")
            return
        diff = float(np.abs(fresh.astype(np.float64) - stored).max())
        tol = image_tolerance(spec, fresh)
        self.tolerance = max(self.tolerance, tol)
        if diff > tol or not math.isfinite(diff):
            self.problems.append(
                f"split {split!r}, index {index}: stored image differs from the image"
                f" regenerated from its seed by up to {diff:.3g} (allowed {tol:.3g} between FFT"
                f" backends {self.written_with} and {self.checked_with})")
        else:
            self.max_difference = max(self.max_difference, diff)

    def summary(self) -> list[str]:
        """Lines for the command line: counts, what was checked, how images were compared."""
        counts = ", ".join(f"{s} {n}" for s, n in self.counts.items())
        lines = [f"{self.path}: fingerprint {self.fingerprint[:12]}, samples {counts}",
                 f"  checked {self.units_checked} {self.unit}, regenerated"
                 f" {len(self.regenerated)} images from their seeds"]
        if self.regenerated:
            if self.exact:
                lines.append(f"  images compared byte for byte (FFT {self.checked_with}, as"
                             " written)")
            else:
                lines.append(f"  written with FFT {self.written_with}, checked with"
                             f" {self.checked_with}: images compared within float32 rounding,"
                             f" largest difference {self.max_difference:.3g} (allowed"
                             f" {self.tolerance:.3g})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"ok": self.ok}
