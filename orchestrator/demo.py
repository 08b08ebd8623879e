"""``vizsweep demo``: the whole foundation end to end on the embedded default (local Ray, local store)."""

from __future__ import annotations

import time

from shared import store


def run_demo(store_uri: str, layers: list[str], units: int = 8) -> int:
    from jobs.activations import ActivationsSpec, run_activations
    from jobs.pretrain import PretrainSpec, run_pretrain
    from jobs.raysetup import ensure_ray
    from jobs.topk import render_topk_grid, run_topk
    from orchestrator.progress import Bar
    from shared.synth import class_names, generate

    t0 = time.time()
    data = store.join(store_uri, "datasets", "synthetic-16")
    print(f"[1/4] synthetic dataset -> {data}")
    with Bar("synth") as bar:
        manifest = generate(data, progress=bar)
    classes = class_names(manifest.get("classes", 16) if isinstance(manifest.get("classes"), int) else 16)

    print("[2/4] pretrain alexnet_mini (reused when already trained)")
    with Bar("pretrain", unit="epoch") as bar:
        model = run_pretrain(PretrainSpec(dataset=data), store_uri, progress=bar)
    print(
        f"      val top-1 {100 * model.val_acc:.1f} %  ({'reused' if model.reused else f'{model.seconds:.0f} s'})"
    )

    print(f"[3/4] activation tables for {', '.join(layers)} on val (Ray Data)")
    ensure_ray()
    spec = ActivationsSpec(
        dataset=data, split="val", model="alexnet_mini", weights=model.model_uri,
        variant_key=model.key, layers=tuple(layers),
    )  # fmt: skip
    with Bar("activations") as bar:
        acts = run_activations(spec, store_uri, progress=bar)
    print(
        f"      {acts.rows} rows, {acts.corrupt} corrupt images skipped{' (reused)' if acts.skipped else ''}"
    )

    print("[4/4] top-10 sets and top-5 pictures")
    pictures = []
    for layer, table in acts.tables.items():
        tk = run_topk(table, k=10)
        out = store.join(store_uri, "pictures", f"demo-{model.key}-{layer}-top5.png")
        render_topk_grid(
            data,
            "val",
            tk.table,
            list(range(units)),
            out,
            classes=classes,
            title=f"alexnet_mini {layer}: top-5 val images",
        )
        pictures.append(out)
        print(f"      {layer}: tables {table}")
    for p in pictures:
        print(f"      picture: {store.local_path(p) or p}")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


def run_sweep_demo(spec_path: str | None = None) -> int:
    """``make demo``: the quickstart sweep on the embedded default (local Ray, store, MLflow)."""
    import os

    from orchestrator.commands import cmd_launch

    if spec_path is None:
        spec_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                                 "quickstart.yaml")  # fmt: skip
    return cmd_launch(spec_path)
