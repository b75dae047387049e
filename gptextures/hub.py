"""Publishing to the Hugging Face Hub: datasets, trained runs and leaderboards, versioned.

Everything goes through ``huggingface_hub`` (endpoint from ``HF_ENDPOINT``, default the Hub):

- :func:`plan_dataset` / :func:`plan_run` decide, offline, what one publication uploads (the
  card rendered, the files listed); ``--dry-run`` prints a plan and stops there.
- :func:`publish` uploads a plan as **one commit** and then tags it. The tag is created only
  after the commit is read back and holds every planned file with the right size and hash, so
  no tag ever points at a half-uploaded commit. Publishing an unchanged folder again makes no
  commit (unchanged files are skipped); a tag that already exists must hold the same dataset
  fingerprint (or, for a model, the same weights): tags are immutable versions.
- :func:`push_leaderboard` / :func:`pull_leaderboard` keep one leaderboard JSON per dataset
  fingerprint at ``leaderboards/<fingerprint>.json`` in a dataset repo.

The token comes from ``HF_TOKEN`` or a prior ``hf auth login`` (``huggingface_hub.get_token``).
It is passed to the client and nowhere else: never printed, logged, written into a card or a
file, and every error message is scrubbed of it. Failures raise :class:`HubError` subclasses
with one clear message; rerunning the same command finishes an interrupted publication (files
already uploaded are not sent again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .leaderboard import Leaderboard
from .spec import DatasetSpec

BOARD_DIR = "leaderboards"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---- errors -------------------------------------------------------------------------------
class HubError(Exception):
    """A publication failed; the message says why and what to do (never the token)."""


class HubAuthError(HubError, PermissionError):
    """No token, a token the Hub rejects (401) or one that cannot write the repo (403)."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The repo (or the revision) does not exist, or the token cannot see it."""


class HubConnectionError(HubError, ConnectionError):
    """The network failed; nothing was tagged, and rerunning the command finishes the job."""


class HubConflictError(HubError, ValueError):
    """The Hub holds something this publication must not overwrite (a tag of another dataset
    fingerprint, a leaderboard entry of the same method with other results)."""


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


def resolve_token(token: str | None = None) -> str:
    """The token to use: ``token``, else ``HF_TOKEN``, else the one ``hf auth login`` saved."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise HubAuthError("no Hugging Face token: set HF_TOKEN to a token with write access"
                           " (https://huggingface.co/settings/tokens) or run `hf auth login`")
    return found


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


@dataclass
class PublishResult:
    """What :func:`publish` did."""

    repo_id: str
    repo_type: str
    commit: str
    new_commit: bool
    tag: str | None
    new_tag: bool
    url: str
    notes: list[str] = field(default_factory=list)


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


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- datasets ------------------------------------------------------------------------------
def dataset_source(path: str | os.PathLike[str]) -> str:
    """``"hf"``, ``"hdf5"`` or ``"run"`` for a path ``gptextures publish`` accepts."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and (p / "run.json").is_file():
        return "run"
    from .io.meta import detect_format

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
    from .io.meta import detect_format

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
    from . import leaderboard as _lb

    if hasattr(_lb, "shipped_board_path"):
        try:
            return Path(_lb.shipped_board_path(name))
        except (ValueError, FileNotFoundError):
            return None
    p = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "leaderboards"
    return p / f"{name}.json"


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
    from .io.hf import dataset_card
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
    card = dataset_card(spec, splits=splits, preview=preview, load_args=load_args,
                        hub_sections=hub, made_by=(str(record.get("package_version")),
                                                   str(record.get("fft_backend"))))
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

    check_repo_id(repo_id)
    check_repo_id(dataset_repo, "dataset_repo")
    check_ref(revision, "revision")
    if tag is not None:
        check_ref(tag, "tag")
    from .runs import load_run

    run = load_run(run_folder)
    cfg = run.config
    ds_rev = check_ref(dataset_revision if dataset_revision is not None
                       else f"v{cfg['dataset']['version']}", "dataset_revision")
    folder = Path(run.path)
    workdir = tempfile.TemporaryDirectory(prefix="gptextures-publish-")
    notes = []
    weights = Path(run.weights_path)
    if weights.suffix != ".safetensors":
        weights = _to_safetensors(weights, Path(workdir.name) / "model.safetensors")
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


