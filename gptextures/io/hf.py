"""Hugging Face Datasets export: ``Features``, Parquet shards, a Hub-ready folder, ``DatasetDict``.

Folder layout (docs/formats.md)::

    README.md                                   dataset card: YAML front matter + prose
    gptextures.json                             provenance: spec JSON, fingerprint, versions, files
    data/{split}-{i:05d}-of-{n:05d}.parquet     rows in index order, ``rows_per_file`` per file

Each Parquet file is written with pyarrow directly from ``features.arrow_schema`` (so
``datasets.load_dataset(folder)`` finds the HF features: ``Array2D`` image, ``ClassLabel`` label
and one ``ClassLabel`` per level) plus the provenance under the schema metadata key
``gptextures``. Files are written by workers, one row group at a time (memory stays flat), under a
``.partial`` name and renamed when done; the folder itself is ``<folder>.partial`` until every
file, the card and ``gptextures.json`` are written.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import labels as _labels
from ..spec import DatasetSpec
from .behind import WriteBehind
from .meta import (
    PARTIAL_SUFFIX,
    FingerprintMismatchError,
    FormatError,
    ensure_writable_dir,
    provenance,
    spec_from_provenance,
)

COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "none")
TARGET_FILE_BYTES = 256 * 2**20
TARGET_ROW_GROUP_BYTES = 32 * 2**20
META_FILE = "gptextures.json"


def _require() -> None:
    try:
        import datasets  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            f"the Hugging Face format needs the 'hf' extra: pip install 'gptextures[hf]' ({exc})"
        ) from None


def level_column(level_name: str) -> str:
    """Column name of a level's labels: ``label_<level name>``."""
    return f"label_{level_name}"


def features(spec: DatasetSpec) -> Any:
    """The ``datasets.Features`` of a dataset.

    ``image: Array2D((H, W), "float32")``, ``label: ClassLabel(class names)``, one
    ``label_<level>: ClassLabel(length scales)`` per level, ``seed: int64``, ``index: int64``.
    """
    _require()
    from datasets import Array2D, ClassLabel, Features, Value

    cols: dict[str, Any] = {
        "image": Array2D(tuple(spec.texture.size), "float32"),
        "label": ClassLabel(names=spec.class_names),
    }
    for lv in spec.texture.levels:
        cols[level_column(lv.name)] = ClassLabel(
            names=[_labels.format_length(s) for s in lv.length_scales]
        )
    cols["seed"] = Value("int64")
    cols["index"] = Value("int64")
    return Features(cols)


def arrow_schema(spec: DatasetSpec) -> Any:
    """``features(spec).arrow_schema`` plus the provenance under metadata key ``gptextures``."""
    schema = features(spec).arrow_schema
    meta = dict(schema.metadata or {})
    meta[b"gptextures"] = json.dumps(provenance(spec), sort_keys=True).encode()
    return schema.with_metadata(meta)


def arrow_table(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray,
                indices: np.ndarray, schema: Any = None) -> Any:
    """A ``pyarrow.Table`` of rows: ``images`` float32 ``(k, H, W)``, ``labels``/``seeds``/
    ``indices`` int ``(k,)``."""
    import pyarrow as pa

    schema = arrow_schema(spec) if schema is None else schema
    k = len(images)
    h, w = spec.texture.size
    flat = pa.array(np.ascontiguousarray(images, dtype=np.float32).reshape(-1))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, k * h * w + 1, w, dtype=np.int32)),
                                     flat)
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, k * h + 1, h, dtype=np.int32)), inner)
    image = pa.ExtensionArray.from_storage(schema.field("image").type, outer)
    labels = np.asarray(labels, dtype=np.int64)
    levels = _labels.decode_array(labels, spec.texture.radices)
    cols = [image, pa.array(labels)]
    cols += [pa.array(levels[:, j]) for j in range(spec.texture.depth)]
    cols += [pa.array(np.asarray(seeds, dtype=np.int64)),
             pa.array(np.asarray(indices, dtype=np.int64))]
    return pa.Table.from_arrays(cols, schema=schema)


# ---- layout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetFile:
    """One Parquet file of a split: rows ``start .. stop - 1``."""

    split: str
    index: int
    count: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"data/{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"


