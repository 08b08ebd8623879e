"""Pictures of top-k sets: one row per unit, one column per rank (thesis Fig. 3.1 style)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from shared.figures import close, figure_bytes, pyplot

MARK_COLOR = "#d62728"  # the frame of a marked image (push-up's decoy class)
MAX_CELL_PX = 512  # a cell is 1.3 in: 512 px is ~400 dpi, more than the PNG (200 dpi) or a print shows


@dataclass(frozen=True)
class GridRow:
    """One unit's row: its images (in rank order), their captions and a row title; ``marked[i]``
    frames image i (e.g. an image of push-up's decoy class); a None image is a blank cell."""

    title: str
    images: Sequence[Image.Image | None]
    captions: Sequence[str]
    marked: Sequence[bool] = ()


def grid_figure(
    rows: Sequence[GridRow],
    title: str = "",
    cell_inches: float = 1.3,
    columns: int | None = None,
    note: str = "",
) -> Any:
    """The grid as a matplotlib Figure; ``note`` is printed under it (e.g. how the units were chosen).

    One axes holds every cell (an image each, placed by its extent), with a text per caption, a
    rectangle per frame and a text per row title: a figure of 8 x 5 cells drew, saved as PNG and as
    PDF in ~3 s with an axes per cell (each axes builds its ticks and spines, and ``tight_layout``
    draws the figure once more), against ~1.4 s so. Artists carry ids for readers of the figure:
    ``caption-R-C``, ``frame-R-C`` (marked cells only) and ``row-R``.
    """
    from matplotlib.patches import Rectangle

    plt = pyplot()
    if not rows:
        raise ValueError("a grid needs at least one row")
    ncols = columns or max(len(r.images) for r in rows)
    nrows = len(rows)
    width, height = cell_inches * ncols + 1.2, cell_inches * nrows + 0.9
    fig = plt.figure(figsize=(width, height))
    # margins in inches: row titles on the left, the title on top, captions and the note below
    bottom = 0.25 + (0.25 if note else 0.0)
    top = 0.35 if title else 0.1
    ax = fig.add_axes((1.05 / width, bottom / height, 1 - 1.1 / width, 1 - (bottom + top) / height))
    ax.set_axis_off()
    mosaic, gap = _mosaic(rows, ncols, 0.3)  # 0.3 cell widths between cells: two caption lines
    pitch = 1.0 + gap
    ax.imshow(mosaic, extent=(0, ncols * pitch - gap, nrows * pitch - gap, 0))
    for r, row in enumerate(rows):
        y0 = r * pitch
        for c in range(ncols):
            x0 = c * pitch
            marked = c < len(row.marked) and row.marked[c]
            if c < len(row.images) and row.images[c] is not None:
                caption = row.captions[c] if c < len(row.captions) else ""
                ax.text(x0 + 0.5, y0 + 1.03, caption, fontsize=6, ha="center", va="top",
                        color=MARK_COLOR if marked else "black", gid=f"caption-{r}-{c}")  # fmt: skip
            if marked:
                ax.add_patch(Rectangle((x0, y0), 1, 1, fill=False, edgecolor=MARK_COLOR, linewidth=2.5,
                                       gid=f"frame-{r}-{c}"))  # fmt: skip
        ax.text(-0.08, y0 + 0.5, row.title, fontsize=7, ha="right", va="center", gid=f"row-{r}")
    ax.set_xlim(-0.02, ncols * pitch - gap + 0.02)
    ax.set_ylim(nrows * pitch - gap + 0.02, -0.02)  # row 0 on top
    ax.set_aspect("equal", adjustable="box", anchor="N")
    if title:
        fig.suptitle(title, fontsize=9)
    if note:
        fig.text(0.01, 0.005, note, fontsize=6, ha="left", va="bottom", wrap=True)
    return fig


def _mosaic(rows: Sequence[GridRow], ncols: int, gap: float) -> tuple[np.ndarray, float]:
    """Every cell's image in one RGB array (white between and in blank cells): one image to draw
    and to store in the PDF, not one per cell. Cells are squares of the largest image's side (at
    most MAX_CELL_PX); an image keeps its aspect ratio, centred in its cell. Returns the array and
    the gap in cell widths (``gap`` rounded to whole pixels)."""
    from PIL import ImageOps

    images = [im for row in rows for im in row.images if im is not None]
    side = min(max((max(im.size) for im in images), default=1), MAX_CELL_PX)
    gap_px = round(gap * side)
    step = side + gap_px
    out = np.full((len(rows) * step - gap_px, ncols * step - gap_px, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row.images[:ncols]):
            if im is not None:
                im = im.convert("RGB")
                if max(im.size) != side:
                    im = ImageOps.contain(im, (side, side), Image.Resampling.BICUBIC)
                w, h = im.size
                y, x = r * step + (side - h) // 2, c * step + (side - w) // 2
                out[y : y + h, x : x + w] = np.asarray(im)
    return out, gap_px / side


def grid_cells(fig: Any) -> dict[str, Any]:
    """The artists of a :func:`grid_figure` by id (``caption-R-C``, ``frame-R-C``, ``row-R``)."""
    ax = fig.axes[0]
    return {a.get_gid(): a for a in (*ax.texts, *ax.patches) if a.get_gid()}


def render_grid(
    rows: Sequence[GridRow],
    title: str = "",
    cell_inches: float = 1.3,
    columns: int | None = None,
    note: str = "",
    fmt: str = "png",
) -> bytes:
    """PNG (or PDF) bytes of a grid; rows may have different lengths (missing cells stay blank)."""
    fig = grid_figure(rows, title, cell_inches, columns, note)
    try:
        return figure_bytes(fig, fmt)
    finally:
        close(fig)


def decode_png_size(png: bytes) -> tuple[int, int]:
    import io

    return Image.open(io.BytesIO(png)).size
