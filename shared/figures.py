"""Saving matplotlib figures for a paper: PNG for screens, PDF (vector text and lines) for print.

PDF text uses TrueType (Type 42) fonts, so titles and labels stay text a reader can search and
copy; the PDF has no creation date, so the same figure gives the same bytes.
"""

from __future__ import annotations

import io
from typing import Any

FORMATS = ("png", "pdf")
PNG_DPI = 200  # a printed column is ~3.5 in: 200 dpi keeps thumbnails sharp


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on workers), imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig: Any, fmt: str) -> bytes:
    """The figure as ``png`` or ``pdf`` bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"figure format {fmt!r} is not one of {FORMATS}")
    buf = io.BytesIO()
    with pyplot().rc_context({"pdf.fonttype": 42}):
        if fmt == "png":
            fig.savefig(buf, format="png", dpi=PNG_DPI)
        else:
            fig.savefig(buf, format="pdf", metadata={"CreationDate": None})
    return buf.getvalue()


def close(fig: Any) -> None:
    pyplot().close(fig)