def default_rows_per_file(spec: DatasetSpec) -> int:
    """Rows per Parquet file: about 256 MiB of images per file, at least one row."""
    h, w = spec.texture.size
    return max(1, TARGET_FILE_BYTES // (h * w * 4))


def plan_files(spec: DatasetSpec, rows_per_file: int | None = None,
               splits: Sequence[str] | None = None) -> list[ParquetFile]:
    """Every Parquet file of a dataset, in split then index order."""
    rpf = default_rows_per_file(spec) if rows_per_file is None else rows_per_file
    if isinstance(rpf, bool) or not isinstance(rpf, int) or rpf < 1:
        raise ValueError(f"rows_per_file: expected an int >= 1, got {rows_per_file!r}")
    out = []
    for s in (spec.splits if splits is None else splits):
        n = spec.num_samples(s)
        count = -(-n // rpf)
        for i in range(count):
            out.append(ParquetFile(s, i, count, i * rpf, min(n, (i + 1) * rpf)))
    return out


def shard_files(files: Sequence[ParquetFile], shard: tuple[int, int]) -> list[ParquetFile]:
    """Files of shard ``i`` of ``n``: a contiguous run of each split's files."""
    i, n = shard
    out = []
    for s in dict.fromkeys(f.split for f in files):
        fs = [f for f in files if f.split == s]
        out += fs[(len(fs) * i) // n:(len(fs) * (i + 1)) // n]
    return out


def default_path(out_dir: str | os.PathLike[str], spec: DatasetSpec,
                 shard: tuple[int, int] | None = None) -> Path:
    """``out_dir/<name>-hf``, or ``out_dir/<name>-hf.shard-IIIII-of-NNNNN`` for a shard."""
    if shard is None or shard[1] == 1:
        return Path(out_dir) / f"{spec.name}-hf"
    return Path(out_dir) / f"{spec.name}-hf.shard-{shard[0]:05d}-of-{shard[1]:05d}"


@functools.lru_cache(maxsize=4)
def _spec_of(spec_json: str) -> DatasetSpec:
    return DatasetSpec.from_json(spec_json)


def write_file(spec_json: str, folder: str, split: str, index: int, count: int, start: int,
               stop: int, compression: str = "zstd") -> int:
    """Generate rows ``start:stop`` of ``split`` and write them as one Parquet file.

    Runs in a worker process (or a Dask worker): generates one row group at a time and writes
    ``<file>.partial`` before renaming it. A write-behind thread encodes and writes each row
    group (pyarrow releases the GIL) while the next one renders; the file's bytes are the same
    as writing in line. Returns the file's size in bytes.
    """
    import pyarrow.parquet as pq

    spec = _spec_of(spec_json)
    f = ParquetFile(split, index, count, start, stop)
    final = Path(folder) / f.name
    tmp = Path(str(final) + PARTIAL_SUFFIX)
    schema = arrow_schema(spec)
    h, w = spec.texture.size
    group = max(1, TARGET_ROW_GROUP_BYTES // (h * w * 4))
    with pq.ParquetWriter(tmp, schema, **_parquet_options(compression)) as writer:
        behind = WriteBehind(lambda table, n: writer.write_table(table, row_group_size=n),
                             depth=1, name="parquet-writer")
        try:
            for a in range(start, stop, group):
                b = min(stop, a + group)
                images = np.empty((b - a, h, w), dtype=np.float32)
                seeds = np.empty(b - a, dtype=np.int64)
                for j, i in enumerate(range(a, b)):
                    smp = spec.sample(split, i)
                    images[j] = smp.image
                    seeds[j] = smp.seed
                idx = np.arange(a, b, dtype=np.int64)
                behind.put((arrow_table(spec, images, idx % spec.num_classes, seeds, idx,
                                        schema), b - a))
        except BaseException:
            behind.close(abort=True)
            raise
        behind.close()
    os.replace(tmp, final)
    return final.stat().st_size


def _parquet_options(compression: str) -> dict[str, Any]:
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression: unknown Parquet compression {compression!r}; allowed:"
                         f" {', '.join(COMPRESSIONS)}")
    opts: dict[str, Any] = {"write_page_checksum": True, "use_dictionary": False,
                            "write_statistics": False}
    if compression == "none":
        opts["compression"] = "none"
    else:
        opts["compression"] = compression
        if compression == "zstd":
            opts["compression_level"] = 1
        opts["use_byte_stream_split"] = ["image.list.element.list.element"]
    return opts


# ---- the folder ---------------------------------------------------------------------------
class HFWriter:
    """A Hub-ready folder (or one shard of it) under construction at ``<folder>.partial``."""

    def __init__(self, path: Path, spec: DatasetSpec, files: list[ParquetFile],
                 shard: tuple[int, int], compression: str, rows_per_file: int):
        self.path = path
        self.spec = spec
        self.files = files
        self.shard = shard
        self.compression = compression
        self.rows_per_file = rows_per_file

    @property
    def work(self) -> Path:
        return Path(str(self.path) + PARTIAL_SUFFIX)

    @classmethod
    def open(cls, path: str | os.PathLike[str], spec: DatasetSpec, *,
             splits: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
             compression: str = "zstd", rows_per_file: int | None = None,
             overwrite: bool = False) -> HFWriter:
        """Create ``<path>.partial/`` or resume it (files already renamed are kept).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false, or a partial folder of
                another spec or layout is in the way.
        """
        _require()
        _parquet_options(compression)
        path = Path(path)
        spec = _canonical(spec)
        splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
        rpf = default_rows_per_file(spec) if rows_per_file is None else rows_per_file
        files = shard_files(plan_files(spec, rpf, splits), shard)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"out: {str(path)!r} already exists (a complete dataset folder); pass"
                " overwrite=True (--overwrite) to replace it"
            )
        ensure_writable_dir(path.parent)
        self = cls(path, spec, files, shard, compression, rpf)
        layout = self._layout()
        marker = self.work / "layout.json"
        if self.work.exists() and not overwrite and marker.is_file():
            stored = json.loads(marker.read_text())
            if stored != layout:
                raise FileExistsError(
                    f"out: {str(self.work)!r} is an unfinished folder of another spec or layout"
                    f" ({stored.get('fingerprint', '?')[:12]}, {stored.get('rows_per_file')} rows"
                    " per file); pass overwrite=True (--overwrite) to discard it"
                )
        elif self.work.exists():
            shutil.rmtree(self.work)
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        for stale in (self.work / "data").glob("*" + PARTIAL_SUFFIX):
            stale.unlink()
        marker.write_text(json.dumps(layout, sort_keys=True))
        return self

    def _layout(self) -> dict[str, Any]:
        return {"fingerprint": self.spec.fingerprint, "shard": list(self.shard),
                "compression": self.compression, "rows_per_file": self.rows_per_file,
                "files": [f.name for f in self.files]}

    def done(self, f: ParquetFile) -> bool:
        return (self.work / f.name).is_file()

    def pending(self) -> list[ParquetFile]:
        """Files still to write (in order)."""
        return [f for f in self.files if not self.done(f)]

    def task(self, f: ParquetFile) -> tuple[Any, ...]:
        """Arguments of :func:`write_file` for one file."""
        return (self.spec.to_json(indent=None), str(self.work), f.split, f.index, f.count,
                f.start, f.stop, self.compression)

    def finish(self) -> Path:
        """Write ``gptextures.json`` and ``README.md`` and rename the folder to its final path."""
        missing = self.pending()
        if missing:
            raise ValueError(f"{len(missing)} Parquet file(s) still missing, e.g."
                             f" {missing[0].name}; cannot finish")
        (self.work / "layout.json").unlink()
        _write_metadata(self.work, self.spec, self.files, self.shard, self.compression,
                        self.rows_per_file)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.work, self.path)
        return self.path


def _write_metadata(folder: Path, spec: DatasetSpec, files: Sequence[ParquetFile],
                    shard: tuple[int, int], compression: str, rows_per_file: int) -> None:
    record = provenance(spec)
    record.update({
        "complete": True, "shard_index": shard[0], "shard_count": shard[1],
        "compression": compression, "rows_per_file": rows_per_file,
        "files": [{"name": f.name, "split": f.split, "start": f.start, "stop": f.stop}
                  for f in files],
    })
    (folder / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if shard[1] == 1:
        present = list(dict.fromkeys(f.split for f in files))
        (folder / "README.md").write_text(dataset_card(spec, splits=present))


def dataset_card(spec: DatasetSpec, splits: Sequence[str] | None = None, *, preview: str = "",
                 load_args: str = '"path/or/repo"', hub_sections: str = "",
                 made_by: tuple[str, str] | None = None) -> str:
    """The README.md of a folder: ``cards/dataset_card.md`` filled in (YAML front matter).

    Args:
        spec: the dataset.
        splits: the splits the folder holds (default: all of the spec's).
        preview, load_args, hub_sections: what a Hub repo's card adds
            (``gptextures.publication``): the preview after the introduction, the
            ``load_dataset`` arguments, and sections before the license; a folder's own card
            leaves them out.
        made_by: ``(package version, FFT backend)`` that wrote the files (default: this
            process's).
    """
    import string
    from importlib import resources

    import yaml
    from datasets import DatasetInfo, SplitDict, SplitInfo

    from .. import __version__
    from ..fft import backend_name

    spec = _canonical(spec)
    feats = features(spec)
    split_dict = SplitDict()
    splits = [s for s in spec.splits if splits is None or s in splits]
    for s in splits:
        n = spec.num_samples(s)
        row_bytes = spec.texture.size[0] * spec.texture.size[1] * 4 + 8 * (spec.texture.depth + 3)
        split_dict.add(SplitInfo(name=s, num_examples=n, num_bytes=n * row_bytes))
    info = DatasetInfo(features=feats, splits=split_dict)
    meta: dict[str, Any] = {
        "pretty_name": f"gptextures {spec.name} v{spec.version}",
        "license": "bsd-3-clause",
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "gaussian-process", "textures", "multi-scale", "gptextures",
                 "backdrop"],
        "size_categories": [_size_category(sum(spec.num_samples(s) for s in splits))],
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits],
        }],
        "dataset_info": info._to_yaml_dict(),
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    template = (resources.files("gptextures.cards") / "dataset_card.md").read_text()
    h, w = spec.texture.size
    levels = "\n".join(
        f"| `{lv.name}` | {', '.join(f'{s:g}' for s in lv.length_scales)} | {lv.weight:g} |"
        f" `{level_column(lv.name)}` |" for lv in spec.texture.levels
    )
    split_rows = "\n".join(f"| `{s}` | {spec.splits[s]} | {spec.num_samples(s)} |" for s in splits)
    classes = "\n".join(f"| {i} | `{c}` |" for i, c in enumerate(spec.class_names))
    return string.Template(template).substitute(
        yaml=front, name=spec.name, version=spec.version, fingerprint=spec.fingerprint,
        description=spec.description or "(no description)", height=h, width=w,
        depth=spec.texture.depth, num_classes=spec.num_classes, kernel=spec.texture.kernel,
        mix=spec.texture.mix, periodic="periodic" if spec.texture.periodic else "non-periodic",
        levels_table=levels, splits_table=split_rows, classes_table=classes, seed=spec.seed,
        package_version=made_by[0] if made_by else __version__,
        fft_backend=made_by[1] if made_by else backend_name(),
        spec_json=spec.to_json(indent=2), preview=preview, load_args=load_args,
        hub_sections=hub_sections,
    )


