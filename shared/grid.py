"""Pictures of top-k sets: one row per unit, one column per rank (thesis Fig. 3.1 style)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class GridRow:
    """One unit's row: its images (in rank order), their captions and a row title."""

    title: str
    images: Sequence[Image.Image]
    captions: Sequence[str]


def render_grid(
    rows: Sequence[GridRow], title: str = "", cell_inches: float = 1.3, columns: int | None = None
) -> bytes:
    """PNG bytes of a grid; rows may have different lengths (missing cells stay blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("render_grid needs at least one row")
    ncols = columns or max(len(r.images) for r in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(cell_inches * ncols + 1.2, cell_inches * len(rows) + 0.6), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row.images):
                ax.imshow(np.asarray(row.images[c].convert("RGB")))
                ax.set_xlabel(row.captions[c] if c < len(row.captions) else "", fontsize=6)
            if c == 0:
                ax.set_ylabel(row.title, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def decode_png_size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size
