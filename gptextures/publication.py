"""What one publication to the Hugging Face Hub uploads, decided offline (``--dry-run``).

:func:`plan_dataset` (a generated HF folder, or an HDF5 file exported first) and :func:`plan_run`
(a trained run folder) return a :class:`Plan`: the files, the rendered card (``README.md``),
the tag and what that tag must hold (the dataset fingerprint, or the weights' sha256), and the
dataset repos a model's results refer to. Nothing here touches the network;
:func:`gptextures.hub.publish` uploads a plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .leaderboard import Leaderboard
from .spec import DatasetSpec

BOARD_DIR = "leaderboards"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_repo_id(repo_id: Any, name: str = "repo") -> str:
    """``OWNER/NAME`` (letters, digits, ``-``, ``_``, ``.``) or a ValueError naming ``name``."""
    if not isinstance(repo_id, str) or not _REPO_RE.match(repo_id) or ".." in repo_id:
        raise ValueError(f"{name}: expected OWNER/NAME (letters, digits, '-', '_', '.'), got"
                         f" {repo_id!r}")
    return repo_id


def check_ref(ref: Any, name: str) -> str:
    """A branch or tag name (letters, digits, ``-``, ``_``, ``.``; no ``..``)."""
    if not isinstance(ref, str) or not _REF_RE.match(ref) or ".." in ref \
            or ref.endswith(".lock"):
        raise ValueError(f"{name}: expected a branch/tag name of letters, digits, '-', '_' and"
                         f" '.', got {ref!r}")
    return ref


def endpoint() -> str:
    """The Hub's base URL (``HF_ENDPOINT``, default ``https://huggingface.co``)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def repo_url(repo_id: str, repo_type: str, ref: str | None = None) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    base = f"{endpoint()}/{prefix}{repo_id}"
    return base if ref is None else f"{base}/tree/{ref}"


# ---- what one publication uploads ----------------------------------------------------------
@dataclass
class Upload:
    """One file of a publication: ``path_in_repo`` <- a local file or bytes."""

    path_in_repo: str
    source: Path | bytes

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


@dataclass
class Plan:
    """One publication, decided offline.

    Attributes:
        kind: ``"dataset"`` or ``"model"`` (also the repo type).
        title: what is published, e.g. ``gptextures tiny v1.0.0``.
        files: the uploads (the card is ``README.md``).
        identity: what a tag must hold, ``(name, value)``: the dataset fingerprint, or the
            weights' sha256 for a model.
        stale_prefixes: remote files under these folders that are not in ``files`` are deleted
            in the same commit (old Parquet files of another layout).
        requires: dataset repos the card points at, ``(repo, revision, fingerprint)``, checked
            on the Hub before anything is uploaded.
        board: the leaderboard shown in a dataset card; ``render_card(board)`` re-renders the
            card when the repo's own leaderboard adds entries.
        notes: lines for the user (what was exported, converted, ...).
    """

    kind: str
    repo_id: str
    title: str
    files: list[Upload]
    identity: tuple[str, str]
    revision: str = "main"
    tag: str | None = None
    stale_prefixes: tuple[str, ...] = ()
    requires: list[tuple[str, str, str]] = field(default_factory=list)
    board: Leaderboard | None = None
    render_card: Callable[[Leaderboard | None], str] | None = None
    notes: list[str] = field(default_factory=list)
    workdir: tempfile.TemporaryDirectory | None = None

    @property
    def repo_type(self) -> str:
        return self.kind

    @property
    def card(self) -> str:
        src = self.file("README.md").source
        return src.decode() if isinstance(src, bytes) else src.read_text(encoding="utf-8")

    def file(self, path_in_repo: str) -> Upload:
        return next(u for u in self.files if u.path_in_repo == path_in_repo)

    def set_file(self, path_in_repo: str, data: bytes) -> None:
        self.files = [u for u in self.files if u.path_in_repo != path_in_repo]
        self.files.append(Upload(path_in_repo, data))
        self.files.sort(key=lambda u: (u.path_in_repo != "README.md", u.path_in_repo))

    def close(self) -> None:
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """What would be uploaded, and the rendered card (``--dry-run``)."""
        total = sum(u.size for u in self.files)
        lines = [f"would publish {self.title} to {self.kind} repo {self.repo_id}"
                 f" ({repo_url(self.repo_id, self.repo_type)})",
                 f"  branch {self.revision}, tag {self.tag or '(none)'};"
                 f" {self.identity[0]} {self.identity[1]}"]
        for repo, rev, fp in self.requires:
            lines.append(f"  results refer to dataset repo {repo} at {rev} (fingerprint"
                         f" {fp[:12]}...; checked on the Hub when publishing)")
        lines += [f"  {n}" for n in self.notes]
        lines.append(f"  {len(self.files)} files, {_human(total)}:")
        width = max(len(u.path_in_repo) for u in self.files)
        lines += [f"    {u.path_in_repo:<{width}}  {_human(u.size):>10}" for u in self.files]
        lines += ["", "---- README.md (the card) ----", self.card.rstrip("\n")]
        return "\n".join(lines) + "\n"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            h.update(block)
    return h.hexdigest()