def _canonical(spec: DatasetSpec) -> DatasetSpec:
    """The spec as read back from its JSON (splits in sorted order), so that every file and
    card written for one fingerprint is the same whatever the order splits were declared in."""
    return DatasetSpec.from_json(spec.to_json(indent=None))


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "n>1M"


def _read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(folder) / META_FILE
    if not p.is_file():
        raise FormatError(f"path: {str(folder)!r} has no {META_FILE}; not a gptextures HF folder")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"path: {str(p)!r} is not valid JSON ({exc})") from None


def read_spec(folder: str | os.PathLike[str]) -> DatasetSpec:
    """The :class:`DatasetSpec` of a gptextures HF folder."""
    return spec_from_provenance(_read_record(folder), str(folder))


def _folder_files(folder: Path, split: str | None = None) -> list[dict[str, Any]]:
    rec = _read_record(folder)
    return [f for f in rec["files"] if split is None or f["split"] == split]


def _table_arrays(spec: DatasetSpec, table: Any) -> dict[str, np.ndarray]:
    import pyarrow as pa

    col = table.column("image")
    storage = pa.concat_arrays([c.storage if hasattr(c, "storage") else c for c in col.chunks]) \
        if col.num_chunks else pa.array([], pa.list_(pa.list_(pa.float32())))
    h, w = spec.texture.size
    flat = storage.flatten().flatten().to_numpy(zero_copy_only=False)
    return {
        "images": np.asarray(flat, dtype=np.float32).reshape(len(table), h, w),
        "labels": table.column("label").to_numpy().astype(np.int64),
        "level_labels": np.stack([table.column(level_column(n)).to_numpy().astype(np.int64)
                                  for n in spec.texture.level_names], axis=1),
        "seeds": table.column("seed").to_numpy().astype(np.int64),
        "indices": table.column("index").to_numpy().astype(np.int64),
    }


