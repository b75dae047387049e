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
    from .loading import open_source

    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class: expected an int >= 1, got {per_class!r}")
    with open_source(source) as reader:
        spec = reader.spec
        split = reader.splits[0] if split is None else reader.check_split(split)
        c = spec.num_classes
        k = min(per_class, spec.splits[split])
        lo, _ = reader.range(split)
        n = reader.num_samples(split)
        h, w = spec.texture.size
        out = np.empty((c, k, h, w), dtype=np.float32)
        for cls in range(c):
            for j in range(k):
                i = j * c + cls  # interleaved order: sample i has class i % c
                if not lo <= i < lo + n:
                    raise ValueError(f"source: {str(reader.path)!r} (a shard) does not hold"
                                     f" index {i} of split {split!r}")
                out[cls, j] = reader.image(split, i - lo)
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
