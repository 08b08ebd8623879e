"""ILSVRC-2012 tree -> our Parquet shards: labels, bytes, resuming, and the CLI."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from orchestrator.cli import main
from shared import store
from shared.dataset_meta import dataset_id, split_size
from shared.datasets import DatasetError, iter_records, list_shards
from shared.imagenet_import import import_imagenet

WNIDS = ("n01484850", "n01440764", "n01443537")  # not sorted: labels must follow sorted order
LABEL = {w: i for i, w in enumerate(sorted(WNIDS))}
VAL_WNIDS = ("n01443537", "n01440764", "n01484850", "n01440764", "n01484850", "n01443537")
# devkit meta.mat numbering: ILSVRC2012_IDs are not wnid order, and non-leaf synsets come after
ILSVRC_ID = {"n01484850": 1, "n01440764": 2, "n01443537": 3}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def ilsvrc(tmp_path):
    """A tiny ILSVRC tree: 3 wnids x 4 train images, 6 flat val images; returns (root, expected)."""
    root = tmp_path / "ILSVRC"
    expected: dict[str, dict[str, tuple[int, bytes]]] = {"train": {}, "val": {}}
    for c, wnid in enumerate(WNIDS):
        (root / "train" / wnid).mkdir(parents=True)
        for k in range(4):
            image_id, data = f"{wnid}_{k + 1}", _jpeg(10 * c + k)
            (root / "train" / wnid / f"{image_id}.JPEG").write_bytes(data)
            expected["train"][image_id] = (LABEL[wnid], data)
    (root / "train" / WNIDS[0] / "._n01484850_1.JPEG").write_bytes(b"macOS metadata, not an image")
    (root / "val").mkdir()
    lines = []
    for k, wnid in enumerate(VAL_WNIDS):
        image_id, data = f"ILSVRC2012_val_{k + 1:08d}", _jpeg(100 + k)
        (root / "val" / f"{image_id}.JPEG").write_bytes(data)
        expected["val"][image_id] = (LABEL[wnid], data)
        lines.append(f"{image_id}.JPEG {wnid}")
    (tmp_path / "val_labels.txt").write_text("\n".join(lines) + "\n")
    return root, expected


def _records(dest, split):
    return {r["image_id"]: (r["label"], r["image"]) for r in iter_records(str(dest), split)}


def test_import_gives_our_parquet_layout(ilsvrc, tmp_path):
    src, expected = ilsvrc
    dest = tmp_path / "imagenet"
    res = import_imagenet(str(src), str(dest), val_labels=str(tmp_path / "val_labels.txt"), shard_size=5)
    assert res.written == {"train": 3, "val": 2} and res.skipped == {"train": 0, "val": 0}
    for split in ("train", "val"):
        assert _records(dest, split) == expected[split]
    shards = list_shards(str(dest), "train")
    assert [os.path.basename(s) for s in shards] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    table = pq.read_table(store.local_path(shards[0]))
    assert table.schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert (
        table.schema.field("label").type == pa.int64() and table.schema.field("image_id").type == pa.string()
    )
    assert table.column("image").combine_chunks().field("path")[0].as_py().endswith(".JPEG")
    assert len(set(table.column("label").to_pylist())) > 1, "a shard mixes classes"
    assert json.loads((dest / "classes.json").read_text()) == sorted(WNIDS)
    assert json.loads((dest / "label_map.json").read_text()) == LABEL
    assert res.manifest["splits"]["train"]["images"] == 12 and split_size(str(dest), "val") == 6
    assert len(dataset_id(str(dest))) == 16
    again = import_imagenet(str(src), str(dest), val_labels=str(tmp_path / "val_labels.txt"), shard_size=5)
    assert again.written == {"train": 0, "val": 0} and again.manifest == res.manifest


def test_val_from_the_devkit_ground_truth_and_meta_mat(ilsvrc, tmp_path):
    src, expected = ilsvrc
    devkit = tmp_path / "devkit" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ILSVRC_ID[w]}\n" for w in VAL_WNIDS)
    )
    rows = [(i, w, "words", 0) for w, i in ILSVRC_ID.items()] + [(1001, "n00001740", "entity", 3)]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    scipy.io.savemat(devkit / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})
    dest = tmp_path / "out"
    # meta.mat is found beside the ground-truth file
    import_imagenet(
        str(src), str(dest), split="val", val_labels=str(devkit / "ILSVRC2012_validation_ground_truth.txt")
    )
    assert _records(dest, "val") == expected["val"]


def test_val_in_class_folders_and_a_csv_label_file(ilsvrc, tmp_path):
    src, expected = ilsvrc
    for image_id, (label, _) in expected["val"].items():
        wnid = sorted(WNIDS)[label]
        (src / "val" / wnid).mkdir(exist_ok=True)
        (src / "val" / f"{image_id}.JPEG").rename(src / "val" / wnid / f"{image_id}.JPEG")
    import_imagenet(str(src), str(tmp_path / "a"), split="val")
    assert _records(tmp_path / "a", "val") == expected["val"]
    # the same images flat again, labelled by a Kaggle-style CSV with a header
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    csv = ["ImageId,PredictionString"]
    for image_id, (label, data) in expected["val"].items():
        (flat / "val" / f"{image_id}.JPEG").write_bytes(data)
        csv.append(f"{image_id},{sorted(WNIDS)[label]} 1 2 30 40")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(csv))
    import_imagenet(
        str(flat), str(tmp_path / "b"), split="val", val_labels=str(tmp_path / "LOC_val_solution.csv")
    )
    assert _records(tmp_path / "b", "val") == expected["val"]


def test_rerun_writes_only_the_missing_shard(ilsvrc, tmp_path):
    src, _ = ilsvrc
    dest = tmp_path / "imagenet"
    labels = str(tmp_path / "val_labels.txt")
    import_imagenet(str(src), str(dest), val_labels=labels, shard_size=5)
    parts = sorted((dest / "parquet").glob("*/part-*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in parts}
    last = dest / "parquet" / "train" / "part-00002.parquet"
    original = last.read_bytes()
    last.unlink()
    (dest / store.MANIFEST).unlink()
    (dest / "parquet" / "train" / "part-00002.parquet.tmp-dead0001").write_bytes(b"half")  # a killed writer
    res = import_imagenet(str(src), str(dest), val_labels=labels, shard_size=5)
    assert res.written == {"train": 1, "val": 0} and res.skipped == {"train": 2, "val": 2}
    assert last.read_bytes() == original, "shards are a pure function of the plan"
    assert {p: p.stat().st_mtime_ns for p in parts if p != last} == {
        p: t for p, t in mtimes.items() if p != last
    }
    assert (dest / store.MANIFEST).exists()
    assert not list((dest / "parquet" / "train").glob("*.tmp-*"))


def test_interrupted_import_resumes(ilsvrc, tmp_path):
    src, expected = ilsvrc
    dest = tmp_path / "imagenet"

    def crash_after_first_shard(done, total=None, **info):
        if done >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_imagenet(str(src), str(dest), split="train", shard_size=5, progress=crash_after_first_shard)
    assert not (dest / store.MANIFEST).exists(), "an unfinished import must not look done"
    seen = []
    res = import_imagenet(str(src), str(dest), split="train", shard_size=5,
                          progress=lambda done, total=None, **info: seen.append((done, total)))  # fmt: skip
    assert res.written == {"train": 2} and res.skipped == {"train": 1}
    assert seen[-1] == (12, 12)
    assert _records(dest, "train") == expected["train"]
    # val added later, into the same dataset: the manifest then lists both splits
    res = import_imagenet(str(src), str(dest), split="val", val_labels=str(tmp_path / "val_labels.txt"))
    assert set(res.manifest["splits"]) == {"train", "val"}
    # another shard size for a finished split is refused, not silently rewritten
    with pytest.raises(DatasetError, match="already holds a complete 'train' split"):
        import_imagenet(str(src), str(dest), split="train", shard_size=4)
    assert (dest / store.MANIFEST).exists(), "a refused import leaves the dataset as it was"


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (None, {"src": "{tmp}/nowhere"}, "does not exist"),
        ("no_labels", {}, "--val-labels"),
        ("empty_val", {"split": "val"}, "empty split 'val'"),
        ("unknown_wnid", {"val_labels": "{tmp}/bad.txt"}, "'n99999999', which is not among the 3 classes"),
        ("missing_label", {"val_labels": "{tmp}/bad.txt"}, "1 of 6 validation images have no label"),
        ("ground_truth", {"val_labels": "{tmp}/bad.txt"}, "--synsets"),
        ("no_val", {"split": "val"}, "split 'val' not found"),
        (None, {"dest": "gs://bucket/x"}, "unsupported store URI scheme"),
    ],
)
def test_bad_inputs_are_clear_errors(ilsvrc, tmp_path, setup, kwargs, message):
    src, _ = ilsvrc
    lines = (tmp_path / "val_labels.txt").read_text().splitlines()
    if setup == "empty_val":
        for f in (src / "val").iterdir():
            f.unlink()
    elif setup == "unknown_wnid":
        (tmp_path / "bad.txt").write_text("\n".join([*lines[:-1], lines[-1].split()[0] + " n99999999"]))
    elif setup == "missing_label":
        (tmp_path / "bad.txt").write_text("\n".join(lines[:-1]))
    elif setup == "ground_truth":
        (tmp_path / "bad.txt").write_text("1\n2\n3\n1\n2\n3\n")
    elif setup == "no_val":
        (src / "val").rename(tmp_path / "elsewhere")
    args = {"src": str(src), "dest": str(tmp_path / "out"), **kwargs}
    args = {k: v.replace("{tmp}", str(tmp_path)) for k, v in args.items()}
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("[", r"\[")):
        import_imagenet(**args)


def test_cli_imports_and_prints_counts(ilsvrc, tmp_path, capsys):
    src, _ = ilsvrc
    dest = tmp_path / "imagenet"
    argv = ["data", "import-imagenet", str(src), f"file://{dest}", "--val-labels", str(tmp_path / "val_labels.txt"),
            "--shard-size", "5"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == 3
    assert out["splits"]["train"] == {"images": 12, "shards": 3, "written": 3, "skipped": 0}
    assert out["splits"]["val"] == {"images": 6, "shards": 2, "written": 2, "skipped": 0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "import-imagenet", "{tmp}/missing", "{tmp}/out"], "does not exist"),
        (["data", "import-imagenet", "{src}", "{tmp}/out"], "--val-labels"),
        (
            ["data", "import-imagenet", "{src}", "{tmp}/out", "--shard-size", "0"],
            "--shard-size: 0 is out of range",
        ),
    ],
)
def test_cli_bad_input_exits_2(ilsvrc, tmp_path, capsys, argv, message):
    src, _ = ilsvrc
    try:
        rc = main([a.replace("{tmp}", str(tmp_path)).replace("{src}", str(src)) for a in argv])
    except SystemExit as e:  # argparse refuses out-of-range options itself (exit 2)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_import_to_s3_resumes(ilsvrc, tmp_path, s3_server):
    src, expected = ilsvrc
    dest = f"s3://{s3_server.bucket}/imagenet-import-test"
    labels = str(tmp_path / "val_labels.txt")
    import_imagenet(str(src), dest, val_labels=labels, shard_size=5)
    assert _records(dest, "train") == expected["train"] and _records(dest, "val") == expected["val"]
    store.delete(store.join(dest, "parquet", "val", "part-00001.parquet"))
    store.delete(store.manifest_uri(dest))
    res = import_imagenet(str(src), dest, val_labels=labels, shard_size=5)
    assert res.written == {"train": 0, "val": 1}
    assert store.is_done(dest) and _records(dest, "val") == expected["val"]
