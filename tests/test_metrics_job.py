"""The metrics stage: θ = θ0 gives the identity metrics, an attack-like change moves top-k sets,
the Parquet has the §3 columns, reruns are skipped, before/after pictures have one row pair per unit."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jobs.before_after import DRAWN, pick_units, render_before_after
from jobs.metrics import (
    PICTURE,
    PICTURE_PDF,
    TABLE,
    MetricsSpec,
    draw_pictures,
    read_unit_metrics,
    run_metrics,
    tau_subset,
)
from jobs.topk import read_topk, topk_uri
from shared import store
from shared.models.zoo import build_model, save_checkpoint
from shared.synth import generate
from shared.topk import StreamingTopK

COLUMNS = ["unit", "kendall_tau", "kendall_tau_w", "clip_delta", "clip_w", "topk_overlap"]
LAYERS = ("conv4", "conv5")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data (64 train, 64 val images), θ0, an identical copy, a perturbed θ, a reference e(x)."""
    root = tmp_path_factory.mktemp("metrics")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=4, val_per_class=4, size=48, seed=5, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    init = save_checkpoint(model, "alexnet_mini", str(root / "init.pt"))
    same = save_checkpoint(model, "alexnet_mini", str(root / "same.pt"))  # θ = θ0, another file
    with torch.no_grad():  # θ with conv5 units 5 and 9 killed: their filters zeroed (ReLU output 0)
        w, b = model.features[10].weight.clone(), model.features[10].bias.clone()
        model.features[10].weight[[5, 9]] = 0.0
        model.features[10].bias[[5, 9]] = 0.0
        killed = save_checkpoint(model, "alexnet_mini", str(root / "killed.pt"))
        model.features[10].weight.copy_(w)
        model.features[10].bias.copy_(b)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("features") and name.endswith("weight"):
                p.add_(0.5 * p.std() * torch.randn(p.shape, generator=gen))
    perturbed = save_checkpoint(model, "alexnet_mini", str(root / "perturbed.pt"))
    torch.manual_seed(2)
    ref, _ = build_model("resnet_mini")
    ref_uri = save_checkpoint(ref, "resnet_mini", str(root / "ref.pt"))
    return {
        "data": data, "init": init, "same": same, "perturbed": perturbed, "killed": killed,
        "embedder": f"reference:{ref_uri}", "store": str(root / "store"),
    }  # fmt: skip


def _spec(setup, final: str, state: str, **kw) -> MetricsSpec:
    base = dict(
        dataset=setup["data"], model="alexnet_mini", variant_key="v0", init_weights=setup["init"],
        final_weights=setup[final], final_state_key=state, layers=LAYERS, embedder=setup["embedder"],
        batch_size=32, device="cpu", num_actors=1,
    )  # fmt: skip
    return MetricsSpec(**{**base, **kw})


# --- no Ray ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ({"layers": ("conv9",)}, "unknown layer 'conv9'"),
        ({"layers": ()}, "MetricsSpec.layers"),
        ({"splits": "val"}, "MetricsSpec.splits"),
        ({"units": ()}, "MetricsSpec.units"),
        ({"units": (1, -2)}, "MetricsSpec.units"),
        ({"k": 0}, "MetricsSpec.k"),
        ({"tau_images": 0}, "MetricsSpec.tau_images"),
        ({"picture_units": -1}, "MetricsSpec.picture_units"),
        ({"picture_units": ()}, "MetricsSpec.picture_units"),
        ({"picture_units": (1, -3)}, "MetricsSpec.picture_units"),
        ({"final_state_key": "init"}, "final_state_key"),
        ({"embedder": "no_such_embedder:x"}, "no_such_embedder"),
        ({"decoy_class": -1}, "MetricsSpec.decoy_class"),
        ({"decoy_class": 1, "k": 4}, "k >= 5"),
    ],
)
def test_spec_rejects_bad_fields(override, message):
    base = dict(
        dataset="/nowhere", model="alexnet_mini", variant_key="v", init_weights="a.pt", final_weights="b.pt",
        final_state_key="s", embedder="reference:/nowhere/ref.pt",
    )  # fmt: skip
    with pytest.raises((ValueError, KeyError), match=message):
        MetricsSpec(**{**base, **override})