def load_split(folder: str | os.PathLike[str], split: str) -> Any:
    """A whole split of a folder as :class:`gptextures.io.SplitData` (read with pyarrow)."""
    import pyarrow.parquet as pq

    from .loading import SplitData

    folder = Path(folder)
    spec = read_spec(folder)
    files = _folder_files(folder, split)
    if not files:
        have = sorted({f["split"] for f in _folder_files(folder)})
        raise ValueError(f"split: {split!r} is not in {str(folder)!r}; it has {have}")
    parts = []
    for f in files:
        if not (folder / f["name"]).is_file():
            raise FileNotFoundError(f"{str(folder)!r}: file {f['name']} of split {split!r} is"
                                    " missing; download or regenerate the dataset")
        try:
            table = pq.read_table(folder / f["name"], page_checksum_verification=True)
        except OSError as exc:
            from .meta import CorruptDataError

            raise CorruptDataError(
                f"{str(folder / f['name'])!r}: corrupted data in split {split!r}, rows"
                f" {f['start']}..{f['stop'] - 1} ({exc}); regenerate or download it again"
            ) from None
        parts.append(_table_arrays(spec, table))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return SplitData(spec=spec, split=split, **cat)


def to_dataset_dict(source: Any, splits: Sequence[str] | None = None) -> Any:
    """A ``datasets.DatasetDict`` in memory, for small datasets.

    Args:
        source: a :class:`DatasetSpec`, a preset name, a spec JSON path, an HDF5 file or a HF
            folder.
        splits: splits to include (default: all).
    """
    _require()
    import datasets

    from .loading import load, resolve_spec

    spec = resolve_spec(source)
    out = {}
    for s in (spec.splits if splits is None else splits):
        d = load(source, s)
        table = arrow_table(spec, d.images, d.labels, d.seeds, d.indices)
        info = datasets.DatasetInfo(features=features(spec),
                                    description=f"gptextures {spec.name} v{spec.version}, "
                                                f"fingerprint {spec.fingerprint}")
        out[s] = datasets.Dataset(datasets.table.InMemoryTable(table), info=info,
                                  split=datasets.NamedSplit(s))
    return datasets.DatasetDict(out)


