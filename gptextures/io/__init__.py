"""File formats behind one interface, and loading from any source.

``read_spec(path)``, ``load(source, split)`` and ``open_source(source)`` accept any dataset
file or folder (the format is detected from the path), a preset name, a spec JSON file or a
:class:`~gptextures.DatasetSpec`. Formats are registered in :mod:`gptextures.io.formats`
(``hdf5``: :mod:`gptextures.io.hdf5`, ``hf``: :mod:`gptextures.io.hf`); the layouts are
documented in docs/formats.md. Nothing here imports h5py or pyarrow until a format is used.
"""

from .formats import FORMATS, Format, Reader, check_formats, detect_format, format_of, get_format
from .loading import SpecSource, generate_split, load, open_source, read_spec, resolve_spec
from .lock import OutputBusyError
from .meta import (
    FORMAT_VERSION,
    CorruptDataError,
    FingerprintMismatchError,
    FormatError,
)
from .split_data import SplitData
from .verify import VerifyReport

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "CorruptDataError",
    "FingerprintMismatchError",
    "Format",
    "FormatError",
    "OutputBusyError",
    "Reader",
    "SpecSource",
    "SplitData",
    "VerifyReport",
    "check_formats",
    "detect_format",
    "format_of",
    "generate_split",
    "get_format",
    "load",
    "open_source",
    "read_spec",
    "resolve_spec",
]