# ---- talking to the Hub --------------------------------------------------------------------
def _is_network_error(exc: BaseException) -> bool:
    e: BaseException | None = exc
    while e is not None:
        root = type(e).__module__.split(".")[0]
        if isinstance(e, (ConnectionError, TimeoutError)) or root in (
                "httpx", "httpx2", "httpcore", "requests", "urllib3"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _server_message(exc: BaseException) -> str:
    msg = getattr(exc, "server_message", None)
    if msg:
        return str(msg).strip().splitlines()[0]
    resp = getattr(exc, "response", None)
    header = resp.headers.get("X-Error-Message") if resp is not None else None
    return header or str(exc).strip().splitlines()[0]


@contextlib.contextmanager
def _hub_errors(token: str | None, action: str, repo_id: str) -> Iterator[None]:
    """Turn client errors into one-line :class:`HubError` messages, scrubbed of the token."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def scrub(text: str) -> str:
        return text.replace(token, "***") if token else text

    rerun = ("Nothing was tagged; rerun the same command to finish (files already uploaded are"
             " not sent again).")
    try:
        yield
    except HubError as e:
        raise type(e)(scrub(str(e))) from None
    except OfflineModeIsEnabled:
        raise HubConnectionError("HF_HUB_OFFLINE is set: unset it to reach the Hub") from None
    except RevisionNotFoundError as e:
        raise HubNotFoundError(scrub(f"{action}: revision not found on {repo_id}"
                                     f" ({_server_message(e)})")) from None
    except RepositoryNotFoundError as e:
        status = _status(e)
        if status == 401 and "Invalid credentials" in _server_message(e):
            raise HubAuthError("the Hub rejected the token (401 Unauthorized): it is invalid or"
                               " expired; set HF_TOKEN to a valid token or run"
                               " `hf auth login`") from None
        raise HubNotFoundError(scrub(f"{action}: {repo_id} does not exist or this token cannot"
                                     f" see it ({status})")) from None
    except HfHubHTTPError as e:
        status, msg = _status(e), scrub(_server_message(e))
        if status == 401:
            raise HubAuthError(f"the Hub rejected the token (401 Unauthorized: {msg}); set"
                               " HF_TOKEN to a valid token or run `hf auth login`") from None
        if status == 403:
            raise HubAuthError(f"{action}: this token cannot write to {repo_id} (403 Forbidden:"
                               f" {msg}); use a token with write access to that namespace"
                               ) from None
        if status == 412:
            raise HubConflictError(f"{action}: {repo_id} changed while publishing (412); rerun"
                                   " the command") from None
        if status is not None and status >= 500:
            raise HubConnectionError(f"{action}: the Hub answered {status} ({msg}). {rerun}"
                                     ) from None
        raise HubError(f"{action}: the Hub answered {status} ({msg})") from None
    except Exception as e:  # noqa: BLE001 - network errors come wrapped in several types
        if not _is_network_error(e):
            raise
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        detail = scrub(f"{type(cause).__name__}: {cause}")
        raise HubConnectionError(f"network failure while {action} ({detail}). {rerun}"
                                 ) from None


class _Hub:
    """The client calls of one publication, each wrapped in :func:`_hub_errors`."""

    def __init__(self, token: str | None, *, write: bool = True):
        from huggingface_hub import HfApi, get_token

        # Reading a public repo needs no token; writing always does.
        self.token = resolve_token(token) if write else (token or get_token())
        self.api = HfApi(token=self.token)

    def call(self, action: str, repo_id: str, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        with _hub_errors(self.token, action, repo_id):
            return fn(*args, **kwargs)

    def check_writer(self, repo_id: str) -> None:
        who = self.call("checking the token", repo_id, self.api.whoami)
        role = (((who or {}).get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise HubAuthError(f"the token is read-only; publishing to {repo_id} needs a token"
                               " with write access")

    def read_text(self, repo_id: str, repo_type: str, path: str, revision: str) -> str | None:
        """A small file of the repo at ``revision`` (None when the Hub says there is none)."""
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        with tempfile.TemporaryDirectory(prefix="gptextures-hub-") as tmp, \
                _hub_errors(self.token, f"reading {path}", repo_id):
            try:
                p = self.api.hf_hub_download(repo_id, path, repo_type=repo_type,
                                             revision=revision, cache_dir=tmp)
            except EntryNotFoundError as e:
                if isinstance(e, HfHubHTTPError):  # the Hub answered: no such file
                    return None
                raise  # not found locally because the Hub could not be reached
            return Path(p).read_text(encoding="utf-8")

    def files(self, repo_id: str, repo_type: str, revision: str) -> list[str]:
        return self.call("listing files", repo_id, self.api.list_repo_files, repo_id,
                         repo_type=repo_type, revision=revision)

    def refs(self, repo_id: str, repo_type: str) -> tuple[dict[str, str], dict[str, str]]:
        refs = self.call("listing branches and tags", repo_id, self.api.list_repo_refs,
                         repo_id, repo_type=repo_type)
        return ({b.name: b.target_commit for b in refs.branches},
                {t.name: t.target_commit for t in refs.tags})


def _remote_fingerprint(hub: _Hub, repo_id: str, revision: str) -> str | None:
    text = hub.read_text(repo_id, "dataset", "gptextures.json", revision)
    return None if text is None else json.loads(text).get("fingerprint")


def _tag_identity(hub: _Hub, plan: Plan, tag: str) -> str | None:
    if plan.kind == "dataset":
        return _remote_fingerprint(hub, plan.repo_id, tag)
    infos = hub.call("reading the tag", plan.repo_id, hub.api.get_paths_info, plan.repo_id,
                     ["model.safetensors"], repo_type="model", revision=tag)
    lfs = getattr(infos[0], "lfs", None) if infos else None
    return None if lfs is None else lfs.sha256


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """huggingface_hub's upload bars on or off for a while (its global switch restored)."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    (enable_progress_bars if show else disable_progress_bars)()
    try:
        yield
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()


def publish(plan: Plan, *, private: bool = False, token: str | None = None,
            message: str | None = None, progress: bool = False) -> PublishResult:
    """Upload a plan as one commit on ``plan.revision`` and tag it (see the module docstring).

    Raises:
        HubAuthError: no token, a rejected token (401) or no write access (403).
        HubConflictError: ``plan.tag`` exists and holds another dataset fingerprint (or other
            weights); a dataset the results refer to has another fingerprint.
        HubConnectionError: the network failed (rerun to finish).
    """
    with _progress_bars(progress):
        return _publish(plan, _Hub(token), private, message)


def _publish(plan: Plan, hub: _Hub, private: bool, message: str | None) -> PublishResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo, kind = plan.repo_id, plan.repo_type
    hub.check_writer(repo)
    notes: list[str] = []
    for ds_repo, ds_rev, fp in plan.requires:
        try:
            remote = _remote_fingerprint(hub, ds_repo, ds_rev)
        except HubNotFoundError as e:
            raise HubConflictError(
                f"dataset_repo: {e}; the results must refer to a published dataset: publish it"
                f" there first (gptextures publish DATA --repo {ds_repo}) or pass the right"
                " --dataset-repo / --dataset-revision") from None
        if remote != fp:
            raise HubConflictError(
                f"dataset_repo: {ds_repo} at {ds_rev} holds "
                + (f"fingerprint {remote[:12]}..." if remote else "no gptextures dataset")
                + f", the results are on {fp[:12]}...; publish the dataset there first"
                " (gptextures publish DATA --repo ...) or pass the right --dataset-revision")
    hub.call("creating the repo", repo, hub.api.create_repo, repo, repo_type=kind,
             private=private or None, exist_ok=True)  # None: the namespace's default
    info = hub.call("reading the repo", repo, hub.api.repo_info, repo, repo_type=kind)
    if private and not getattr(info, "private", True):
        notes.append(f"{repo} already exists and is public; --private applies to new repos")
    branches, tags = hub.refs(repo, kind)
    tag_exists = plan.tag is not None and plan.tag in tags
    if tag_exists:
        held = _tag_identity(hub, plan, plan.tag)
        if held != plan.identity[1]:
            raise HubConflictError(
                f"tag: {plan.tag} of {repo} already holds {plan.identity[0]} "
                f"{(held or 'unknown')[:12]}..., this is {plan.identity[1][:12]}...; tags are"
                " immutable versions: publish under another --tag (or bump the spec's version)")
    if plan.revision not in branches:
        hub.call("creating the branch", repo, hub.api.create_branch, repo,
                 branch=plan.revision, repo_type=kind)
        branches, _ = hub.refs(repo, kind)
    head = branches[plan.revision]
    remote_files = hub.files(repo, kind, head)
    if plan.kind == "dataset" and plan.render_card is not None:
        _merge_remote_board(hub, plan, remote_files, head, notes)
    planned = {u.path_in_repo for u in plan.files}
    stale = [p for p in remote_files if p.startswith(plan.stale_prefixes) and p not in planned]
    ops: list[Any] = [CommitOperationAdd(u.path_in_repo, u.source) for u in plan.files]
    ops += [CommitOperationDelete(p) for p in stale]
    msg = message or f"Publish {plan.title}" + (f" ({plan.tag})" if plan.tag else "")
    commit = hub.call("uploading", repo, hub.api.create_commit, repo, ops, commit_message=msg,
                      repo_type=kind, revision=plan.revision, parent_commit=head)
    oid = commit.oid
    _verify_commit(hub, plan, oid, ops)
    new_tag = False
    if plan.tag is not None and not tag_exists:
        hub.call("tagging", repo, hub.api.create_tag, repo, tag=plan.tag, revision=oid,
                 repo_type=kind, tag_message=msg)
        new_tag = True
    return PublishResult(repo, kind, oid, oid != head, plan.tag, new_tag,
                         repo_url(repo, kind, plan.tag or plan.revision), notes)


def _verify_commit(hub: _Hub, plan: Plan, oid: str, ops: Sequence[Any]) -> None:
    """Read the commit back: every planned file, with its size and hash, or a HubError."""
    paths = [u.path_in_repo for u in plan.files]
    infos = hub.call("checking the commit", plan.repo_id, hub.api.get_paths_info,
                     plan.repo_id, paths, repo_type=plan.repo_type, revision=oid)
    remote = {i.path: i for i in infos}
    by_path = {op.path_in_repo: op for op in ops if hasattr(op, "upload_info")}
    for u in plan.files:
        r = remote.get(u.path_in_repo)
        ok = r is not None and r.size == u.size
        if ok and getattr(r, "lfs", None) is not None:
            ok = r.lfs.sha256 == by_path[u.path_in_repo].upload_info.sha256.hex()
        elif ok:
            data = u.source if isinstance(u.source, bytes) else u.source.read_bytes()
            ok = r.blob_id == _git_blob_oid(data)
        if not ok:
            raise HubError(f"commit {oid[:12]} of {plan.repo_id} does not hold {u.path_in_repo}"
                           " as uploaded; nothing was tagged; rerun the command")


def _merge_remote_board(hub: _Hub, plan: Plan, remote_files: list[str], head: str,
                        notes: list[str]) -> None:
    fp = plan.identity[1]
    path = board_path(fp)
    if path not in remote_files:
        return
    text = hub.read_text(plan.repo_id, "dataset", path, head)
    remote = Leaderboard.from_dict(json.loads(text), where=f"{plan.repo_id}:{path}")
    if plan.board is not None:
        rep = merge_boards(remote, plan.board, replace=False)
        if rep.added or rep.conflicts:
            notes += rep.lines(f"the leaderboard of {plan.repo_id}", "the local board")
    plan.board = remote
    plan.set_file(path, remote.to_json().encode())
    plan.set_file("README.md", plan.render_card(remote).encode())


# ---- leaderboards ------------------------------------------------------------------------
@dataclass
class MergeReport:
    """Methods added, already equal, replaced, and in conflict (kept as they were)."""

    added: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def lines(self, into: str, source: str) -> list[str]:
        out = [f"{into}: {len(self.added)} entries added from {source}, {len(self.same)}"
               f" already there, {len(self.replaced)} replaced"]
        if self.conflicts:
            out.append(f"{into}: kept its own results for {', '.join(self.conflicts)} (the"
                       f" {source} entries of the same method differ; --replace takes them)")
        return out


def merge_boards(base: Leaderboard, incoming: Leaderboard, *, replace: bool) -> MergeReport:
    """Add ``incoming``'s entries to ``base`` (validated against ``base``'s fingerprint).

    An entry whose method is not in ``base`` is added; an identical one is skipped; a different
    one of the same method is a conflict: replaced when ``replace``, else kept and reported.
    """
    from .evaluation import FingerprintMismatchError

    if incoming.fingerprint != base.fingerprint:
        raise FingerprintMismatchError(
            f"leaderboard: entries for fingerprint {incoming.fingerprint[:12]}... cannot join the"
            f" leaderboard of {base.fingerprint[:12]}...")
    rep = MergeReport()
    mine = {e["method"]: e for e in base.entries}
    for e in incoming.entries:
        old = mine.get(e["method"])
        if old is None:
            base.add(e)
            rep.added.append(e["method"])
        elif json.dumps(old, sort_keys=True) == json.dumps(e, sort_keys=True):
            rep.same.append(e["method"])
        elif replace:
            base.add(e, replace=True)
            rep.replaced.append(e["method"])
        else:
            rep.conflicts.append(e["method"])
    return rep


def push_leaderboard(board: Leaderboard, repo_id: str, *, replace: bool = False,
                     token: str | None = None, message: str | None = None
                     ) -> tuple[PublishResult, MergeReport]:
    """Add a local leaderboard's entries to ``leaderboards/<fingerprint>.json`` of a dataset repo.

    The remote board is read, validated and merged (an entry of the same method with other
    results is refused unless ``replace``), then written in one commit whose parent is the
    commit read (a concurrent push makes it fail instead of losing entries; rerun). When the
    repo's card has a leaderboard section for this fingerprint, it is updated in the same commit.
    """
    check_repo_id(repo_id)
    with _progress_bars(False):
        return _push(board, repo_id, replace, _Hub(token), message)


def _push(board: Leaderboard, repo_id: str, replace: bool, hub: _Hub, message: str | None
          ) -> tuple[PublishResult, MergeReport]:
    from huggingface_hub import CommitOperationAdd

    hub.check_writer(repo_id)
    hub.call("creating the repo", repo_id, hub.api.create_repo, repo_id, repo_type="dataset",
             exist_ok=True)
    branches, _ = hub.refs(repo_id, "dataset")
    head = branches["main"]
    path = board_path(board.fingerprint)
    files = hub.files(repo_id, "dataset", head)
    if path in files:
        text = hub.read_text(repo_id, "dataset", path, head)
        merged = Leaderboard.from_dict(json.loads(text), where=f"{repo_id}:{path}")
        if merged.fingerprint != board.fingerprint:
            from .evaluation import FingerprintMismatchError

            raise FingerprintMismatchError(
                f"{repo_id}:{path} holds the leaderboard of fingerprint"
                f" {merged.fingerprint[:12]}..., not {board.fingerprint[:12]}...; fix that file")
    else:
        merged = Leaderboard(board.dataset, board.level_names, board.split)
    rep = merge_boards(merged, board, replace=replace)
    if rep.conflicts:
        raise HubConflictError(
            f"leaderboard: {repo_id} already has other results for {', '.join(rep.conflicts)};"
            " pull first to compare, rename the method, or pass --replace to overwrite them")
    ops = [CommitOperationAdd(path, merged.to_json().encode())]
    if "README.md" in files:
        readme = hub.read_text(repo_id, "dataset", "README.md", head) or ""
        updated = _card_with_board(readme, merged)
        if updated is not None and updated != readme:
            ops.append(CommitOperationAdd("README.md", updated.encode()))
    msg = message or (f"Leaderboard {board.dataset['name']} ({board.fingerprint[:12]}): "
                      f"+{len(rep.added)} entries")
    commit = hub.call("pushing the leaderboard", repo_id, hub.api.create_commit, repo_id, ops,
                      commit_message=msg, repo_type="dataset", revision="main",
                      parent_commit=head)
    res = PublishResult(repo_id, "dataset", commit.oid, commit.oid != head, None, False,
                        f"{endpoint()}/datasets/{repo_id}/blob/main/{path}")
    return res, rep


def _card_with_board(readme: str, board: Leaderboard) -> str | None:
    """The card with its leaderboard section replaced, when it has one for this fingerprint."""
    from .leaderboard import README_END, README_START

    if readme.count(README_START) != 1 or readme.count(README_END) != 1 \
            or f"fingerprint `{board.fingerprint[:12]}`" not in readme:
        return None
    a = readme.index(README_START) + len(README_START)
    b = readme.index(README_END)
    if b < a:
        return None
    return readme[:a] + "\n" + board.to_markdown() + readme[b:]


def pull_leaderboard(repo_id: str, fingerprint: str, local: Leaderboard | None = None, *,
                     replace: bool = False, token: str | None = None,
                     revision: str = "main") -> tuple[Leaderboard, MergeReport]:
    """Merge the entries of a repo's leaderboard for ``fingerprint`` into ``local``.

    Reading needs no token for a public repo (one is used when set). Local entries win over
    remote entries of the same method unless ``replace``. Returns the merged board (``local``
    updated, or a new one when ``local`` is None) and what changed.
    """
    check_repo_id(repo_id)
    with _progress_bars(False):
        return _pull(repo_id, fingerprint, local, replace, _Hub(token, write=False), revision)


def _pull(repo_id: str, fingerprint: str, local: Leaderboard | None, replace: bool, hub: _Hub,
          revision: str) -> tuple[Leaderboard, MergeReport]:
    path = board_path(fingerprint)
    text = hub.read_text(repo_id, "dataset", path, revision)
    if text is None:
        files = hub.files(repo_id, "dataset", revision)
        have = sorted(p[len(BOARD_DIR) + 1:-5][:12] for p in files
                      if p.startswith(BOARD_DIR + "/") and p.endswith(".json"))
        raise FileNotFoundError(f"{repo_id} has no leaderboard for fingerprint"
                                f" {fingerprint[:12]}... (it has: {', '.join(have) or 'none'})")
    remote = Leaderboard.from_dict(json.loads(text), where=f"{repo_id}:{path}")
    if local is None:
        local = Leaderboard(remote.dataset, remote.level_names, remote.split)
    rep = merge_boards(local, remote, replace=replace)
    return local, rep
