"""A PNG grid of samples, one row per class (like Fig. 5 of Golkar & Cranmer 2018).

Needs matplotlib (optional extra ``plot``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..spec import DatasetSpec


def class_examples(source: str | os.PathLike[str] | DatasetSpec, split: str | None = None,
                   per_class: int = 4) -> tuple[DatasetSpec, str, np.ndarray]:
    """The first ``per_class`` images of every class of a split.

    Args:
        source: a preset name, spec JSON file, :class:`DatasetSpec`, HDF5 file or HF folder
            (presets and specs generate only the images shown).
        split: split name (default: the first split).
        per_class: images per class, >= 1 (fewer if the split has fewer).
    Returns:
        ``(spec, split, images)`` with ``images`` float32 ``(num_classes, k, H, W)``.
    """
    from .loading import resolve_spec
    from .meta import detect_format

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class: expected an int >= 1, got {per_class!r}")
    spec = resolve_spec(source)
    split = next(iter(spec.splits)) if split is None else spec.check_split(split)
    c = spec.num_classes
    k = min(per_class, spec.splits[split])
    idx = [[col * c + cls for col in range(k)] for cls in range(c)]  # interleaved order
    p = None if isinstance(source, DatasetSpec) else Path(os.fspath(source))
    fmt = detect_format(p) if p is not None and p.exists() and p.suffix != ".json" else None
    h, w = spec.texture.size
    out = np.empty((c, k, h, w), dtype=np.float32)
    if fmt == "hdf5":
        from .hdf5 import HDF5Dataset

        with HDF5Dataset(p) as ds:
            lo, hi = ds.range(split)
            for cls in range(c):
                for j, i in enumerate(idx[cls]):
                    if not lo <= i < hi:
                        raise ValueError(f"source: {str(p)!r} (a shard) does not hold index {i}")
                    out[cls, j] = ds.image(split, i - lo)
    elif fmt == "hf":
        from .hf import load_split

        data = load_split(p, split)
        pos = {int(i): r for r, i in enumerate(data.indices)}
        for cls in range(c):
            for j, i in enumerate(idx[cls]):
                out[cls, j] = data.images[pos[i]]
    else:
        for cls in range(c):
            for j, i in enumerate(idx[cls]):
                out[cls, j] = spec.sample(split, i).image
    return spec, split, out


def preview_grid(source: Any, out: str | os.PathLike[str], *, split: str | None = None,
                 per_class: int = 4, dpi: int = 100, cmap: str = "gray") -> Path:
    """Save a grid (rows: classes, columns: samples) as an image file; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - optional extra
        raise ImportError("preview needs matplotlib: pip install 'gptextures[plot]'") from None
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise ValueError(f"dpi: expected an int in [10, 1200], got {dpi!r}")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise ValueError(f"out: expected a .png/.pdf/.svg/.jpg file name, got {str(out)!r}")
    spec, split, images = class_examples(source, split, per_class)
    c, k = images.shape[:2]
    fig, axes = plt.subplots(c, k, figsize=(1.8 * k + 1.6, 1.8 * c + 0.5), squeeze=False)
    for cls in range(c):
        for j in range(k):
            ax = axes[cls, j]
            ax.imshow(images[cls, j], cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[cls, 0].set_ylabel(spec.class_names[cls].replace("|", "\n"), fontsize=8)
    fig.suptitle(f"{spec.name} v{spec.version} ({split}), fingerprint {spec.fingerprint[:12]}",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
