"""The pruning tables (thesis Tables 4.1–4.4 and C–F) and figures from report rows."""

from __future__ import annotations

from orchestrator.report_plots import pruning_plots
from orchestrator.report_pruning import pruning_tables


def _row(method, rate, attack, priority=None, **m):
    row = {"model": "alexnet_mini", "prune_method": method, "prune_rate": rate, "layer": "conv5",
           "attack": attack, "clip_delta": 0.25, "kendall_tau": 0.5, "clip_w": 0.875, "kendall_tau_w": 1.0,
           "topk_overlap": 0.2, "acc": 90.0, "acc_init": 91.0, "delta_acc": -1.0,
           "weight_pruning_rate": None, "filter_pruning_rate": None, "fine_tuned_acc": None}  # fmt: skip
    if priority:
        row["prune_priority"] = priority
    return {**row, **m}


ROWS = [
    _row("none", 0.0, "push-down"),
    _row("norm", 0.5, "push-up", weight_pruning_rate=0.5004, filter_pruning_rate=0.0, fine_tuned_acc=0.9125),
    _row("norm", 0.25, "push-down", weight_pruning_rate=0.25, filter_pruning_rate=0.0, fine_tuned_acc=0.93),
    _row("norm", 0.5, "push-down", weight_pruning_rate=0.5004, filter_pruning_rate=0.0, fine_tuned_acc=0.9125),
    _row("group", 0.25, "push-down", "filter", weight_pruning_rate=0.4, filter_pruning_rate=0.25,
         fine_tuned_acc=0.8),
    _row("group", 0.25, "push-down", "weight", weight_pruning_rate=0.3, filter_pruning_rate=0.01,
         fine_tuned_acc=0.85),
    _row("vulnerability", 4.0, "push-down", weight_pruning_rate=0.002, filter_pruning_rate=0.02,
         fine_tuned_acc=0.88, clip_delta=0.125),
]  # fmt: skip


def test_one_model_table_and_one_attack_table_per_method_in_the_thesis_order():
    text = pruning_tables(ROWS)
    titles = [line for line in text.splitlines() if line.startswith("**")]
    assert [t.split(" analogue")[0].strip("*") for t in titles] == [
        "Table 4.1", "Table D", "Table 4.2", "Table E", "Table 4.3", "Table F", "Table 4.4", "Table C",
    ]  # fmt: skip
    lines = text.splitlines()
    norm = lines.index(titles[0]) + 2
    assert lines[norm] == "| Weight pruning rate | 25% | 50% |"  # one column per rate, ascending
    assert lines[norm + 2] == "| Filter pruning rate | 0.0% | 0.0% |"
    assert lines[norm + 3] == "| Weight pruning rate | 25.0% | 50.0% |"
    assert lines[norm + 4] == "| Fine-tuned accuracy | 93.0% | 91.2% |"
    attacks = lines.index(titles[1]) + 4
    # attacks grouped (push-down first), rates ascending inside each
    assert [line.split(" | ")[0:3] for line in lines[attacks : attacks + 3]] == [
        ["| 25%", "conv5", "push-down"], ["| 50%", "conv5", "push-down"], ["| 50%", "conv5", "push-up"],
    ]  # fmt: skip
    assert lines[attacks].endswith("| 0.250 | 0.500 | 0.875 | 1.000 | 91.0% | 90.0% | -1.00 |")
    vuln = lines.index(titles[6]) + 2
    assert lines[vuln] == "| Filters pruned | 4 |"  # counts, not shares
    assert lines[lines.index(titles[7]) + 4].startswith("| 4 | conv5 | push-down | 0.125 |")


def test_tables_and_figures_use_the_attacked_split(tmp_path):
    train = [{**r, "split": "train"} for r in ROWS]
    val = [{**r, "split": "val", "clip_delta": 9.0, "prune_rate": r["prune_rate"] + 0.01} for r in ROWS]
    assert pruning_tables(train + val) == pruning_tables(train) == pruning_tables(ROWS)
    assert pruning_tables(val) == ""  # the generalization rows alone: nothing from the attacked set
    assert pruning_plots(val, str(tmp_path)) == []


def test_nothing_pruned_means_no_tables_and_no_figures(tmp_path):
    assert pruning_tables([_row("none", 0.0, "push-down")]) == ""
    assert pruning_plots([_row("none", 0.0, "push-down")], str(tmp_path)) == []


def test_one_figure_per_method_with_the_unpruned_point(tmp_path):
    paths = pruning_plots(ROWS, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "pruning_norm.png", "pruning_group-weight.png", "pruning_group-filter.png", "pruning_vulnerability.png",
    ]  # fmt: skip
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_the_main_table_lists_the_unpruned_model_first():
    from orchestrator.report import sort_rows

    rows = sort_rows(ROWS)
    assert [r["prune_method"] for r in rows] == [
        "none",
        "norm",
        "norm",
        "norm",
        "group",
        "group",
        "vulnerability",
    ]
    assert [r["prune_rate"] for r in rows[1:4]] == [0.25, 0.5, 0.5]