@dataclass
class HFVerifyReport:
    """Outcome of :func:`verify` for a folder; ``ok`` when ``problems`` is empty."""

    path: str
    fingerprint: str = ""
    counts: dict[str, int] | None = None
    files_checked: int = 0
    regenerated: list[tuple[str, int]] | None = None
    problems: list[str] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chunks_checked(self) -> int:
        return self.files_checked


def verify(folder: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
           progress: bool = False) -> HFVerifyReport:
    """Check a folder: page checksums of every file, counts, fingerprints in every file, labels,
    seeds and indices, and regenerate ``samples`` random images per split comparing bytes."""
    import pyarrow.parquet as pq

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < -1:
        raise ValueError(f"samples: expected an int >= -1 (-1 = all), got {samples!r}")
    folder = Path(folder)
    rep = HFVerifyReport(path=str(folder), counts={}, regenerated=[], problems=[])
    rec = _read_record(folder)
    spec = spec_from_provenance(rec, str(folder))
    rep.fingerprint = spec.fingerprint
    rng = np.random.default_rng(seed)
    files = rec["files"]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="verify", unit="file")
    for s in dict.fromkeys(f["split"] for f in files):
        n_rows = 0
        pool: list[tuple[dict[str, Any], int]] = []
        for f in (f for f in files if f["split"] == s):
            p = folder / f["name"]
            rep.files_checked += 1
            if bar is not None:
                bar.update(1)
            if not p.is_file():
                rep.problems.append(f"split {s!r}: file {f['name']} is missing")
                continue
            try:
                pf = pq.ParquetFile(p, page_checksum_verification=True)
                meta = (pf.schema_arrow.metadata or {}).get(b"gptextures")
                if meta is None or json.loads(meta)["fingerprint"] != spec.fingerprint:
                    rep.problems.append(f"split {s!r}: {f['name']} has another fingerprint")
                table = pf.read()
            except (OSError, ValueError, KeyError) as exc:
                rep.problems.append(f"split {s!r}, index {f['start']}..{f['stop'] - 1}: "
                                    f"{f['name']} fails to read or its checksum ({exc})")
                continue
            arr = _table_arrays(spec, table)
            idx = np.arange(f["start"], f["stop"])
            n_rows += len(arr["indices"])
            if len(arr["indices"]) != len(idx) or (arr["indices"] != idx).any():
                rep.problems.append(f"split {s!r}: {f['name']} holds indices other than "
                                    f"{f['start']}..{f['stop'] - 1}")
                continue
            if (arr["labels"] != idx % spec.num_classes).any():
                rep.problems.append(f"split {s!r}: wrong labels in {f['name']}")
            want_lev = _labels.decode_array(idx % spec.num_classes, spec.texture.radices)
            if (arr["level_labels"] != want_lev).any():
                rep.problems.append(f"split {s!r}: wrong level labels in {f['name']}")
            want_seed = np.array([spec.seed_of(s, int(i)) for i in idx], dtype=np.int64)
            if (arr["seeds"] != want_seed).any():
                rep.problems.append(f"split {s!r}: wrong seeds in {f['name']}")
            pool += [(f, int(i)) for i in idx]
            del arr, table
        rep.counts[s] = n_rows
        if int(rec.get("shard_count", 1)) == 1 and n_rows != spec.num_samples(s):
            rep.problems.append(f"split {s!r}: {n_rows} samples, expected {spec.num_samples(s)}")
        k = len(pool) if samples == -1 else min(samples, len(pool))
        for j in sorted(rng.choice(len(pool), size=k, replace=False).tolist()) if k else []:
            f, i = pool[j]
            row = pq.read_table(folder / f["name"]).slice(i - f["start"], 1)
            stored = _table_arrays(spec, row)["images"][0]
            if stored.tobytes() != spec.sample(s, i).image.tobytes():
                rep.problems.append(f"split {s!r}, index {i}: stored image differs from the image"
                                    " regenerated from its seed")
            rep.regenerated.append((s, i))
    if bar is not None:
        bar.close()
    return rep


