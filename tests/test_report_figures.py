"""The report's three formats agree, and the sweep-level figures, from a sweep store written
cheaply (tests/sweep_store.py: MLflow runs, no Ray, no training)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from orchestrator.report import COLUMNS, render, report_rows
from orchestrator.sweep_figure import REPORT_DIR, standard_figures, sweep_figures, write_sweep_figures
from orchestrator.tracking import client, find_parent_run
from tests.pdf_text import has_raster, pdf_text
from tests.sweep_store import SWEEP, write_sweep


def _final(cd: float, tau: float, acc: float, da: float, alpha: float, steps: int) -> dict[str, float]:
    out = {"acc": acc, "delta_acc": da, "alpha_final": alpha, "steps": float(steps)}
    for split, shift in (("train", 0.0), ("val", -0.125)):
        out |= {f"{split}.clip_delta": cd + shift, f"{split}.kendall_tau": tau, f"{split}.clip_w": 0.5,
                f"{split}.kendall_tau_w": 0.75, f"{split}.topk_overlap": 0.25, f"{split}.units_killed": 1.0}  # fmt: skip
    return out


def _runs():
    """push-down and push-up on conv5 with two seeds each; push-up on conv4 with one seed."""
    runs = []
    for layer, attack, seed, cd in (("conv5", "push-down", 0, 0.5), ("conv5", "push-down", 1, 0.75),
                                    ("conv5", "push-up", 0, 1.0), ("conv5", "push-up", 1, 1.5),
                                    ("conv4", "push-up", 0, 0.25)):  # fmt: skip
        params = {"family": "topk", "model": "alexnet_mini", "prune_method": "none", "prune_rate": "0.0",
                  "layer": layer, "attack": attack, "seed": str(seed)}  # fmt: skip
        runs.append(
            (f"{attack}-{layer}-s{seed}", params, _final(cd, 0.5 - seed / 8, 81.25, -1.5 - seed, 0.125, 40))
        )
    return runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs")
    status = write_sweep(root, _runs())
    return root, status["tracking_uri"], report_rows(status["tracking_uri"], SWEEP)


# Markdown header -> the row key it shows
MD_KEYS = {"Model": "model", "Layer": "layer", "Attack": "attack", "Seed": "seed", "Split": "split",
           "CLIP-δ": "clip_delta", "Kendall-τ": "kendall_tau", "CLIP-W": "clip_w", "Kτ-W": "kendall_tau_w",
           "top-k overlap": "topk_overlap", "Acc %": "acc", "ΔAcc pp": "delta_acc", "Dead": "units_dead_init",
           "Killed": "units_killed", "α end": "alpha_final", "Steps": "steps", "MLflow run": "run_id"}  # fmt: skip


def _same(md: str, value) -> bool:
    """A Markdown cell shows ``value`` (None: "—"; numbers to the cell's precision)."""
    if value is None or value == "":
        return md == "—"
    if isinstance(value, float):
        return (
            abs(float(md) - value) <= 0.5 * 10 ** -len(md.split(".")[1]) if "." in md else float(md) == value
        )
    return md == str(value)


def test_md_csv_and_json_agree_on_every_row(sweep):
    _, _, rows = sweep
    assert [(r["split"], r["attack"], r["layer"], r["seed"]) for r in rows][:3] == [
        ("train", "push-up", "conv4", 0), ("train", "push-down", "conv5", 0), ("train", "push-down", "conv5", 1),
    ]  # fmt: skip
    assert len(rows) == 10 and len({r["run_id"] for r in rows}) == 5  # 5 runs x 2 splits
    md = [line.strip("|").split(" | ") for line in render(rows, "md").splitlines()]
    header = [h.strip() for h in md[0]]
    assert {"Seed", "Acc %", "ΔAcc pp", "α end", "Steps", "MLflow run"} <= set(header)
    body = [[c.strip() for c in line] for line in md[2:]]
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    doc = json.loads(render(rows, "json", sweep=SWEEP))
    assert doc["units"]["acc"] == "%" and doc["units"]["delta_acc"] == "percentage points"
    assert len(body) == len(parsed) == len(doc["rows"]) == len(rows)
    for row, cells, c, j in zip(rows, body, parsed, doc["rows"]):
        assert list(c) == list(j) == list(COLUMNS)
        for key in COLUMNS:  # csv and json: the same values (csv as text, missing = empty)
            v = j[key]
            assert c[key] == ("" if v is None else str(v)), (key, c[key], v)
            assert v == row[key]
        for head, cell in zip(header, cells):  # md: the same values at its precision
            if head in MD_KEYS:
                assert _same(cell, j[MD_KEYS[head]]), (head, cell, j[MD_KEYS[head]])
        assert j["alpha_final"] == 0.125 and j["steps"] == 40 and j["seed"] in (0, 1)


def _bars(ax) -> list:
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _errorbars(ax) -> list:
    return [c for c in _bars(ax) if c.errorbar is not None]


def test_the_sweep_figure_shows_the_table_metrics_with_seeds_as_error_bars(sweep):
    _, _, rows = sweep
    figs = standard_figures(rows, SWEEP)
    assert list(figs) == ["sweep_metrics_train", "sweep_metrics_val"]
    fig = figs["sweep_metrics_train"]
    assert "2 seeds" in fig._suptitle.get_text() and "attacked set" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in fig.axes[:5]] == ["CLIP-δ", "Kendall-τ", "CLIP-W", "Kτ-W", "ΔAcc (pp)"]
    cd = fig.axes[0]
    assert [t.get_text() for t in cd.get_xticklabels()] == ["push-down", "push-up"]
    assert [c.get_label() for c in _bars(cd)] == ["alexnet_mini, conv4", "alexnet_mini, conv5"]
    (bars,) = _errorbars(cd)  # conv5 has two seeds per attack; conv4 one: no error bar there
    assert bars.get_label() == "alexnet_mini, conv5"
    heights = [p.get_height() for p in bars.patches]
    assert heights == [0.625, 1.25]  # the mean over seeds
    segments = bars.errorbar.lines[2][0].get_segments()
    assert [round(s[1][1] - s[0][1], 6) for s in segments] == [
        round(2 * 0.17677669529, 6),
        round(2 * 0.35355339059, 6),
    ]
    one_seed = standard_figures([r for r in rows if r["seed"] == 0], SWEEP)["sweep_metrics_train"]
    assert not any(_errorbars(ax) for ax in one_seed.axes) and "one seed" in one_seed._suptitle.get_text()


