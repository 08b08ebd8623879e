"""The thesis's pruning tables from a sweep's report rows.

Two kinds, one of each per table a registered pruner declares (``Pruner.tables``; group
pruning: one per priority, like the thesis's two OTO tables), in the pruners' display order:

- *pruned models* (Tables 4.1–4.4): one column per rate, rows filter pruning rate, weight
  pruning rate and fine-tuned accuracy — what pruning cost before any attack;
- *attack results* (Tables C–F): one row per (attack, rate): CLIP-δ, Kendall-τ, CLIP-W,
  Kτ-W, accuracy before and after the attack, ΔAcc.

The numbers come from the trial runs' params (``weight_pruning_rate``, ``filter_pruning_rate``,
``fine_tuned_acc``, recorded with the variant) and final metrics, so the tables show what
MLflow shows. Like the thesis's tables they use the attacked set's rows (split ``train``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.report import attacked_rows
from shared.attacks import attack_order
from shared.pruners import Pruner, report_tables, table_of

Group = tuple[type[Pruner], str]  # a pruner and one of its table variants ("" when it has one)


def _group(row: Mapping[str, Any]) -> Group | None:
    return table_of(row.get("prune_method"), row.get("prune_priority"))


def _pct(v: Any, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.2f}" if signed else f"{v:.1f}%"


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _rate_label(pruner: type[Pruner], rate: float | None) -> str:
    return "—" if rate is None else pruner.format_rate(rate)


def _groups(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Group, str, list[Mapping[str, Any]]]]:
    """(group, model, rows) for every pruned table present, in the pruners' display order."""
    out = []
    for g in report_tables():
        mine = [r for r in rows if _group(r) == g]
        for model in sorted({str(r.get("model")) for r in mine}):
            out.append((g, model, [r for r in mine if str(r.get("model")) == model]))
    return out


def variant_table(group: Group, model: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Tables 4.1–4.4: what pruning cost, one column per rate."""
    pruner, variant = group
    t = pruner.tables[variant]
    by_rate: dict[float, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("prune_rate") is not None:
            by_rate.setdefault(float(r["prune_rate"]), r)
    rates = sorted(by_rate)
    head = [t.rate_name, *(_rate_label(pruner, x) for x in rates)]

    def line(name: str, key: str, scale: float) -> str:
        cells = [_pct(None if by_rate[x].get(key) is None else scale * by_rate[x][key]) for x in rates]
        return "| " + " | ".join([name, *cells]) + " |"

    return "\n".join([
        f"**{t.number} analogue — {model}, {t.caption}: pruned and fine-tuned models**", "",
        "| " + " | ".join(head) + " |", "|---|" + "---:|" * len(rates),
        line("Filter pruning rate", "filter_pruning_rate", 100.0),
        line("Weight pruning rate", "weight_pruning_rate", 100.0),
        line("Fine-tuned accuracy", "fine_tuned_acc", 100.0),
    ]) + "\n"  # fmt: skip


def attack_table(group: Group, model: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Tables C–F: the attack metrics on each pruned model, attacks grouped, rates ascending."""
    pruner, variant = group
    t = pruner.tables[variant]
    ordered = sorted(rows, key=lambda r: (attack_order(str(r.get("attack"))), str(r.get("attack")),
                                          str(r.get("layer")), r.get("prune_rate") or 0.0))  # fmt: skip
    head = [t.rate_name, "Layer", "Attack", "CLIP-δ", "Kendall-τ", "CLIP-W", "Kτ-W", "Init Acc", "Final Acc",
            "ΔAcc pp"]  # fmt: skip
    lines = [
        f"**{t.attack_number} analogue — {model}, {t.caption}: attack results**", "",
        "| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * 7,
    ]  # fmt: skip
    for r in ordered:
        cells = [
            _rate_label(pruner, r.get("prune_rate")), str(r.get("layer") or "—"), str(r.get("attack") or "—"),
            _num(r.get("clip_delta")), _num(r.get("kendall_tau")), _num(r.get("clip_w")),
            _num(r.get("kendall_tau_w")), _pct(r.get("acc_init")), _pct(r.get("acc")),
            _pct(r.get("delta_acc"), signed=True),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pruning_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """All pruning tables for the methods present in ``rows`` (empty when nothing was pruned)."""
    parts = []
    for group, model, mine in _groups(attacked_rows(rows)):
        parts += [variant_table(group, model, mine), attack_table(group, model, mine)]
    return "\n".join(parts)