def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False) -> Path:
    """Join complete shard folders into one Hub-ready folder (files are copied unchanged)."""
    if not shards:
        raise ValueError("shards: expected one or more shard folders, got none")
    recs = [(Path(p), _read_record(p)) for p in shards]
    spec = spec_from_provenance(recs[0][1], str(recs[0][0]))
    n = int(recs[0][1].get("shard_count", 1))
    seen: dict[int, Path] = {}
    for p, r in recs:
        if r.get("fingerprint") != spec.fingerprint:
            raise FingerprintMismatchError(
                f"shards: {str(p)!r} has fingerprint {str(r.get('fingerprint'))[:12]}, expected"
                f" {spec.fingerprint[:12]}; they are different datasets")
        if int(r.get("shard_count", 1)) != n:
            raise ValueError(f"shards: files disagree on the number of shards ({str(p)!r})")
        i = int(r.get("shard_index", 0))
        if i in seen:
            raise ValueError(f"shards: shard {i}/{n} given twice ({str(seen[i])!r}, {str(p)!r})")
        seen[i] = p
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ValueError(f"shards: missing shard(s) {missing} of {n}")
    first = recs[0][1]
    splits = list(dict.fromkeys(f["split"] for _, r in recs for f in r["files"]))
    writer = HFWriter.open(out, spec, splits=[s for s in spec.splits if s in splits],
                           compression=first["compression"],
                           rows_per_file=int(first["rows_per_file"]), overwrite=overwrite)
    for p, r in recs:
        for f in r["files"]:
            dst = writer.work / f["name"]
            if not dst.exists():
                tmp = Path(str(dst) + PARTIAL_SUFFIX)
                shutil.copyfile(p / f["name"], tmp)
                os.replace(tmp, dst)
    return writer.finish()