def test_fsr_families_get_their_own_figure():
    rows = [{"table": "saliency", "family": "saliency", "model": "m", "prune_method": "none", "prune_rate": 0.0,
             "attack": a, "interpreter": "grad", "fsr": {"grad": f, "ig": f / 2}, "delta_acc": -1.0, "seed": s}
            for a, f, s in (("location", 0.8, 0), ("location", 0.6, 1), ("top-k", 0.5, 0))]  # fmt: skip
    figs = sweep_figures(rows, SWEEP)
    assert list(figs) == ["sweep_fsr_saliency"]
    fsr = figs["sweep_fsr_saliency"].axes[0]
    assert [c.get_label() for c in _bars(fsr)] == ["grad", "ig"]
    assert [p.get_height() for p in _bars(fsr)[0].patches] == pytest.approx([70.0, 50.0])  # %, mean of seeds
    assert _bars(fsr)[0].errorbar is not None


def test_figures_are_written_as_png_and_vector_pdf_and_logged_to_the_parent_run(sweep):
    root, uri, rows = sweep
    paths = write_sweep_figures(str(root), SWEEP, uri, rows)
    folder = root / "sweeps" / SWEEP / REPORT_DIR
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(
        f"sweep_metrics_{s}.{f}" for s in ("train", "val") for f in ("png", "pdf")
    )
    assert (folder / "sweep_metrics_train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = (folder / "sweep_metrics_train.pdf").read_bytes()
    text = pdf_text(pdf)
    assert pdf.startswith(b"%PDF") and not has_raster(pdf)  # bars, lines and text only
    assert "push-down" in text and "push-up" in text and "conv5" in text and SWEEP in text
    parent = find_parent_run(uri, SWEEP)
    logged = {a.path for a in client(uri).list_artifacts(parent.info.run_id, REPORT_DIR)}
    assert logged == {f"{REPORT_DIR}/sweep_metrics_{s}.{f}" for s in ("train", "val") for f in ("png", "pdf")}


def test_figures_of_unchanged_rows_are_kept_and_changed_rows_redraw_them(sweep, tmp_path):
    """A relaunch that trained nothing keeps the stored figures (no drawing, nothing logged again)."""
    root, uri, rows = sweep
    store = tmp_path / "store"
    first = write_sweep_figures(str(store), SWEEP, uri, rows)
    png = store / "sweeps" / SWEEP / REPORT_DIR / "sweep_metrics_train.png"
    png.write_bytes(b"stale")  # a redraw would overwrite it
    assert write_sweep_figures(str(store), SWEEP, uri, rows) == first and png.read_bytes() == b"stale"
    changed = [{**r, "clip_delta": 0.5} if i == 0 else r for i, r in enumerate(rows)]
    assert write_sweep_figures(str(store), SWEEP, uri, changed) == first
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