def test_spec_defaults_and_units_normalised():
    s = MetricsSpec(
        dataset="/d", model="alexnet_mini", variant_key="v", init_weights="a.pt", final_weights="b.pt",
        final_state_key="s", units=[5, 1, 5], layers=["conv5"],
    )  # fmt: skip
    assert s.units == (1, 5) and s.layers == ("conv5",) and s.k == 10 and s.tau_images == 10_000
    assert s.splits == ("train", "val") and s.embedder == "open_clip:ViT-B-32:openai"
    assert s.decoy_class is None and s.identity()["decoy_class"] is None  # keyed: it changes decoy_top5
    assert "device" not in s.identity() and "layers" not in s.identity()
    assert s.activations("final", "val").state_key == "s" and s.activations("init", "val").weights == "a.pt"


def test_tau_subset_is_seeded_and_by_id(setup):
    every = tau_subset(setup["data"], "val", 10_000, 0)
    assert len(every) == 64 and list(every) == sorted(every)  # all of val when |V| < |D_τ|
    a, b = tau_subset(setup["data"], "val", 20, 0), tau_subset(setup["data"], "val", 20, 0)
    assert list(a) == list(b) and len(set(a)) == 20 and set(a) <= set(every) and list(a) == sorted(a)
    assert list(tau_subset(setup["data"], "val", 20, 1)) != list(a)


def test_pick_units_by_clip_delta():
    t = pa.table({"unit": [3, 4, 7, 9], "clip_delta": [0.1, float("nan"), 0.5, 0.1]})
    assert pick_units(t, 4) == [7, 3, 9, 4] and pick_units(t, 2) == [7, 3] and pick_units(t, 0) == []


def _topk(data: str, seed: int, units: int = 6, k: int = 5) -> pa.Table:
    """A top-k table over the real val ids, from random scores (no Ray)."""
    from shared.datasets import iter_records

    recs = list(iter_records(data, "val"))
    rng = np.random.default_rng(seed)
    acc = StreamingTopK(units, k)
    acc.update(
        rng.random((len(recs), units)).astype(np.float32),
        np.array([r["image_id"] for r in recs]),
        np.array([r["label"] for r in recs]),
    )
    return acc.table()


def test_before_after_has_two_rows_per_unit(setup, tmp_path):
    before, after = _topk(setup["data"], 0), _topk(setup["data"], 1)
    metrics = pa.table({"unit": list(range(6)), "clip_delta": [0.1] * 6, "kendall_tau": [0.5] * 6})
    sizes = {}
    for n in (1, 2, 4):
        out = render_before_after(
            setup["data"], "val", before, after, metrics, list(range(n)), str(tmp_path / f"{n}.png"),
            classes=[f"class {i}" for i in range(16)], title="test",
        )  # fmt: skip
        sizes[n] = Image.open(io.BytesIO(store.read_bytes(out))).size
    assert sizes[1][0] == sizes[2][0] == sizes[4][0]  # five columns whatever the units
    step = sizes[2][1] - sizes[1][1]
    assert step > 0 and sizes[4][1] - sizes[2][1] == 2 * step  # height grows by one row pair per unit
    with pytest.raises(ValueError, match="not in the metrics table"):
        render_before_after(setup["data"], "val", before, after, metrics, [7], str(tmp_path / "x.png"))


# --- dead units, killed units and decoy_top5 on hand-made activation tables (no Ray) -----------------

DECOY = 3
ALIVE = [0, 1, 4]  # unit 2 dead throughout, 3 killed by the attack, 5 dead at the start (revived)


