"""Before/after top-k pictures of the metrics stage (thesis Fig. 3.1).

Per unit, a row of its top-n images under θ0 and a row under θ, titled with the unit's
CLIP-δ and Kendall-τ, captioned with class names. Which units: :func:`pick_units`, the
attacked units with the highest CLIP-δ (the largest semantic changes, what Fig. 3.1 shows).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from shared import store


def dataset_classes(dataset: str) -> list[str] | None:
    """Class names from ``classes.json`` at the dataset root (else the dataset manifest); None if neither."""
    uri = store.join(dataset, "classes.json")
    if store.exists(uri):
        return [str(c) for c in store.read_json(uri)]
    names = (store.read_manifest(dataset) or {}).get("classes")
    return [str(c) for c in names] if names else None


def pick_units(table: pa.Table, n: int) -> list[int]:
    """The ``n`` units of a unit_metrics table with the highest CLIP-δ (NaN last, ties: lower unit first)."""
    units = table.column("unit").to_numpy()
    cd = table.column("clip_delta").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((units, -np.where(np.isnan(cd), -np.inf, cd)))
    return [int(units[i]) for i in order[:n]]


def render_before_after(
    dataset: str,
    split: str,
    topk_init: pa.Table,
    topk_final: pa.Table,
    metrics: pa.Table,
    units: Sequence[int],
    out_uri: str,
    classes: list[str] | None = None,
    n: int = 5,
    title: str = "",
) -> str:
    """Thesis Fig. 3.1: per unit a row of its top-``n`` images under θ0, one under θ; returns ``out_uri``.

    The "before" row is titled with the unit's CLIP-δ and Kendall-τ; captions are class names
    (labels when ``classes`` is None). Images are fetched by id, never by a scan.
    """
    from PIL import Image

    from shared.grid import GridRow, render_grid
    from shared.image_index import fetch_images
    from shared.topk import topk_sets

    if not units:
        raise ValueError("render_before_after needs at least one unit")
    row_of = {u: r for r, u in enumerate(metrics.column("unit").to_pylist())}
    missing = [u for u in units if u not in row_of]
    if missing:
        raise ValueError(
            f"units {missing} are not in the metrics table (its units: {sorted(row_of)[:10]} ...)"
        )
    before, after = topk_sets(topk_init), topk_sets(topk_final)
    labels = {
        **dict(zip(topk_init.column("image_id").to_pylist(), topk_init.column("label").to_pylist())),
        **dict(zip(topk_final.column("image_id").to_pylist(), topk_final.column("label").to_pylist())),
    }
    wanted = [i for u in units for i in (*before[u][:n], *after[u][:n])]
    images = fetch_images(dataset, split, wanted)
    cd, kt = metrics.column("clip_delta").to_pylist(), metrics.column("kendall_tau").to_pylist()

    def row(name: str, ids: list[str]) -> GridRow:
        caps = [
            classes[labels[i]] if classes and 0 <= labels[i] < len(classes) else str(labels[i]) for i in ids
        ]
        return GridRow(name, [Image.open(io.BytesIO(images[i])) for i in ids], caps)

    rows = []
    for u in units:
        r = row_of[u]
        rows.append(row(f"unit {u}\nCLIP-δ {cd[r]:.3f}\nKendall-τ {kt[r]:.3f}\nbefore", before[u][:n]))
        rows.append(row("after", after[u][:n]))
    store.write_bytes(out_uri, render_grid(rows, title=title, columns=n))
    return out_uri
