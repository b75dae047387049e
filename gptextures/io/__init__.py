"""File formats: HDF5 (``hdf5``) and Hugging Face Datasets (``hf``), and loading from either.

``read_spec(path)`` and ``load(path, split)`` accept either format (detected from the path);
``gptextures.io.hdf5`` and ``gptextures.io.hf`` hold the writers and readers. The layouts are
documented in docs/formats.md.
"""

from .loading import SplitData, generate_split, load, read_spec, resolve_spec
from .meta import (
    FORMAT_VERSION,
    FORMATS,
    CorruptDataError,
    FingerprintMismatchError,
    FormatError,
    detect_format,
)

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "CorruptDataError",
    "FingerprintMismatchError",
    "FormatError",
    "SplitData",
    "detect_format",
    "generate_split",
    "load",
    "read_spec",
    "resolve_spec",
]
