"""Figures 4.1–4.4 of the thesis: accuracy and CLIP-δ against the pruning rate, per method.

One PNG per table a registered pruner declares (``Pruner.tables``: norm, group per priority
like the thesis's two OTO figures, vulnerability), two panels (Acc, CLIP-δ), one line per
attack and layer; the unpruned model (a pruner that prunes nothing) is the rate-0 point of every line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.report import attacked_rows
from shared.pruners import get_pruner, pruner_names, report_tables, table_of


def _table(row: Mapping[str, Any]) -> tuple[Any, str] | None:
    return table_of(row.get("prune_method"), row.get("prune_priority"))


def pruning_plots(rows: Sequence[Mapping[str, Any]], out_dir: str) -> list[str]:
    """Write the plots for the methods present in ``rows``; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    rows = attacked_rows(rows)  # the attacked set, as in the thesis's figures
    controls = {n for n in pruner_names() if not get_pruner(n).prunes}
    base = [r for r in rows if r.get("prune_method") is None or r.get("prune_method") in controls]
    paths = []
    for pruner, variant in report_tables():
        mine = [r for r in rows if _table(r) == (pruner, variant)]
        if not mine:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        lines = sorted({(r["layer"], r["attack"]) for r in mine})
        for layer, attack in lines:
            pts = [(0.0, r) for r in base if (r["layer"], r["attack"]) == (layer, attack)]
            pts += [(float(r["prune_rate"]), r) for r in mine if (r["layer"], r["attack"]) == (layer, attack)]
            pts.sort(key=lambda p: p[0])
            for ax, key in zip(axes, ("acc", "clip_delta")):
                xs = [x for x, r in pts if r.get(key) is not None]
                ys = [r[key] for _, r in pts if r.get(key) is not None]
                ax.plot(xs, ys, marker="o", label=f"{attack} {layer}")
        for ax, title in zip(axes, ("top-1 accuracy after the attack (%)", "CLIP-δ")):
            ax.set_xlabel(pruner.tables[variant].x_label)
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.suptitle(f"{pruner.tables[variant].title}, then attack")
        path = os.path.join(out_dir, f"pruning_{pruner.report_key(variant)}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
