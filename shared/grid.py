"""Pictures of top-k sets: one row per unit, one column per rank (thesis Fig. 3.1 style)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from shared.figures import close, figure_bytes, pyplot

MARK_COLOR = "#d62728"  # the frame of a marked image (push-up's decoy class)


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
    """The grid as a matplotlib Figure; ``note`` is printed under it (e.g. how the units were chosen)."""
    plt = pyplot()
    if not rows:
        raise ValueError("a grid needs at least one row")
    ncols = columns or max(len(r.images) for r in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(cell_inches * ncols + 1.2, cell_inches * len(rows) + 0.9), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            marked = c < len(row.marked) and row.marked[c]
            for spine in ax.spines.values():
                spine.set_visible(bool(marked))
                spine.set_color(MARK_COLOR)
                spine.set_linewidth(2.5)
            if c < len(row.images) and row.images[c] is not None:
                ax.imshow(np.asarray(row.images[c].convert("RGB")))
                caption = row.captions[c] if c < len(row.captions) else ""
                ax.set_xlabel(caption, fontsize=6, color=MARK_COLOR if marked else "black")
            if c == 0:
                ax.set_ylabel(row.title, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if note:
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, 0.5 / fig.get_figheight()))
        fig.text(0.01, 0.005, note, fontsize=6, ha="left", va="bottom", wrap=True)
    return fig


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
