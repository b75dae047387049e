"""Hugging Face Datasets folders: ``Features``, Parquet files, a Hub-ready card, ``DatasetDict``.

Folder layout (docs/formats.md)::

    README.md                                         dataset card: YAML front matter + prose
    gptextures.json                                   provenance, complete, files and their rows
    data/{split}-{i:05d}-of-{n:05d}-{content}.parquet rows in index order, ``rows_per_file`` each

``content`` is :func:`content_id`: 12 hex digits that change whenever the files' content does
(spec fingerprint, FFT backend, compression, rows per file). The card's ``configs`` name it, so
``datasets.load_dataset(folder)``, whose cache key is the card's metadata and not the files,
never serves another folder's images from its cache.

Each Parquet file is written with pyarrow directly from ``features.arrow_schema`` (so
``datasets.load_dataset(folder)`` finds the HF features: ``Array2D`` image, ``ClassLabel`` label
and one ``ClassLabel`` per level) plus the provenance under the schema metadata key
``gptextures``. Files are written by workers, one row group at a time (memory stays flat), under a
``.partial`` name and renamed when done; the folder itself is ``<folder>.partial`` until every
file, the card and ``gptextures.json`` are written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import labels as _labels
from ..spec import DatasetSpec
from . import lock as _lock
from .behind import WriteBehind
from .formats import Format, FormatWriter, Reader, Task, check_target
from .meta import (
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    CorruptDataError,
    FingerprintMismatchError,
    FormatError,
    ensure_writable_dir,
    human_bytes,
    progress_bar,
    provenance,
    spec_from_provenance,
)
from .split_data import SplitData
from .verify import VerifyReport, check_samples

COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "none")
TARGET_FILE_BYTES = 256 * 2**20
TARGET_ROW_GROUP_BYTES = 32 * 2**20
META_FILE = "gptextures.json"
LAYOUT_FILE = "layout.json"


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


def schema_bytes(spec: DatasetSpec) -> bytes:
    """:func:`arrow_schema` serialised (Arrow IPC), for worker processes: read back with
    ``pyarrow.ipc.read_schema`` they write the same Parquet bytes without importing
    ``datasets`` (~1 s per worker pool), the image column then being its plain storage type
    with the extension's name in the field metadata, as Parquet stores it anyway."""
    return arrow_schema(spec).serialize().to_pybytes()


def arrow_table(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray,
                indices: np.ndarray, schema: Any = None) -> Any:
    """A ``pyarrow.Table`` of rows: ``images`` float32 ``(k, H, W)``, ``labels``/``seeds``/
    ``indices`` int ``(k,)``; ``schema``: :func:`arrow_schema` (the default) or the same read
    back from :func:`schema_bytes`."""
    import pyarrow as pa

    schema = arrow_schema(spec) if schema is None else schema
    k = len(images)
    h, w = spec.texture.size
    flat = pa.array(np.ascontiguousarray(images, dtype=np.float32).reshape(-1))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, k * h * w + 1, w, dtype=np.int32)),
                                     flat)
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, k * h + 1, h, dtype=np.int32)), inner)
    image_type = schema.field("image").type
    image = pa.ExtensionArray.from_storage(image_type, outer) \
        if isinstance(image_type, pa.ExtensionType) else outer
    labels = np.asarray(labels, dtype=np.int64)
    levels = _labels.decode_array(labels, spec.texture.radices)
    cols = [image, pa.array(labels)]
    cols += [pa.array(levels[:, j]) for j in range(spec.texture.depth)]
    cols += [pa.array(np.asarray(seeds, dtype=np.int64)),
             pa.array(np.asarray(indices, dtype=np.int64))]
    return pa.Table.from_arrays(cols, schema=schema)


