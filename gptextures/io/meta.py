"""What every written file records (spec, fingerprint, versions), format detection, errors.

Both formats store the same provenance: the spec JSON (canonical, sorted keys), its fingerprint,
the package version, the generator's algorithm version, the FFT backend that rendered the images
and a format version. None of it is time-dependent, so two runs of the same spec write the same
metadata bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..spec import ALGORITHM_VERSION, DatasetSpec

#: Version of the on-disk layouts described in docs/formats.md (HDF5 and HF folder).
FORMAT_VERSION = 1
FORMATS: tuple[str, ...] = ("hdf5", "hf")
HDF5_SUFFIXES = (".h5", ".hdf5")
PARTIAL_SUFFIX = ".partial"


class FormatError(ValueError):
    """A file or folder is not a gptextures dataset (or not one this version can read)."""


class CorruptDataError(OSError):
    """Stored bytes fail their checksum; the message names the file, split and index."""


class FingerprintMismatchError(ValueError):
    """A file's stored fingerprint does not match the spec it claims to hold."""


def provenance(spec: DatasetSpec) -> dict[str, Any]:
    """The provenance record written into every file (JSON-serialisable, deterministic)."""
    from .. import __version__
    from ..fft import backend_name

    return {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "version": spec.version,
        "fingerprint": spec.fingerprint,
        "spec_json": spec.to_json(indent=None),
        "package_version": __version__,
        "algorithm_version": ALGORITHM_VERSION,
        "fft_backend": backend_name(),
        "class_names": json.dumps(spec.class_names),
        "level_names": json.dumps(list(spec.texture.level_names)),
    }


def spec_from_provenance(record: dict[str, Any], where: str) -> DatasetSpec:
    """Rebuild the spec from a provenance record and check its fingerprint."""
    if "spec_json" not in record:
        raise FormatError(f"{where}: no 'spec_json' recorded; not a gptextures dataset")
    version = int(record.get("format_version", -1))
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{where}: format_version {version} is newer than this gptextures reads"
            f" (<= {FORMAT_VERSION}); upgrade gptextures"
        )
    spec = DatasetSpec.from_json(str(record["spec_json"]))
    stored = record.get("fingerprint")
    if stored is not None and str(stored) != spec.fingerprint:
        raise FingerprintMismatchError(
            f"{where}: stored fingerprint {str(stored)[:12]} does not match the stored spec"
            f" ({spec.fingerprint[:12]}); the file was edited or written by an incompatible version"
        )
    return spec


def detect_format(path: str | os.PathLike[str]) -> str:
    """``'hdf5'`` for an HDF5 file, ``'hf'`` for a Hugging Face folder written by gptextures.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FormatError: it exists but is neither.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: {str(p)!r} does not exist")
    if p.is_dir():
        if (p / "gptextures.json").is_file():
            return "hf"
        raise FormatError(
            f"path: folder {str(p)!r} has no gptextures.json; not a gptextures Hugging Face folder"
        )
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    raise FormatError(f"path: {str(p)!r} is neither an HDF5 file nor a gptextures HF folder")


def check_formats(formats: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse ``'hdf5,hf'`` or a list into a tuple of known formats (no duplicates)."""
    if isinstance(formats, str):
        items = [f.strip() for f in formats.split(",") if f.strip()]
    else:
        items = list(formats)
    if not items:
        raise ValueError(f"format: expected one or more of {', '.join(FORMATS)}, got {formats!r}")
    out: list[str] = []
    for f in items:
        if f not in FORMATS:
            raise ValueError(f"format: unknown format {f!r}; known formats: {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out)


def ensure_writable_dir(directory: str | os.PathLike[str], name: str = "out") -> Path:
    """Create ``directory`` if needed and check a file can be created in it.

    Raises:
        PermissionError: it cannot be created or written (read-only filesystem, permissions).
        ValueError: it exists and is not a directory.
    """
    import tempfile

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{name}: {str(d)!r} exists and is not a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"{name}: cannot create directory {str(d)!r} ({exc})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".gptextures-probe-"):
            pass
    except OSError as exc:
        raise PermissionError(f"{name}: directory {str(d)!r} is not writable ({exc})") from None
    return d
