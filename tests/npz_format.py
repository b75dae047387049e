"""A third format in one module, for tests/test_formats.py: a whole dataset in one ``.npz``.

It shows what adding a format takes: this module (a ``Format`` named ``FORMAT``) and one line
in ``gptextures.io.formats._REGISTRY``. No resume, no shards: it keeps to the interface.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptextures.io.formats import Format, FormatWriter, Reader, Task, check_target
from gptextures.io.meta import provenance, spec_from_provenance
from gptextures.io.verify import VerifyReport
from gptextures.spec import DatasetSpec


def render(spec_json: str, split: str, start: int, stop: int) -> np.ndarray:
    return DatasetSpec.from_json(spec_json).images(split, start, stop)


class NpzWriter(FormatWriter):
    def __init__(self, path: Path, spec: DatasetSpec, splits: list[str]):
        self.path, self.spec, self.splits = path, spec, splits
        self.counts = {s: spec.num_samples(s) for s in splits}
        self.resumed = {s: 0 for s in splits}
        self._parts: dict[str, list[np.ndarray]] = {s: [] for s in splits}

    def tasks(self, executor: str, workers: int) -> list[Task]:
        js = self.spec.to_json(indent=None)
        return [Task(render, (js, s, a, min(a + 8, n)), min(a + 8, n) - a)
                for s, n in self.counts.items() for a in range(0, n, 8)]

    def accept(self, task: Task, result: Any) -> None:
        self._parts[task.args[1]].append(result)

    def finish(self) -> Path:
        arrays = {s: np.concatenate(p) for s, p in self._parts.items()}
        tmp = self.path.with_suffix(".partial.npz")
        np.savez(tmp, provenance=json.dumps(provenance(self.spec)), **arrays)
        os.replace(tmp, self.path)
        return self.path

    def close(self) -> None:
        pass


class NpzReader(Reader):
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._npz = np.load(self.path)
        self.spec = spec_from_provenance(json.loads(str(self._npz["provenance"])), str(path))

    @property
    def splits(self) -> list[str]:
        return [k for k in self._npz.files if k != "provenance"]

    def range(self, split: str) -> tuple[int, int]:
        return 0, self.num_samples(split)

    def num_samples(self, split: str) -> int:
        return len(self._npz[self.check_split(split)])

    def images(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._npz[self.check_split(split)][start:stop]


class NpzFormat(Format):
    name = "npz"
    looks_like = "a .npz file"

    def detect(self, path: Path) -> bool:
        return Path(path).is_file() and Path(path).suffix == ".npz"

    def default_path(self, out_dir: Any, spec: DatasetSpec, shard: tuple[int, int] = (0, 1)
                     ) -> Path:
        return Path(out_dir) / f"{spec.name}.npz"

    def open_writer(self, path: Any, spec: DatasetSpec, *, splits: Sequence[str] | None = None,
                    shard: tuple[int, int] = (0, 1), overwrite: bool = False) -> NpzWriter:
        check_target(Path(path), spec, self.name, overwrite)
        return NpzWriter(Path(path), spec, list(splits or spec.splits))

    def open_reader(self, path: Any, *, allow_incomplete: bool = False) -> NpzReader:
        return NpzReader(path)

    def verify(self, path: Any, *, samples: int = 8, seed: int | None = None,
               progress: bool = False) -> VerifyReport:
        rep = VerifyReport(path=str(path), format=self.name, unit="arrays")
        with NpzReader(path) as r:
            rep.start(r.spec, json.loads(str(r._npz["provenance"]))["fft_backend"])
            for s in r.splits:
                rep.counts[s] = r.num_samples(s)
                rep.units_checked += 1
                for i in range(min(samples, r.num_samples(s))):
                    rep.check_image(r.spec, s, i, r.image(s, i))
        return rep

    def merge(self, shards: Any, out: Any, *, overwrite: bool = False,
              progress: bool = False) -> Path:
        raise ValueError("npz: this format has no shards")

    def describe(self, path: Any) -> list[str]:
        with NpzReader(path) as r:
            return [f"file: {path} (npz, {', '.join(r.splits)})"]


FORMAT = NpzFormat()