# ---- layout -------------------------------------------------------------------------------
def content_id(spec: DatasetSpec, compression: str, rows_per_file: int,
               fft_backend: str | None = None) -> str:
    """12 hex digits naming a folder's content: a sha256 of what determines its files' bytes
    (spec fingerprint, which includes the generator's algorithm version, the FFT backend that
    renders, compression, rows per file, format version). The same content id means the
    same files: the generator is deterministic for a given backend."""
    if fft_backend is None:
        from ..fft import backend_name

        fft_backend = backend_name()
    key = json.dumps({"fingerprint": spec.fingerprint, "fft_backend": fft_backend,
                      "compression": compression, "rows_per_file": rows_per_file,
                      "format_version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ParquetFile:
    """One Parquet file of a split: rows ``start .. stop - 1``."""

    split: str
    index: int
    count: int
    start: int
    stop: int
    content: str

    @property
    def name(self) -> str:
        return f"data/{self.split}-{self.index:05d}-of-{self.count:05d}-{self.content}.parquet"


def data_pattern(split: str, content: str) -> str:
    """The card's ``data_files`` pattern of a split's files."""
    return f"data/{split}-*-{content}.parquet"


def default_rows_per_file(spec: DatasetSpec) -> int:
    """Rows per Parquet file: about 256 MiB of images per file, at least one row."""
    h, w = spec.texture.size
    return max(1, TARGET_FILE_BYTES // (h * w * 4))


def plan_files(spec: DatasetSpec, rows_per_file: int | None = None,
               splits: Sequence[str] | None = None, compression: str = "zstd",
               fft_backend: str | None = None) -> list[ParquetFile]:
    """Every Parquet file of a dataset, in split then index order."""
    rpf = default_rows_per_file(spec) if rows_per_file is None else rows_per_file
    if isinstance(rpf, bool) or not isinstance(rpf, int) or rpf < 1:
        raise ValueError(f"rows_per_file: expected an int >= 1, got {rows_per_file!r}")
    cid = content_id(spec, compression, rpf, fft_backend)
    out = []
    for s in (spec.splits if splits is None else splits):
        n = spec.num_samples(s)
        count = -(-n // rpf)
        for i in range(count):
            out.append(ParquetFile(s, i, count, i * rpf, min(n, (i + 1) * rpf), cid))
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


# ---- writing ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _spec_of(spec_json: str) -> DatasetSpec:
    return DatasetSpec.from_json(spec_json)


def write_file(spec_json: str, folder: str, split: str, index: int, count: int, start: int,
               stop: int, compression: str, content: str, schema: bytes | None = None) -> int:
    """Generate rows ``start:stop`` of ``split`` and write them as one Parquet file.

    Runs in a worker process (or a Dask worker): generates one row group at a time and writes
    ``<file>.partial`` before renaming it. A write-behind thread encodes and writes each row
    group (pyarrow releases the GIL) while the next one renders; the file's bytes are the same
    as writing in line. ``schema``: :func:`schema_bytes` (default: computed here, which
    imports ``datasets``). Returns the file's size in bytes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = _spec_of(spec_json)
    final = Path(folder) / ParquetFile(split, index, count, start, stop, content).name
    tmp = Path(str(final) + PARTIAL_SUFFIX)
    schema = arrow_schema(spec) if schema is None else pa.ipc.read_schema(pa.py_buffer(schema))
    h, w = spec.texture.size
    group = max(1, TARGET_ROW_GROUP_BYTES // (h * w * 4))
    with pq.ParquetWriter(tmp, schema, **_parquet_options(compression)) as writer:
        behind = WriteBehind(lambda table, n: writer.write_table(table, row_group_size=n),
                             depth=1, name="parquet-writer")
        try:
            for a in range(start, stop, group):
                b = min(stop, a + group)
                table = arrow_table(spec, spec.images(split, a, b), spec.labels(split, a, b),
                                    spec.seeds(split, a, b), np.arange(a, b, dtype=np.int64),
                                    schema)
                behind.put((table, b - a))
        except BaseException:
            behind.close(abort=True)
            raise
        behind.close()
    os.replace(tmp, final)
    return final.stat().st_size


class HFWriter(FormatWriter):
    """A Hub-ready folder (or one shard of it) under construction at ``<folder>.partial``.

    Holds the output's lock from :meth:`open` to :meth:`finish` or :meth:`close`.
    """

    def __init__(self, path: Path, spec: DatasetSpec, files: list[ParquetFile],
                 shard: tuple[int, int], compression: str, rows_per_file: int):
        self.path = path
        self.spec = spec
        self.files = files
        self.shard = shard
        self.compression = compression
        self.rows_per_file = rows_per_file
        self.counts = {}
        for f in files:
            self.counts[f.split] = self.counts.get(f.split, 0) + f.stop - f.start
        self.resumed = {}
        self._written = 0
        self._locked = True
        self._schema: bytes | None = None

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
            OutputBusyError: another process is writing ``path``.
        """
        _require()
        _parquet_options(compression)
        path = Path(path)
        spec = _canonical(spec)
        splits = list(spec.splits) if splits is None else [spec.check_split(s) for s in splits]
        rpf = default_rows_per_file(spec) if rows_per_file is None else rows_per_file
        files = shard_files(plan_files(spec, rpf, splits, compression), shard)
        check_target(path, spec, "hf", overwrite)
        ensure_writable_dir(path.parent)
        _lock.acquire(path)
        try:
            self = cls(path, spec, files, shard, compression, rpf)
            layout = self._layout()
            marker = self.work / LAYOUT_FILE
            if self.work.exists() and not overwrite and marker.is_file():
                stored = json.loads(marker.read_text())
                if stored != layout:
                    raise FileExistsError(
                        f"out: {str(self.work)!r} is an unfinished folder of another spec or"
                        f" layout ({stored.get('fingerprint', '?')[:12]},"
                        f" {stored.get('rows_per_file')} rows per file, files"
                        f" ...-{stored.get('content', '?')}.parquet); pass overwrite=True"
                        " (--overwrite) to discard it"
                    )
            elif self.work.exists():
                shutil.rmtree(self.work)
            (self.work / "data").mkdir(parents=True, exist_ok=True)
            for stale in (self.work / "data").glob("*" + PARTIAL_SUFFIX):
                stale.unlink()  # being written when a run died (we hold the lock: not now)
            marker.write_text(json.dumps(layout, sort_keys=True))
            self.resumed = {}
            for f in files:
                if self.done(f):
                    self.resumed[f.split] = self.resumed.get(f.split, 0) + f.stop - f.start
            return self
        except BaseException:
            _lock.release(path)
            raise

    def _layout(self) -> dict[str, Any]:
        return {"fingerprint": self.spec.fingerprint, "shard": list(self.shard),
                "compression": self.compression, "rows_per_file": self.rows_per_file,
                "content": self.files[0].content if self.files else "",
                "files": [f.name for f in self.files]}

    def done(self, f: ParquetFile) -> bool:
        return (self.work / f.name).is_file()

    def pending(self) -> list[ParquetFile]:
        """Files still to write (in order)."""
        return [f for f in self.files if not self.done(f)]

    def task(self, f: ParquetFile) -> tuple[Any, ...]:
        """Arguments of :func:`write_file` for one file."""
        if self._schema is None:
            self._schema = schema_bytes(self.spec)
        return (self.spec.to_json(indent=None), str(self.work), f.split, f.index, f.count,
                f.start, f.stop, self.compression, f.content, self._schema)

    def tasks(self, executor: str, workers: int) -> list[Task]:
        """One task per missing file: workers render and write whole files."""
        return [Task(write_file, self.task(f), f.stop - f.start) for f in self.pending()]

    def accept(self, task: Task, result: Any) -> None:
        self._written += task.samples

    @property
    def samples_written(self) -> int:
        return self._written

    def finish(self) -> Path:
        """Write ``gptextures.json`` and ``README.md`` and rename the folder to its final path."""
        missing = self.pending()
        if missing:
            raise ValueError(f"{len(missing)} Parquet file(s) still missing, e.g."
                             f" {missing[0].name}; cannot finish")
        (self.work / LAYOUT_FILE).unlink()
        _write_metadata(self.work, self.spec, self.files, self.shard, self.compression,
                        self.rows_per_file)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.work, self.path)
        self.close()
        return self.path

    def close(self) -> None:
        """Stop without finishing: finished files stay, a rerun resumes."""
        if self._locked:
            self._locked = False
            _lock.release(self.path)


def _write_metadata(folder: Path, spec: DatasetSpec, files: Sequence[ParquetFile],
                    shard: tuple[int, int], compression: str, rows_per_file: int) -> None:
    record = provenance(spec)
    record.update({
        "complete": True, "shard_index": shard[0], "shard_count": shard[1],
        "compression": compression, "rows_per_file": rows_per_file,
        "content": files[0].content if files else "",
        "files": [{"name": f.name, "split": f.split, "start": f.start, "stop": f.stop}
                  for f in files],
    })
    (folder / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if shard[1] == 1:
        present = list(dict.fromkeys(f.split for f in files))
        patterns = {s: data_pattern(s, files[0].content) for s in present}
        (folder / "README.md").write_text(dataset_card(spec, splits=present,
                                                       data_files=patterns))


def dataset_card(spec: DatasetSpec, splits: Sequence[str] | None = None, *, preview: str = "",
                 load_args: str = '"path/or/repo"', hub_sections: str = "",
                 made_by: tuple[str, str] | None = None,
                 data_files: Mapping[str, str] | None = None) -> str:
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
        data_files: split -> the ``configs`` path pattern of its Parquet files (default
            ``data/<split>-*``). A folder's patterns name its content id, so that
            ``datasets.load_dataset`` caches each content apart (see :func:`content_id`).
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
            "data_files": [{"split": s, "path": (data_files or {}).get(s, f"data/{s}-*")}
                           for s in splits],
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


# ---- reading ------------------------------------------------------------------------------
def _read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(folder) / META_FILE
    if not p.is_file():
        raise FormatError(f"path: {str(folder)!r} has no {META_FILE}; not a gptextures HF folder")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"path: {str(p)!r} is not valid JSON ({exc})") from None


def read_spec(folder: str | os.PathLike[str]) -> DatasetSpec:
    """The :class:`DatasetSpec` of a gptextures HF folder."""
    return spec_from_provenance(_read_record(folder), str(folder))


def _table_arrays(spec: DatasetSpec, table: Any) -> dict[str, np.ndarray]:
    import pyarrow as pa

    out: dict[str, np.ndarray] = {}
    h, w = spec.texture.size
    if "image" in table.column_names:
        col = table.column("image")
        storage = pa.concat_arrays([c.storage if hasattr(c, "storage") else c
                                    for c in col.chunks]) \
            if col.num_chunks else pa.array([], pa.list_(pa.list_(pa.float32())))
        flat = storage.flatten().flatten().to_numpy(zero_copy_only=False)
        out["images"] = np.asarray(flat, dtype=np.float32).reshape(len(table), h, w)
    if "label" in table.column_names:
        out["labels"] = table.column("label").to_numpy().astype(np.int64)
        out["level_labels"] = np.stack(
            [table.column(level_column(n)).to_numpy().astype(np.int64)
             for n in spec.texture.level_names], axis=1)
        out["seeds"] = table.column("seed").to_numpy().astype(np.int64)
        out["indices"] = table.column("index").to_numpy().astype(np.int64)
    return out


_COLUMNS_BUT_IMAGE = ("label", "seed", "index")


class HFDataset(Reader):
    """Read access to a gptextures HF folder (or shard): whole splits, or one image at a time
    (the row group holding it is read and kept until another one is needed).

    Args:
        folder: the folder (``gptextures.json`` inside).
        allow_incomplete: accepted for the common interface; unfinished folders
            (``<name>-hf.partial``) are never readable.
    """

    def __init__(self, folder: str | os.PathLike[str], *, allow_incomplete: bool = False):
        _require()
        self.path = Path(folder)
        if not self.path.exists():
            raise FileNotFoundError(f"path: {str(self.path)!r} does not exist")
        self.record = _read_record(self.path)
        self.spec = spec_from_provenance(self.record, str(self.path))
        self.complete = bool(self.record.get("complete", False))
        self._files: dict[str, list[dict[str, Any]]] = {}
        for f in self.record["files"]:
            self._files.setdefault(f["split"], []).append(f)
        self._open: dict[str, Any] = {}  # file name -> pyarrow ParquetFile
        self._cached: tuple[str, int, np.ndarray] | None = None  # (file, row group, images)

    @property
    def splits(self) -> list[str]:
        return list(self._files)

    def files(self, split: str) -> list[dict[str, Any]]:
        """The split's files: ``{"name", "split", "start", "stop"}``, in index order."""
        return self._files[self.check_split(split)]

    def range(self, split: str) -> tuple[int, int]:
        fs = self.files(split)
        return fs[0]["start"], fs[-1]["stop"]

    def num_samples(self, split: str) -> int:
        return sum(f["stop"] - f["start"] for f in self.files(split))

    def _corrupt(self, f: dict[str, Any], exc: Exception) -> CorruptDataError:
        return CorruptDataError(
            f"{str(self.path / f['name'])!r}: corrupted data in split {f['split']!r}, rows"
            f" {f['start']}..{f['stop'] - 1} ({type(exc).__name__}: {exc}); regenerate or"
            " download it again")

    def _parquet(self, f: dict[str, Any]) -> Any:
        import pyarrow.parquet as pq

        pf = self._open.get(f["name"])
        if pf is None:
            p = self.path / f["name"]
            if not p.is_file():
                raise FileNotFoundError(f"{str(self.path)!r}: file {f['name']} of split"
                                        f" {f['split']!r} is missing; download or regenerate"
                                        " the dataset")
            try:
                pf = pq.ParquetFile(p, page_checksum_verification=True)
            except (OSError, ValueError) as exc:  # ArrowInvalid (truncated) is a ValueError
                raise self._corrupt(f, exc) from None
            self._open[f["name"]] = pf
        return pf

    def _read(self, f: dict[str, Any], columns: Sequence[str] | None = None) -> Any:
        try:
            return self._parquet(f).read(columns=columns)
        except (OSError, ValueError) as exc:
            if isinstance(exc, (FileNotFoundError, CorruptDataError)):
                raise
            raise self._corrupt(f, exc) from None

    def images(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        n = self.num_samples(split)
        stop = n if stop is None else min(int(stop), n)
        h, w = self.spec.texture.size
        out = np.empty((max(0, stop - start), h, w), dtype=np.float32)
        lo = self.range(split)[0]
        for j, i in enumerate(range(start, stop)):
            out[j] = self._image(split, lo + i)
        return out

    def _image(self, split: str, index: int) -> np.ndarray:
        f = next(f for f in self.files(split) if f["start"] <= index < f["stop"])
        row = index - f["start"]
        pf = self._parquet(f)
        first = 0
        for g in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if row < first + rows:
                break
            first += rows
        if self._cached is None or self._cached[:2] != (f["name"], g):
            try:
                table = pf.read_row_group(g, columns=["image"])
            except (OSError, ValueError) as exc:
                raise self._corrupt(f, exc) from None
            self._cached = (f["name"], g, _table_arrays(self.spec, table)["images"])
        return self._cached[2][row - first]

    def _columns(self, split: str) -> dict[str, np.ndarray]:
        cols = list(_COLUMNS_BUT_IMAGE) + [level_column(n) for n in self.spec.texture.level_names]
        parts = [_table_arrays(self.spec, self._read(f, cols)) for f in self.files(split)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def labels(self, split: str) -> np.ndarray:
        return self._columns(split)["labels"]

    def level_labels(self, split: str) -> np.ndarray:
        return self._columns(split)["level_labels"]

    def seeds(self, split: str) -> np.ndarray:
        return self._columns(split)["seeds"]

    def indices(self, split: str) -> np.ndarray:
        return self._columns(split)["indices"]

    def read_split(self, split: str) -> SplitData:
        """A whole split (read with pyarrow, page checksums verified)."""
        parts = [_table_arrays(self.spec, self._read(f)) for f in self.files(split)]
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return SplitData(spec=self.spec, split=split, **cat)

    def close(self) -> None:
        self._open.clear()
        self._cached = None


def load_split(folder: str | os.PathLike[str], split: str) -> SplitData:
    """A whole split of a folder as :class:`gptextures.io.SplitData` (read with pyarrow)."""
    with HFDataset(folder) as ds:
        return ds.read_split(split)


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


# ---- verify and merge ---------------------------------------------------------------------
def verify(folder: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
           progress: bool = False) -> VerifyReport:
    """Check a folder: page checksums of every file, counts, fingerprints in every file, labels,
    seeds and indices, and regenerate ``samples`` random images per split (``-1``: all),
    compared byte for byte with the FFT backend that wrote the folder, else within float32
    rounding (:func:`gptextures.io.verify.image_tolerance`)."""
    check_samples(samples)
    rep = VerifyReport(path=str(folder), format="hf", unit="files")
    with HFDataset(folder) as ds:
        spec = ds.spec
        rep.start(spec, str(ds.record.get("fft_backend", "")))
        rng = np.random.default_rng(seed)
        bar = progress_bar(len(ds.record["files"]), "verify", progress, unit="file")
        try:
            for s in ds.splits:
                _verify_split(ds, s, rng, samples, rep, bar)
        finally:
            if bar is not None:
                bar.close()
    return rep


def _verify_split(ds: HFDataset, s: str, rng: np.random.Generator, samples: int,
                  rep: VerifyReport, bar: Any) -> None:
    spec = ds.spec
    n_rows = 0
    pool: list[tuple[dict[str, Any], int]] = []
    for f in ds.files(s):
        rep.units_checked += 1
        if bar is not None:
            bar.update(1)
        try:
            pf = ds._parquet(f)
            meta = (pf.schema_arrow.metadata or {}).get(b"gptextures")
            if meta is None or json.loads(meta)["fingerprint"] != spec.fingerprint:
                rep.problems.append(f"split {s!r}: {f['name']} has another fingerprint")
            arr = _table_arrays(spec, ds._read(f, list(_COLUMNS_BUT_IMAGE) + [
                level_column(n) for n in spec.texture.level_names]))
            ds._read(f, ["image"])  # every page's checksum
        except FileNotFoundError:
            rep.problems.append(f"split {s!r}: file {f['name']} is missing")
            continue
        except (CorruptDataError, KeyError, ValueError) as exc:
            rep.problems.append(f"split {s!r}, index {f['start']}..{f['stop'] - 1}: "
                                f"{f['name']} fails to read or its checksum ({exc})")
            continue
        idx = np.arange(f["start"], f["stop"])
        n_rows += len(arr["indices"])
        if len(arr["indices"]) != len(idx) or (arr["indices"] != idx).any():
            rep.problems.append(f"split {s!r}: {f['name']} holds indices other than "
                                f"{f['start']}..{f['stop'] - 1}")
            continue
        rep.check_columns(spec, s, f["start"], arr["labels"], arr["level_labels"], arr["seeds"],
                          where=f["name"])
        pool += [(f, int(i)) for i in idx]
    rep.counts[s] = n_rows
    if int(ds.record.get("shard_count", 1)) == 1 and n_rows != spec.num_samples(s):
        rep.problems.append(f"split {s!r}: {n_rows} samples, expected {spec.num_samples(s)}")
    k = len(pool) if samples == -1 else min(samples, len(pool))
    for j in sorted(rng.choice(len(pool), size=k, replace=False).tolist()) if k else []:
        f, i = pool[j]
        rep.check_image(spec, s, i, ds._image(s, i))


def merge(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
          overwrite: bool = False, progress: bool = False) -> Path:
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
        if r.get("fft_backend") != recs[0][1].get("fft_backend"):
            raise ValueError(f"shards: {str(p)!r} was rendered with FFT {r.get('fft_backend')},"
                             f" {str(recs[0][0])!r} with {recs[0][1].get('fft_backend')}; their"
                             " files cannot form one folder")
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
    try:
        bar = progress_bar(sum(len(r["files"]) for _, r in recs), "merge", progress, unit="file")
        for p, r in recs:
            for f in r["files"]:
                dst = writer.work / f["name"]
                if not dst.exists():
                    tmp = Path(str(dst) + PARTIAL_SUFFIX)
                    shutil.copyfile(p / f["name"], tmp)
                    os.replace(tmp, dst)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return writer.finish()
    finally:
        writer.close()


class HFFormat(Format):
    """``<out>/<name>-hf/``: a Hub-ready folder of Parquet files and a dataset card."""

    name = "hf"
    looks_like = f"a folder holding {META_FILE}"
    options = {"compression": "zstd", "rows_per_file": None}
    worker_modules = ("gptextures.io.hf", "pyarrow.parquet")  # no datasets: schema passed

    def detect(self, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / META_FILE).is_file()

    def default_path(self, out_dir: str | os.PathLike[str], spec: DatasetSpec,
                     shard: tuple[int, int] = (0, 1)) -> Path:
        return default_path(out_dir, spec, shard)

    def open_writer(self, path: str | os.PathLike[str], spec: DatasetSpec, *,
                    splits: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
                    overwrite: bool = False, compression: str = "zstd",
                    rows_per_file: int | None = None) -> HFWriter:
        return HFWriter.open(path, spec, splits=splits, shard=shard, compression=compression,
                             rows_per_file=rows_per_file, overwrite=overwrite)

    def open_reader(self, path: str | os.PathLike[str], *,
                    allow_incomplete: bool = False) -> HFDataset:
        return HFDataset(path, allow_incomplete=allow_incomplete)

    def read_spec(self, path: str | os.PathLike[str]) -> DatasetSpec:
        return read_spec(path)

    def verify(self, path: str | os.PathLike[str], *, samples: int = 8, seed: int | None = None,
               progress: bool = False) -> VerifyReport:
        return verify(path, samples=samples, seed=seed, progress=progress)

    def merge(self, shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
              overwrite: bool = False, progress: bool = False) -> Path:
        return merge(shards, out, overwrite=overwrite, progress=progress)

    def stored_bytes(self, spec: DatasetSpec, images: int, *,
                     compression: str = "zstd", rows_per_file: int | None = None) -> int:
        full = super().stored_bytes(spec, images)
        return full if compression == "none" else full // 2

    def describe(self, path: str | os.PathLike[str]) -> list[str]:
        p = Path(path)
        rec = _read_record(p)
        size = sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
        lines = [f"folder: {p} (Hugging Face, format {rec.get('format_version')},"
                 f" {len(rec['files'])} Parquet files, {human_bytes(size)})"]
        if int(rec.get("shard_count", 1)) > 1:
            lines.append(f"  shard {rec.get('shard_index')}/{rec.get('shard_count')}")
        counts: dict[str, int] = {}
        for f in rec["files"]:
            counts[f["split"]] = counts.get(f["split"], 0) + f["stop"] - f["start"]
        for s, n in counts.items():
            lines.append(f"  {s}: {n} samples")
        lines.append(f"  written by gptextures {rec.get('package_version')}, algorithm "
                     f"{rec.get('algorithm_version')}, FFT {rec.get('fft_backend')}, "
                     f"compression {rec.get('compression')}, content {rec.get('content', '-')}")
        return lines


FORMAT = HFFormat()
