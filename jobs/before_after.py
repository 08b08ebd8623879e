"""Before/after top-k pictures of the metrics stage (thesis Fig. 3.1), as PNG and vector PDF.

Per unit, a row of its top-n images under θ0 and a row under θ, titled with the unit's
CLIP-δ and Kendall-τ, captioned with the class name and the unit's activation (its score
``a_j(x) = ‖f_j(x)‖²``, SCIENCE.md §1). Images of push-up's decoy class are framed in red.
Which units: :func:`pick_units`, the attacked units with the highest CLIP-δ (the largest
semantic changes, what Fig. 3.1 shows); the picture says so under it. :func:`redraw` draws
the picture of a committed metrics folder again for units a researcher picks.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shared import integrity, store

if TYPE_CHECKING:
    from shared.grid import GridRow

HIGHEST_CLIP_DELTA = "the {n} attacked unit(s) alive before and after with the highest CLIP-δ"


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


def pdf_uri(png_uri: str) -> str:
    """The PDF written beside a picture's PNG."""
    return (png_uri[: -len(".png")] if png_uri.endswith(".png") else png_uri) + ".pdf"


def picture_title(attack: str, model: str, layer: str, split: str, n: int) -> str:
    return f"{attack} on {model}, layer {layer} ({split} split): top-{n} images before / after the attack"


def selection_note(units: Sequence[int], rule: str | None, decoy_class: int | None, decoy_name: str) -> str:
    """The line under the picture: how the units were chosen, what the numbers and the red frames mean."""
    chosen = rule or f"units {', '.join(map(str, units))}, chosen by hand"
    parts = [f"Units shown: {chosen}.", "Under each image: its class and the unit's activation ‖f_j(x)‖²."]
    if decoy_class is not None:
        parts.append(f"Red frame: an image of the decoy class {decoy_name} (push-up's target).")
    return " ".join(parts)


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
    note: str = "",
    decoy_class: int | None = None,
) -> str:
    """Thesis Fig. 3.1 (:func:`before_after_figure`) written to ``out_uri`` (PNG) and :func:`pdf_uri`
    (PDF); returns ``out_uri``."""
    fig = before_after_figure(
        dataset, split, topk_init, topk_final, metrics, units, classes, n, title, note, decoy_class
    )
    write_picture(fig, out_uri)
    return out_uri


def write_picture(fig, out_uri: str) -> list[str]:
    """``fig`` as PNG at ``out_uri`` and as PDF at :func:`pdf_uri` (closed after); returns both URIs."""
    from shared.figures import close, figure_bytes

    try:
        store.write_bytes(out_uri, figure_bytes(fig, "png"))
        store.write_bytes(pdf_uri(out_uri), figure_bytes(fig, "pdf"))
    finally:
        close(fig)
    return [out_uri, pdf_uri(out_uri)]


def before_after_figure(
    dataset: str,
    split: str,
    topk_init: pa.Table,
    topk_final: pa.Table,
    metrics: pa.Table,
    units: Sequence[int],
    classes: list[str] | None = None,
    n: int = 5,
    title: str = "",
    note: str = "",
    decoy_class: int | None = None,
):
    """Thesis Fig. 3.1 as a matplotlib Figure: per unit a row of its top-``n`` images under θ0, one
    under θ; decoy-class images framed. Images are fetched by id, never by a scan."""
    from shared.grid import grid_figure

    rows = before_after_rows(dataset, split, topk_init, topk_final, metrics, units, classes, n, decoy_class)
    return grid_figure(rows, title=title, columns=n, note=note)