# ---- datasets ------------------------------------------------------------------------------
def dataset_source(path: str | os.PathLike[str]) -> str:
    """``"hf"``, ``"hdf5"`` or ``"run"`` for a path ``gptextures publish`` accepts."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and (p / "run.json").is_file():
        return "run"
    from .io import detect_format

    return detect_format(p)


def plan_dataset(source: str | os.PathLike[str], repo_id: str, *, tag: str | None = None,
                 revision: str = "main", leaderboard: str | os.PathLike[str] | None = None,
                 progress: bool = False) -> Plan:
    """Plan the publication of a generated dataset (offline).

    Args:
        source: a complete gptextures HF folder, or an HDF5 file (exported to a temporary HF
            folder with ``gptextures generate``'s writer, and checked to hold the same bytes).
        repo_id: ``OWNER/NAME`` of the dataset repo.
        tag: default ``v<version>`` of the spec.
        revision: the branch to commit to.
        leaderboard: a leaderboard JSON for the card (default: the one shipped with gptextures
            for this dataset, when its fingerprint matches).
    Uploads: ``README.md`` (the card), ``data/*.parquet``, ``gptextures.json`` (provenance),
    ``spec.json``, ``preview.png`` and, when there is one, ``leaderboards/<fingerprint>.json``.
    """
    check_repo_id(repo_id)
    check_ref(revision, "revision")
    workdir = tempfile.TemporaryDirectory(prefix="gptextures-publish-")
    try:
        folder, notes = _dataset_folder(Path(source), Path(workdir.name), progress)
        plan = _plan_folder(folder, repo_id, tag, revision, leaderboard, Path(workdir.name))
    except BaseException:
        workdir.cleanup()
        raise
    plan.notes = notes + plan.notes
    plan.workdir = workdir
    return plan


def _dataset_folder(src: Path, work: Path, progress: bool) -> tuple[Path, list[str]]:
    from .io import detect_format

    fmt = detect_format(src)
    if fmt == "hf":
        rec = json.loads((src / "gptextures.json").read_text())
        if int(rec.get("shard_count", 1)) != 1:
            raise ValueError(f"source: {str(src)!r} is shard {rec.get('shard_index')} of"
                             f" {rec.get('shard_count')}; join the shards first (gptextures"
                             " merge) and publish the merged folder")
        if not rec.get("complete"):
            raise ValueError(f"source: {str(src)!r} is not a complete folder")
        missing = [f["name"] for f in rec["files"] if not (src / f["name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"source: {str(src)!r} lacks {len(missing)} Parquet file(s),"
                                    f" e.g. {missing[0]}; regenerate or download it again")
        return src, []
    return _export_hdf5(src, work, progress)


def _export_hdf5(path: Path, work: Path, progress: bool) -> tuple[Path, list[str]]:
    """Write the HF folder of an HDF5 file with ``generate``'s writer; check every image."""
    import numpy as np
    import pyarrow.parquet as pq

    from .fft import backend_name
    from .generation import generate
    from .io import hdf5 as _hdf5

    with _hdf5.HDF5Dataset(path) as ds:
        spec = ds.spec
        attrs = dict(ds.attrs)
        splits = [s for s in spec.splits if s in ds.splits]
        for s in splits:
            lo, hi = ds.range(s)
            if (lo, hi) != (0, spec.num_samples(s)):
                raise ValueError(f"source: {str(path)!r} holds samples {lo}..{hi - 1} of split"
                                 f" {s!r} (a shard); join the shards first (gptextures merge)")
    res = generate(spec, work, formats="hf", splits=splits, progress=progress)
    folder = res.paths["hf"]
    rec = json.loads((folder / "gptextures.json").read_text())
    made_with = attrs.get("fft_backend")
    with _hdf5.HDF5Dataset(path) as ds:
        for f in rec["files"]:
            row = f["start"]
            for batch in pq.ParquetFile(folder / f["name"]).iter_batches(
                    batch_size=8, columns=["image"]):
                col = batch.column(0)
                flat = (col.storage if hasattr(col, "storage") else col).flatten().flatten()
                imgs = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
                for img in imgs.reshape(batch.num_rows, -1):
                    if img.tobytes() != np.ascontiguousarray(ds.image(f["split"], row)).tobytes():
                        raise ValueError(
                            f"source: image {row} of split {f['split']!r} of {str(path)!r} differs"
                            f" from the one regenerated here (file made with FFT backend"
                            f" {made_with!r}, this machine uses {backend_name()!r}); publish an"
                            " HF folder written where the file was made (gptextures generate"
                            " ... --format hf), so that the Hub holds the file's bytes")
                    row += 1
    return folder, [f"exported {path.name} to Parquet ({len(rec['files'])} files; every image"
                    " checked equal to the HDF5 file's bytes)"]


def _plan_folder(folder: Path, repo_id: str, tag: str | None, revision: str,
                 leaderboard: str | os.PathLike[str] | None, work: Path) -> Plan:
    from .io.hf import read_spec
    from .io.scale_preview import scale_preview

    spec = read_spec(folder)
    rec = json.loads((folder / "gptextures.json").read_text())
    tag = check_ref(tag if tag is not None else f"v{spec.version}", "tag")
    board = _load_board(spec, leaderboard)
    preview = scale_preview(folder, work / "preview.png")
    files = [Upload("gptextures.json", folder / "gptextures.json"),
             Upload("spec.json", (spec.to_json(indent=2) + "\n").encode()),
             Upload("preview.png", preview)]
    files += [Upload(f["name"], folder / f["name"]) for f in rec["files"]]
    local_meta = _card_metadata(folder / "README.md")

    def render(b: Leaderboard | None) -> str:
        return dataset_hub_card(spec, rec, repo_id, tag, board=b, extra_metadata=local_meta)

    plan = Plan("dataset", repo_id, f"gptextures {spec.name} v{spec.version}", files,
                ("fingerprint", spec.fingerprint), revision=revision, tag=tag,
                stale_prefixes=("data/",), board=board, render_card=render)
    plan.set_file("README.md", render(board).encode())
    if board is not None:
        plan.set_file(board_path(spec.fingerprint), board.to_json().encode())
        plan.notes.append(f"leaderboard: {len(board.entries)} entries for this fingerprint")
    return plan


def _card_metadata(readme: Path) -> dict[str, Any]:
    if not readme.is_file():
        return {}
    from huggingface_hub import DatasetCard

    return DatasetCard(readme.read_text(encoding="utf-8")).data.to_dict()


def _load_board(spec: DatasetSpec, path: str | os.PathLike[str] | None) -> Leaderboard | None:
    """The leaderboard of ``path``, else the shipped one when it is for this fingerprint."""
    if path is not None:
        board = Leaderboard.load(path)
        if board.fingerprint != spec.fingerprint:
            from .evaluation import FingerprintMismatchError

            raise FingerprintMismatchError(
                f"leaderboard: {str(path)!r} is for fingerprint {board.fingerprint[:12]}..., the"
                f" dataset is {spec.fingerprint[:12]}...")
        return board
    shipped = shipped_board(spec.name)
    if shipped is None or not shipped.is_file():
        return None
    board = Leaderboard.load(shipped)
    return board if board.fingerprint == spec.fingerprint else None


def shipped_board(name: str) -> Path | None:
    """Where the leaderboard gptextures ships for a preset lives (None when it has none)."""
    from .leaderboard import shipped_board_path

    try:
        return shipped_board_path(name)
    except ValueError:  # not a preset
        return None


def regenerate_command(spec: DatasetSpec, record: dict[str, Any]) -> str:
    """The ``gptextures generate`` line that rewrites a folder's Parquet files byte for byte."""
    from . import presets

    source = "spec.json"
    if spec.name in presets.names() and presets.get(spec.name).fingerprint == spec.fingerprint:
        source = spec.name
    splits = list(dict.fromkeys(f["split"] for f in record["files"]))
    args = [f"gptextures generate {source} --out data --format hf",
            f"--hf-compression {record['compression']}",
            f"--rows-per-file {record['rows_per_file']}"]
    if set(splits) != set(spec.splits):
        args += [f"--split {s}" for s in splits]
    return " ".join(args)


def dataset_hub_card(spec: DatasetSpec, record: dict[str, Any], repo_id: str, tag: str, *,
                     board: Leaderboard | None = None,
                     extra_metadata: dict[str, Any] | None = None) -> str:
    """The README.md of a dataset repo: the folder's card plus the preview, the command that
    regenerates the files, the leaderboard of this fingerprint and the repo's load line.

    ``extra_metadata``: front-matter keys of the folder's own card that the Hub card lacks
    (kept as they are).
    """
    from .io.hf import data_pattern, dataset_card
    from .io.scale_preview import LEVEL_WINDOW, windows

    splits = list(dict.fromkeys(f["split"] for f in record["files"]))
    base = f"{endpoint()}/datasets/{repo_id}/resolve/{tag}"
    shown = "train" if "train" in splits else splits[0]
    h, w = spec.texture.size
    _, crop = windows(spec, 128)
    finest = min(min(lv.length_scales) for lv in spec.texture.levels)
    preview = (
        f"\n<img src=\"{base}/preview.png\" alt=\"One image per class with its level fields\""
        f" width=\"800\">\n\n"
        f"*Each row is one class, shown with its first `{shown}` image. Columns: each level's"
        f" field (what the image mixes) in a window about {LEVEL_WINDOW} of its length scales"
        f" wide, the whole image, and a crop (red square) shown "
        + ("at native resolution" if crop.zoom == 1 else f"magnified {crop.zoom}x")
        + f". Shrunk to a page, a {h}x{w} image hides its finest scale ({finest:g} px): only"
        " the crop shows it.*\n"
    )
    cmd = regenerate_command(spec, record)
    board_md = board.to_markdown() if board is not None and board.entries else (
        "No results for this fingerprint yet.\n")
    from .leaderboard import README_END, README_START

    hub = (
        "## Regenerating these files\n\n"
        f"The Parquet files were written by gptextures {record.get('package_version')} (FFT"
        f" backend `{record.get('fft_backend')}`, algorithm version"
        f" {record.get('algorithm_version')}). With the same versions this command rewrites"
        " them byte for byte, and `gptextures verify` checks any copy against images"
        " regenerated from their seeds:\n\n"
        "```console\n"
        + ("" if cmd.split()[2] != "spec.json" else
           f"$ hf download {repo_id} spec.json --repo-type dataset --revision {tag}"
           " --local-dir .\n")
        + f"$ {cmd}\n$ gptextures verify data/{spec.name}-hf\n```\n\n"
        "Another FFT backend gives images equal to these up to float32 rounding, not bit for"
        " bit. `spec.json` is the dataset's spec and `gptextures.json` its provenance.\n\n"
        "## Leaderboard\n\n"
        f"Split `test`, fingerprint `{spec.fingerprint[:12]}`; the full table with recipes is"
        f" `{board_path(spec.fingerprint)}` in this repo.\n\n"
        f"{README_START}\n{board_md}{README_END}\n\n"
        "Score a model with `gptextures evaluate --predictions preds.json --dataset"
        f" {spec.name if cmd.split()[2] != 'spec.json' else 'spec.json'}`, add the entry with"
        " `gptextures leaderboard add`, and share it with `gptextures leaderboard push"
        f" --repo {repo_id}`.\n\n"
    )
    load_args = f"\"{repo_id}\", revision=\"{tag}\""
    content = record.get("content")  # the folder's content id names its files (io.hf)
    card = dataset_card(spec, splits=splits, preview=preview, load_args=load_args,
                        hub_sections=hub, made_by=(str(record.get("package_version")),
                                                   str(record.get("fft_backend"))),
                        data_files={s: data_pattern(s, content) for s in splits}
                        if content else None)
    if extra_metadata:
        card = _merge_front_matter(card, extra_metadata)
    return card


def _merge_front_matter(card: str, extra: dict[str, Any]) -> str:
    """Add the keys of ``extra`` that ``card``'s YAML front matter lacks (values unchanged)."""
    import yaml

    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    missing = {k: v for k, v in extra.items() if k not in meta}
    if not missing:
        return card
    meta.update(missing)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body


def board_path(fingerprint: str) -> str:
    """Where a repo keeps the leaderboard of a fingerprint: ``leaderboards/<fingerprint>.json``."""
    return f"{BOARD_DIR}/{fingerprint}.json"


# ---- runs (trained models) -----------------------------------------------------------------
def plan_run(run_folder: str | os.PathLike[str], repo_id: str, *, dataset_repo: str,
             dataset_revision: str | None = None, tag: str | None = None,
             revision: str = "main") -> Plan:
    """Plan the publication of a trained run folder as a model repo (offline).

    Args:
        run_folder: a complete run folder (``config.json``, ``run.json``, weights,
            ``predictions.json``, ``evaluation.json``, ...).
        repo_id: ``OWNER/NAME`` of the model repo.
        dataset_repo: the dataset repo the results are on (its card's ``model-index`` names it).
        dataset_revision: the dataset repo's tag (default ``v<dataset version>``).
        tag: optional tag of the model repo.
    Uploads ``model.safetensors`` (a ``model.pt`` state dict is converted), the run's JSON and
    CSV files and a model card whose ``model-index`` holds the joint and per-level accuracies.
    """
    from .model_card import model_card
    from .runs import load_run

    check_repo_id(repo_id)
    check_repo_id(dataset_repo, "dataset_repo")
    check_ref(revision, "revision")
    if tag is not None:
        check_ref(tag, "tag")
    run = load_run(run_folder)
    cfg = run.config
    ds_rev = check_ref(dataset_revision if dataset_revision is not None
                       else f"v{cfg['dataset']['version']}", "dataset_revision")
    folder = Path(run.path)
    workdir = tempfile.TemporaryDirectory(prefix="gptextures-publish-")
    notes = []
    weights = Path(run.weights_path)
    if weights.suffix != ".safetensors":
        try:
            weights = _to_safetensors(weights, Path(workdir.name) / "model.safetensors")
        except BaseException:
            workdir.cleanup()
            raise
        notes.append(f"converted {run.weights_path.name} (a torch state dict) to safetensors")
    files = [Upload("model.safetensors", weights)]
    for name in ("config.json", "run.json", "evaluation.json", "predictions.json",
                 "loss_curve.csv", "dataset.json"):
        if (folder / name).is_file():
            files.append(Upload(name, folder / name))
    card = model_card(run, repo_id, dataset_repo, ds_rev, revision=tag or revision,
                      endpoint=endpoint())
    plan = Plan("model", repo_id, f"{cfg['method']} (seed {cfg['seed']})", files,
                ("weights sha256", _sha256(weights)), revision=revision, tag=tag,
                requires=[(dataset_repo, ds_rev, run.evaluation.fingerprint)], notes=notes,
                workdir=workdir)
    plan.set_file("README.md", card.encode())
    return plan


def _to_safetensors(path: Path, out: Path) -> Path:
    import torch

    try:
        from safetensors.torch import save_file
    except ImportError:  # pragma: no cover - optional
        raise ImportError("converting weights needs safetensors: pip install"
                          " 'gptextures[hf]'") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"weights: {str(path)!r} is not a state dict of tensors")
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(out))
    return out
