"""A preview that shows every scale: per class, each level's field, the image and a 1:1 crop.

Shrinking a 1024-px image to the ~200 px a web page gives it makes a 10-px length scale
invisible, and that scale defines half of each class. So, like Fig. 5 of Golkar & Cranmer
(2018), each row (one class, its first image of a split) shows:

- each level's field (what :func:`gptextures.render_components` mixes), in a window about
  ``LEVEL_WINDOW`` of that level's longest length scale wide (the whole image for coarse levels),
  so every level's blobs are a few display pixels or more;
- the whole image (the crop's place marked);
- a crop at native resolution or magnified by an integer factor (every data pixel at least one
  display pixel, the finest length scale at least ``MIN_SCALE_DISPLAY_PX`` display pixels).

The figure is laid out for a page ``display_px`` wide (the Hub renders cards ~800 px wide) and
saved at ``density`` image pixels per display pixel, fonts sized for that width. Needs
matplotlib (extra ``plot``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..spec import DatasetSpec

LEVEL_WINDOW = 24  # level windows span this many of the level's longest length scale
MIN_SCALE_DISPLAY_PX = 6.0  # the finest length scale spans at least this many display pixels


@dataclass(frozen=True)
class Window:
    """A square window ``image[y:y + size, x:x + size]`` shown magnified ``zoom`` times."""

    y: int
    x: int
    size: int
    zoom: int = 1

    def take(self, a: np.ndarray) -> np.ndarray:
        return a[self.y:self.y + self.size, self.x:self.x + self.size]


@dataclass(frozen=True)
class ClassRow:
    """One class: its first image of the split, the per-level fields and the windows shown.

    Attributes:
        fields: level name -> float32 ``(H, W)`` normalised field (mean 0, std 1).
        image: float32 ``(H, W)``, the stored image.
        level_windows: level name -> the part of that field shown.
    """

    class_index: int
    class_name: str
    index: int
    seed: int
    fields: dict[str, np.ndarray]
    image: np.ndarray
    level_windows: dict[str, Window]


@dataclass(frozen=True)
class ScalePanels:
    """Everything the figure shows, as data: one :class:`ClassRow` per class."""

    spec: DatasetSpec
    split: str
    rows: list[ClassRow]
    crop: Window
    panel_px: int


def _centred(h: int, w: int, size: int, zoom: int = 1) -> Window:
    size = min(size, h, w)
    return Window((h - size) // 2, (w - size) // 2, size, zoom)


def windows(spec: DatasetSpec, panel_px: int) -> tuple[dict[str, Window], Window]:
    """The level windows and the 1:1 crop for panels ``panel_px`` display pixels wide.

    The crop is magnified ``zoom = ceil(MIN_SCALE_DISPLAY_PX / finest length scale)`` times
    (at least 1) and spans ``panel_px // zoom`` data pixels.
    """
    h, w = spec.texture.size
    levels = spec.texture.levels
    finest = min(min(lv.length_scales) for lv in levels)
    zoom = max(1, math.ceil(MIN_SCALE_DISPLAY_PX / finest))
    crop = _centred(h, w, max(1, panel_px // zoom), zoom)
    level_windows = {
        lv.name: _centred(h, w, max(crop.size, round(LEVEL_WINDOW * max(lv.length_scales))))
        for lv in levels
    }
    return level_windows, crop


def scale_panels(source: Any, split: str | None = None, *, panel_px: int = 192) -> ScalePanels:
    """The data of the preview: per class its first image of ``split`` and its level fields.

    Args:
        source: an HF folder (its stored images are shown), an HDF5 file, a preset name, a spec
            JSON file or a :class:`DatasetSpec` (images generated).
        split: default ``"train"`` when the dataset has it, else its first split.
        panel_px: width of one panel in display pixels (sets the windows, see :func:`windows`).
    """
    from ..textures import render_components
    from .loading import open_source

    if isinstance(panel_px, bool) or not isinstance(panel_px, int) or panel_px < 16:
        raise ValueError(f"panel_px: expected an int >= 16, got {panel_px!r}")
    with open_source(source) as reader:  # any format, or a spec (images rendered)
        spec = reader.spec
        if split is None:
            split = "train" if "train" in reader.splits else reader.splits[0]
        reader.check_split(split)
        c = spec.num_classes
        if spec.num_samples(split) < c:
            raise ValueError(f"split: {split!r} has {spec.num_samples(split)} images, fewer than"
                             f" the {c} classes")
        if reader.range(split)[0] != 0 or reader.num_samples(split) < c:
            raise ValueError(f"source: {str(reader.path)!r} does not hold the first {c} samples"
                             f" of split {split!r} (a shard?)")
        images = reader.images(split, 0, c)  # only these rows are read
        seeds = reader.seeds(split)[:c]
    level_windows, crop = windows(spec, panel_px)
    rows = []
    for i in range(c):  # sample i of a split has class i % num_classes
        fields = render_components(spec.texture, i, seed=int(seeds[i]))
        rows.append(ClassRow(i, spec.class_names[i], i, int(seeds[i]), fields,
                             np.asarray(images[i], dtype=np.float32), level_windows))
    return ScalePanels(spec, split, rows, crop, panel_px)


def scale_preview(source: Any, out: str | os.PathLike[str], *, split: str | None = None,
                  display_px: int = 800, density: int = 2) -> Path:
    """Save the preview as a PNG ``display_px * density`` pixels wide; returns its path.

    Args:
        source: see :func:`scale_panels`.
        display_px: the width the page shows it at (the Hub: ~800).
        density: image pixels per display pixel (2: sharp on high-density screens).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:  # pragma: no cover - optional extra
        raise ImportError("the preview needs matplotlib: pip install 'gptextures[plot]'") from None
    if isinstance(display_px, bool) or not isinstance(display_px, int) or display_px < 200:
        raise ValueError(f"display_px: expected an int >= 200, got {display_px!r}")
    if isinstance(density, bool) or not isinstance(density, int) or not 1 <= density <= 4:
        raise ValueError(f"density: expected an int in [1, 4], got {density!r}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out: expected a .png file name, got {str(out)!r}")
    depth = _spec_of(source).texture.depth
    ncols = depth + 2
    label_px, title_px, gap_px = 110, 34, 6  # display pixels
    panel = (display_px - label_px - gap_px * ncols) // ncols
    panels = scale_panels(source, split, panel_px=panel)
    spec = panels.spec
    h, w = spec.texture.size
    c = len(panels.rows)
    header_px = 40 + title_px  # the column titles are written over the first row only
    height_px = header_px + c * (panel + gap_px)
    dpi = 100 * density
    fig = plt.figure(figsize=(display_px / 100, height_px / 100), dpi=dpi)
    font = 8.5  # points: 8.5 pt at 100 display px per inch is ~12 display px
    fig.text(0.5, 1 - 12 / height_px,
             f"gptextures {spec.name} v{spec.version}: first {panels.split} image of each class"
             f" ({h}x{w} px)", ha="center", va="top", fontsize=font + 1, weight="bold")
    crop = panels.crop
    for r, row in enumerate(panels.rows):
        top = header_px + r * (panel + gap_px)
        shown: list[tuple[np.ndarray, str, Window | None]] = []
        for lv in spec.texture.levels:
            win = row.level_windows[lv.name]
            scales = "/".join(f"{s:g}" for s in lv.length_scales)
            extent = "whole" if win.size >= min(h, w) else f"{win.size} px"
            shown.append((win.take(row.fields[lv.name]),
                          f"{lv.name} ({scales} px)\nfield, {extent}", None))
        shown.append((row.image, f"image\nwhole, {h} px", crop))
        shown.append((crop.take(row.image), f"image crop\n{crop.size} px, "
                      + ("1:1" if crop.zoom == 1 else f"{crop.zoom}x zoom"), None))
        for j, (a, title, mark) in enumerate(shown):
            left = label_px + j * (panel + gap_px)
            ax = fig.add_axes((left / display_px, 1 - (top + panel) / height_px,
                               panel / display_px, panel / height_px))
            zoomed = j == len(shown) - 1
            ax.imshow(a, cmap="gray", vmin=-3, vmax=3,
                      interpolation="nearest" if zoomed else "antialiased")
            if mark is not None:
                ax.add_patch(Rectangle((mark.x - 0.5, mark.y - 0.5), mark.size, mark.size,
                                       fill=False, edgecolor="#ff3b30", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=font, pad=3, linespacing=1.0)
        fig.text(6 / display_px, 1 - (top + panel / 2) / height_px,
                 f"class {row.class_index}\n" + row.class_name.replace("|", "\n"),
                 ha="left", va="center", fontsize=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return out


def _spec_of(source: Any) -> DatasetSpec:
    from .loading import resolve_spec

    return resolve_spec(source)