def before_after_rows(
    dataset: str,
    split: str,
    topk_init: pa.Table,
    topk_final: pa.Table,
    metrics: pa.Table,
    units: Sequence[int],
    classes: list[str] | None = None,
    n: int = 5,
    decoy_class: int | None = None,
) -> list[GridRow]:
    """The grid rows of :func:`before_after_figure` (``GridRow``s, "before" then "after" per unit), for
    pictures that add columns of their own (the feature-visualisation stage's synthetic images)."""
    from PIL import Image

    from shared.grid import GridRow
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
    labels, scores = {}, {}
    for state, t in (("init", topk_init), ("final", topk_final)):
        cols = [t.column(c).to_pylist() for c in ("unit", "image_id", "label", "score")]
        for u, i, label, s in zip(*cols):
            labels[i] = label
            scores[(state, u, i)] = s
    wanted = list(dict.fromkeys(i for u in units for i in (*before[u][:n], *after[u][:n])))
    images = fetch_images(dataset, split, wanted)
    cd, kt = metrics.column("clip_delta").to_pylist(), metrics.column("kendall_tau").to_pylist()

    def name(label: int) -> str:
        return classes[label] if classes and 0 <= label < len(classes) else str(label)

    def row(head: str, state: str, u: int, ids: list[str]) -> GridRow:
        caps = [f"{name(labels[i])}\n{scores[(state, u, i)]:.3g}" for i in ids]
        marked = [decoy_class is not None and labels[i] == decoy_class for i in ids]
        return GridRow(head, [Image.open(io.BytesIO(images[i])) for i in ids], caps, marked)

    rows = []
    for u in units:
        r = row_of[u]
        rows.append(
            row(f"unit {u}\nCLIP-δ {cd[r]:.3f}\nKendall-τ {kt[r]:.3f}\nbefore", "init", u, before[u][:n])
        )
        rows.append(row("after", "final", u, after[u][:n]))
    return rows


PICTURE = "before_after.png"  # in a committed metrics folder; its PDF beside it (pdf_uri)
DRAWN = "before_after.json"  # written after both: the metrics key and the units they show


def draw_committed(metrics_dir: str) -> str | None:
    """The picture of a committed metrics folder for the units its manifest chose; returns the PNG's
    URI, None when it chose none.

    Drawn once per metrics key: a folder whose PNG and PDF were drawn for its current key (``DRAWN``)
    is returned as it is. This is the metrics stage's last step, run apart from the stage so that a
    trial hands its GPU back before the CPU draws (orchestrator.pictures); nothing is computed again.
    """
    m = _committed(metrics_dir)
    units = [int(u) for u in m["picture_units"]]
    if not units:
        return None
    out = store.join(metrics_dir, PICTURE)
    done = store.join(metrics_dir, DRAWN)
    if store.exists(done) and store.read_json(done) == {"key": m["key"], "units": units}:
        if store.exists(out) and store.exists(pdf_uri(out)):
            return out
    chosen_by_hand = isinstance(m["spec"].get("picture_units"), list)
    _draw(
        metrics_dir, m, units, None if chosen_by_hand else HIGHEST_CLIP_DELTA.format(n=len(units)), out, None
    )
    store.write_json(done, {"key": m["key"], "units": units})
    return out


def redraw(metrics_dir: str, units: Sequence[int], out_uri: str, attack: str | None = None) -> str:
    """The picture of a committed metrics folder for ``units`` picked by hand, at ``out_uri`` (+ PDF).

    Reads the folder's manifest, unit table and the committed top-k tables; nothing is computed again.
    """
    return _draw(metrics_dir, _committed(metrics_dir), list(units), None, out_uri, attack)


def _committed(metrics_dir: str) -> dict:
    m = store.read_manifest(metrics_dir)
    if m is None or m.get("kind") != "metrics":
        raise FileNotFoundError(
            f"{metrics_dir} is not a committed metrics folder (no metrics _MANIFEST.json)"
        )
    return m


def _draw(
    metrics_dir: str, m: dict, units: list[int], rule: str | None, out_uri: str, attack: str | None
) -> str:
    from jobs.topk import read_topk, topk_uri

    spec, layer, split = m["spec"], m["layer"], m["split"]
    table = integrity.read_parquet(metrics_dir, "unit_metrics.parquet", m)
    topks = [read_topk(topk_uri(m["tables"][st], spec["k"])) for st in ("init", "final")]
    n = int(spec["picture_k"])
    classes = dataset_classes(spec["dataset"])
    decoy = spec.get("decoy_class")
    label = attack or spec.get("label") or spec["final_state_key"]
    decoy_name = classes[decoy] if classes and decoy is not None and decoy < len(classes) else str(decoy)
    note = selection_note(units, rule, decoy, decoy_name)
    title = picture_title(label, spec["model"], layer, split, n)
    return render_before_after(spec["dataset"], split, *topks, table, units, out_uri, classes, n, title,
                               note, decoy)  # fmt: skip
