"""What every written file records (spec, fingerprint, versions), the errors of the file layer.

Both formats store the same provenance: the spec JSON (canonical, sorted keys), its fingerprint,
the package version, the generator's algorithm version, the FFT backend that rendered the images
and a format version. None of it is time-dependent, so two runs of the same spec write the same
metadata bytes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..spec import ALGORITHM_VERSION, DatasetSpec

#: Version of the on-disk layouts described in docs/formats.md (HDF5 and HF folder).
FORMAT_VERSION = 1
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


def human_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_disk_space(directory: str | os.PathLike[str], needed: int, what: str) -> None:
    """Refuse up front to write ``needed`` bytes into ``directory`` when they cannot fit.

    Raises:
        OSError: (``ENOSPC``) naming the figure, the free space and the directory.
    """
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"out: {what} needs at least {human_bytes(needed)} on"
                      f" disk and {str(directory)!r} has {human_bytes(free)} free; free space or"
                      " choose another --out", str(directory))


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or ``None``."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str) -> None:
    """Refuse up front to allocate ``needed`` bytes that this machine does not have.

    Raises:
        MemoryError: naming the figure and what is available.
    """
    avail = available_memory()
    if avail is not None and needed > avail:
        raise MemoryError(f"{what} needs {human_bytes(needed)} of memory and"
                          f" {human_bytes(avail)} is available; load less at a time (a file and"
                          " gptextures.torch.TextureDataset read one image at a time)")


def progress_bar(total: int, desc: str, progress: bool, *, initial: int = 0,
                 unit: str = "img") -> Any:
    """A tqdm bar when ``progress`` (else ``None``): library code shows one only when asked."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)


_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class WriteError(OSError):
    """Writing an output failed; the message names it and says how to resume."""


def write_error(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` (raised while writing ``path``) as one clear line: what failed, where, and that
    rerunning the same command resumes. Errors that already say so pass through."""
    if isinstance(exc, (WriteError, FileExistsError, FileNotFoundError, CorruptDataError,
                        BlockingIOError, IsADirectoryError, PermissionError)):
        return exc
    code = exc.errno
    cause = os.strerror(code) if code else " ".join(str(exc).split())[:200]
    where = f"out: cannot write {str(path)!r}: {cause}" + (f" (errno {code})" if code else "")
    if code in _SPACE_ERRNOS:
        advice = ("free space on that filesystem (or raise the file size limit, `ulimit -f`),"
                  " then rerun the same command: it resumes from the unfinished output")
    else:
        advice = "fix the cause, then rerun the same command: it resumes from the unfinished output"
    return WriteError(code or errno.EIO, f"{where}; {advice}")


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A UTF-8 text file (a byte-order mark is allowed), or a clear error naming it and
    ``what`` it is (the parameter)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {str(path)!r} is a directory; expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: {str(path)!r} is not UTF-8 text (byte {exc.start}:"
                         f" {exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8"
                         ) from None


def parse_json(text: str, path: str | os.PathLike[str], what: str) -> Any:
    """``json.loads(text)`` of file ``path``; errors (nesting too deep too) as ValueError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: {str(path)!r} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{what}: {str(path)!r} is nested too deeply to be a"
                         " gptextures file") from None
