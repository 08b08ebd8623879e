"""What a PDF written by matplotlib says, for tests: its text and whether it embeds raster images."""

from __future__ import annotations

import re
import zlib


def _streams(pdf: bytes) -> list[bytes]:
    out = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            out.append(zlib.decompress(raw))
        except zlib.error:
            out.append(raw)
    return out


def pdf_text(pdf: bytes) -> str:
    """The strings drawn by the PDF's text objects (BT … ET), one text object a line; two-byte
    (Type 42) codes of ASCII letters come out as the letters."""
    lines = []
    for s in _streams(pdf):
        for block in re.findall(rb"BT(.*?)ET", s, re.S):
            parts = re.findall(rb"\(((?:\\.|[^\\)])*)\)", block)
            text = b"".join(parts).replace(b"\\(", b"(").replace(b"\\)", b")").replace(b"\x00", b"")
            lines.append(text.decode("latin-1"))
    return "\n".join(lines)


def has_raster(pdf: bytes) -> bool:
    return re.search(rb"/Subtype\s*/Image", pdf) is not None