def _hand_split(seed: int, n: int = 40) -> dict:
    """One split's activation tables of θ0 and θ (scores [n, 6]), ids, labels (class = id % 4)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"img{i:03d}" for i in range(n)])
    labels = np.arange(n) % 4
    init = (rng.random((n, 6)) + 0.1).astype(np.float32)
    init[:, [2, 5]] = 0.0
    final = (init + 0.5 * rng.random((n, 6))).astype(np.float32)
    final[:, [2, 3]] = 0.0
    final[:, 5] = rng.random(n) + 0.1
    final[np.flatnonzero(labels == DECOY)[:2], :2] = 10.0  # units 0 and 1: a decoy image on top
    final[labels == DECOY, 4] = 1e-3  # unit 4: alive, but no decoy image in its top-5
    return {"ids": ids, "labels": labels, "init": init, "final": final}


def _topk_of(split: dict, state: str, k: int) -> pa.Table:
    """What jobs.topk.run_topk makes of the table (the same accumulator)."""
    acc = StreamingTopK(6, k)
    acc.update(split[state], split["ids"], split["labels"])
    return acc.table()


def _hand_tables(k: int = 5) -> dict[str, pa.Table]:
    from jobs.metrics import _layer_tables
    from jobs.metrics_inputs import emb_array, set_array, unit_states

    splits = {"train": _hand_split(0), "val": _hand_split(1)}
    rng = np.random.default_rng(2)
    inputs, states = {}, {}
    for sp, d in splits.items():
        emb = {i: rng.normal(size=8) for i in d["ids"]}
        topks = [_topk_of(d, st, k) for st in ("init", "final")]
        sets = [set_array(t, 6, k) for t in topks]
        inputs[sp] = (*sets, *(emb_array(x, emb) for x in sets))
        states[sp] = unit_states(topks, 6, k, DECOY)
    val = splits["val"]  # D_τ = V
    return _layer_tables(val["init"], val["final"], np.arange(6), inputs, states)


def test_dead_and_killed_units_are_counted_not_averaged():
    from shared.metrics import layer_means

    tables = _hand_tables()
    for sp, table in tables.items():
        c = _columns(table)
        assert table.column_names == [*COLUMNS, "decoy_top5", "dead_init", "dead_final"]
        assert list(c["dead_init"]) == [False, False, True, False, False, True]
        assert list(c["dead_final"]) == [False, False, True, True, False, False]
        assert np.isnan(c["kendall_tau"][[2, 3, 5]]).all()  # no ranking: τ undefined
        assert not np.isnan(c["clip_delta"][[2, 3]]).any()  # an arbitrary top-k still gives a number
        means = layer_means(table)
        assert (means["units_dead_init"], means["units_killed"]) == (2.0, 1.0)
        for name in (*COLUMNS[1:], "decoy_top5"):  # every column: the same three units
            assert means[name] == pytest.approx(np.mean(c[name][ALIVE])), (sp, name)
        assert means["clip_delta"] != pytest.approx(np.mean(c["clip_delta"]))  # the old, all-unit mean
        # decoy_top5: units 0 and 1 of the three; the killed unit's arbitrary top-5 (first ids) holds
        # a decoy image (img003) but does not count
        assert list(c["decoy_top5"][:5]) == [1.0, 1.0, 1.0, 1.0, 0.0]
        assert means["decoy_top5"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(tables["train"]["kendall_tau"], tables["val"]["kendall_tau"])


def test_manifest_carries_the_counts_and_the_dead_units(tmp_path):
    from jobs.metrics import _commit

    table = _hand_tables()["train"]
    spec = MetricsSpec(
        dataset="/d", model="alexnet_mini", variant_key="v", init_weights="a.pt", final_weights="b.pt",
        final_state_key="s", embedder="reference:/nowhere/ref.pt", picture_units=0, decoy_class=DECOY,
    )  # fmt: skip
    out = str(tmp_path / "m")
    m = _commit(spec, ("conv5", "train"), out, "key1", table, (50.0, 49.5), {})
    man = store.read_manifest(out)
    assert man["dead"] == {"init": [2, 5], "killed": [3]} and man["spec"]["decoy_class"] == DECOY
    assert man["means"] == m.means and m.means["units_killed"] == 1.0 and m.delta_acc == -0.5
    assert read_unit_metrics(out).column_names[-3:] == ["decoy_top5", "dead_init", "dead_final"]


# --- on Ray ------------------------------------------------------------------------------------


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


@pytest.mark.slow
def test_identity_model_gives_identity_metrics(setup, ray_local, monkeypatch):
    spec = _spec(setup, "same", "identity")
    res = run_metrics(spec, setup["store"], pictures=False)  # as a sweep's trial runs it
    assert not res.skipped and set(res.per) == {(ly, sp) for ly in LAYERS for sp in ("train", "val")}
    assert all(m.picture_uri and not store.exists(m.picture_uri) for m in res.per.values())
    drawn = draw_pictures(res)  # what the sweep runs once the trial has handed back its GPU
    assert sorted(name for _, name in drawn) == sorted(
        f"{ly}_{sp}_{f}" for ly in LAYERS for sp in ("train", "val") for f in (PICTURE, PICTURE_PDF)
    )
    assert all(store.exists(uri) for uri, _ in drawn)
    for (layer, split), m in res.per.items():
        assert m.table_uri == store.join(m.uri, TABLE) and m.uri.endswith(
            f"/metrics/model=v0/state=identity/layer={layer}/split={split}"
        )
        table = read_unit_metrics(m.uri)
        assert table.column_names == [*COLUMNS, "dead_init", "dead_final"]
        assert pq.read_schema(store.local_path(m.table_uri)).names == [*COLUMNS, "dead_init", "dead_final"]
        c = _columns(table)
        n_units = store.read_manifest(res.activations[("init", split)][layer])["units"]
        assert list(c["unit"]) == list(range(n_units))
        _, _, scores = _val_scores(res, layer)
        live = scores.std(axis=0) > 0  # a constant (dead) unit has no Kendall τ
        np.testing.assert_allclose(c["kendall_tau"][live], 1.0, atol=1e-9)
        assert np.isnan(c["kendall_tau"][~live]).all()
        np.testing.assert_array_equal(c["topk_overlap"], 1.0)
        np.testing.assert_allclose(c["clip_delta"], 0.0, atol=1e-9)
        np.testing.assert_allclose(c["clip_w"], 1.0, atol=1e-9)
        assert m.delta_acc == 0.0 and m.acc == m.acc_init and 0.0 <= m.acc <= 100.0
        assert m.means["topk_overlap"] == 1.0 and abs(m.means["kendall_tau"] - 1.0) < 1e-9
        man = store.read_manifest(m.uri)
        assert man["key"] == m.key and man["files"] == [TABLE]
        assert store.read_json(store.join(m.uri, DRAWN)) == {"key": m.key, "units": m.picture_units}
        assert man["embedder"]["kind"] == "reference" and man["tau"]["used"] == 64
        assert man["means"] == m.means and man["acc"] == m.acc and man["delta_acc"] == 0.0
    # the picture: 4 units (the highest CLIP-δ; all 0 here, so the first four), two rows each
    m = res.per[("conv5", "val")]
    assert m.picture_units == [0, 1, 2, 3]
    png = Image.open(io.BytesIO(store.read_bytes(m.picture_uri)))
    one = _render_like(setup, res, m, [0])
    assert png.size[1] > one[1] and png.size[0] == one[0]
    assert png.size == _render_like(setup, res, m, [0, 1, 2, 3])
    # a rerun is skipped: nothing is rewritten, and the pictures drawn for this key are not drawn again
    stamp = store.read_manifest(m.uri)["created_at"]

    def no_redraw(*a, **k):
        raise AssertionError("a picture drawn for its metrics key was drawn again")

    monkeypatch.setattr("jobs.before_after.render_before_after", no_redraw)
    again = run_metrics(spec, setup["store"])
    assert again.skipped and all(x.skipped for x in again.per.values())
    assert store.read_manifest(m.uri)["created_at"] == stamp
    assert again.flat() == res.flat() and "conv5/val/clip_delta" in again.flat()
    assert again.flat()["delta_acc"] == 0.0 and "conv5/val/acc" not in again.flat()


def _val_scores(res, layer):
    from jobs.activations import read_table

    return read_table(res.activations[("init", "val")][layer])


def _render_like(setup, res, m, units) -> tuple[int, int]:
    tables = [read_topk(topk_uri(res.activations[(st, "val")]["conv5"], 10)) for st in ("init", "final")]
    out = render_before_after(
        setup["data"], "val", *tables, read_unit_metrics(m.uri), units, m.uri + "/check.png", title="x"
    )
    return Image.open(io.BytesIO(store.read_bytes(out))).size


@pytest.mark.slow
def test_perturbed_model_moves_topk_sets(setup, ray_local):
    units = (0, 3, 5, 7, 11, 13, 17, 19)
    spec = _spec(setup, "perturbed", "perturbed", units=units, picture_units=2)  # θ0's tables are reused
    res = run_metrics(spec, setup["store"])
    assert not res.skipped
    assert res.activations[("final", "val")]["conv5"].endswith("/state=perturbed/split=val")
    for split in ("train", "val"):
        m = res.per[("conv5", split)]
        c = _columns(read_unit_metrics(m.uri))
        assert list(c["unit"]) == list(units)  # one row per attacked unit
        assert (c["topk_overlap"] < 1.0).any()
        assert np.nanmin(c["kendall_tau"]) < 1.0 and np.nanmax(c["kendall_tau"]) <= 1.0
        assert m.delta_acc == pytest.approx(m.acc - m.acc_init)
        assert len(m.picture_units) == 2 and set(m.picture_units) <= set(units)
        cd = dict(zip(c["unit"], c["clip_delta"]))
        assert cd[m.picture_units[0]] == np.nanmax(c["clip_delta"])
    # Kendall-τ runs over D_τ ⊂ val, so it is the same for both splits; the top-k columns are not
    tr, va = (_columns(read_unit_metrics(res.per[("conv5", s)].uri)) for s in ("train", "val"))
    np.testing.assert_array_equal(tr["kendall_tau"], va["kendall_tau"])
    assert not np.array_equal(tr["topk_overlap"], va["topk_overlap"]) or not np.array_equal(
        tr["clip_delta"], va["clip_delta"]
    )
    # units chosen in the spec: shown in the given order, a unit the attack did not move left out
    from dataclasses import replace

    from jobs.before_after import pdf_uri
    from tests.pdf_text import pdf_text

    chosen = run_metrics(replace(spec, picture_units=(7, 3, 4)), setup["store"]).per[("conv5", "val")]
    assert chosen.picture_units == [7, 3]
    text = " ".join(pdf_text(store.read_bytes(pdf_uri(chosen.picture_uri))).split())
    assert "units 7, 3, chosen by hand" in text and "highest CLIP" not in text, text[:500]


@pytest.mark.slow
def test_killed_units_on_ray(setup, ray_local):
    """Two conv5 filters zeroed: their units die; they are counted, not averaged (SCIENCE.md §3)."""
    from jobs.activations import read_table
    from shared.metrics import layer_means

    spec = _spec(setup, "killed", "killed", layers=("conv5",), decoy_class=0, picture_units=2)
    res = run_metrics(spec, setup["store"])
    for split in ("train", "val"):
        m = res.per[("conv5", split)]
        table = read_unit_metrics(m.uri)
        c = _columns(table)
        dead = [
            ~(read_table(res.activations[(st, split)]["conv5"])[2] != 0).any(axis=0)
            for st in ("init", "final")
        ]
        np.testing.assert_array_equal(c["dead_init"], dead[0])
        np.testing.assert_array_equal(c["dead_final"], dead[1])
        killed = np.flatnonzero(~dead[0] & dead[1])
        assert set(killed) == {5, 9} - set(np.flatnonzero(dead[0]))
        alive = ~dead[0] & ~dead[1]
        assert m.means == layer_means(table) and m.means["units_killed"] == len(killed)
        assert m.means["units_dead_init"] == dead[0].sum()
        assert m.means["clip_delta"] == pytest.approx(np.nanmean(c["clip_delta"][alive]))
        assert 0.0 <= m.means["decoy_top5"] <= 1.0
        assert not set(m.picture_units) & set(np.flatnonzero(~alive))  # a dead unit's top-k is arbitrary
        assert store.read_manifest(m.uri)["dead"]["killed"] == killed.tolist()


def test_before_after_names_the_attack_marks_the_decoy_and_writes_a_pdf(setup, tmp_path):
    from jobs.before_after import before_after_figure, pdf_uri, picture_title, selection_note
    from shared.grid import grid_cells
    from tests.pdf_text import pdf_text

    before, after = _topk(setup["data"], 0), _topk(setup["data"], 1)
    metrics = pa.table({"unit": list(range(6)), "clip_delta": [0.1] * 6, "kendall_tau": [0.5] * 6})
    decoy = (
        after.filter(pa.compute.equal(after.column("unit"), 0)).column("label")[0].as_py()
    )  # unit 0's top-1
    title = picture_title("push-up", "alexnet_mini", "conv5", "val", 5)
    note = selection_note([0, 1], "the 2 units with the highest CLIP-δ", decoy, f"class {decoy}")
    classes = [f"class {i}" for i in range(16)]
    args = (setup["data"], "val", before, after, metrics, [0, 1])
    fig = before_after_figure(*args, classes, 5, title, note, decoy)
    cells = grid_cells(fig)  # rows: unit 0 before, after, unit 1 before, after; 5 columns each
    captions = sorted(k for k in cells if k.startswith("caption-"))
    assert captions == sorted(f"caption-{r}-{c}" for r in range(4) for c in range(5))
    assert fig._suptitle.get_text() == title and "push-up" in title and "conv5" in title
    labels = dict(zip(after.column("image_id").to_pylist(), after.column("label").to_pylist()))
    after0 = [
        labels[i]
        for i in after.filter(pa.compute.equal(after.column("unit"), 0)).column("image_id").to_pylist()
    ]
    for c, label in enumerate(after0[:5]):  # the "after" row of unit 0: framed exactly where the decoy is
        assert (f"frame-1-{c}" in cells) == (label == decoy)
        name, score = cells[f"caption-1-{c}"].get_text().split("\n")
        assert name == classes[label] and float(score) > 0  # the class and the unit's activation
    assert any(t.get_text() == note for t in fig.texts) and "highest CLIP-δ" in note and "decoy" in note
    out = render_before_after(*args, str(tmp_path / "ba.png"), classes, 5, title, note, decoy)
    assert store.read_bytes(out)[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = store.read_bytes(pdf_uri(out))
    text = pdf_text(pdf)
    assert (
        pdf.startswith(b"%PDF") and "push-up on alexnet_mini, layer conv5" in text and "decoy class" in text
    )


def _commit_table(folder: str, name: str, table: pa.Table, manifest: dict) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    store.write_bytes(store.join(folder, name), buf.getvalue().to_pybytes())
    store.write_manifest(folder, {**manifest, "files": [name]})


def test_redraw_picks_units_by_hand_from_a_committed_folder(setup, tmp_path):
    """A metrics folder committed by hand (its manifest, unit table and the two top-k tables it names)."""
    from jobs.before_after import pdf_uri, redraw
    from tests.pdf_text import pdf_text

    root = str(tmp_path / "store")
    tables = {st: f"{root}/activations/model=v/layer=conv5/state={st}/split=val" for st in ("init", "final")}
    for seed, st in enumerate(("init", "final")):
        _commit_table(
            topk_uri(tables[st], 10), "topk.parquet", _topk(setup["data"], seed, k=10), {"kind": "topk"}
        )
    mdir = f"{root}/metrics/model=v/state=s/layer=conv5/split=val"
    metrics = pa.table({"unit": list(range(6)), "clip_delta": [0.5] * 6, "kendall_tau": [0.25] * 6})
    spec = {"dataset": setup["data"], "model": "alexnet_mini", "k": 10, "picture_k": 5, "decoy_class": None,
            "label": "push-down", "final_state_key": "s"}  # fmt: skip
    _commit_table(mdir, TABLE, metrics, {"kind": "metrics", "spec": spec, "layer": "conv5", "split": "val",
                                         "tables": tables})  # fmt: skip
    out = redraw(mdir, [3, 1], str(tmp_path / "mine.png"))
    text = pdf_text(store.read_bytes(pdf_uri(out)))
    assert "push-down on alexnet_mini, layer conv5" in text and "units 3, 1, chosen by hand" in text
    assert Image.open(io.BytesIO(store.read_bytes(out))).size == Image.open(
        io.BytesIO(store.read_bytes(render_before_after(setup["data"], "val", _topk(setup["data"], 0, k=10),
                                                        _topk(setup["data"], 1, k=10), metrics, [0, 2],
                                                        str(tmp_path / "two.png"))))
    ).size  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not a committed metrics folder"):
        redraw(str(tmp_path / "nowhere"), [0], str(tmp_path / "x.png"))
