"""``vizsweep verify``: which committed stages of a store (or of one sweep) are damaged, and what
happens to each. Sizes of every stage first (one listing per folder), then checksums with a count.

A damaged derived stage (activation table, top-k, metrics, accuracy, a pretrained or pruned
model) counts as not done: the next launch or resume removes and recomputes it. An attacked
model's trial reruns once its folder is removed (``--repair``). A damaged dataset shard must
be re-imported; the message gives the command.
"""

from __future__ import annotations

import posixpath
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from orchestrator.commands import find_sweep
from shared import integrity, store

DATASET_KINDS = ("vizsweep-synthetic-imagenet", "vizsweep-imagenet-import")
RECOMPUTED = {"activations": "activation table", "topk": "top-k sets", "metrics": "metrics",
              "accuracy": "accuracy", "pretrained-model": "pretrained model", "pruned-model": "pruned model"}  # fmt: skip
_KEY = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass
class Stage:
    uri: str
    kind: str = ""  # the manifest's kind ("" when it cannot be read)
    manifest: dict | None = None
    problems: list[integrity.Problem] = field(default_factory=list)

    def label(self) -> str:
        if self.kind in DATASET_KINDS:
            return "dataset"
        return RECOMPUTED.get(self.kind) or self.kind.replace("-", " ") or "stage"

    def action(self, repaired: bool) -> str:
        if self.kind in DATASET_KINDS:
            return integrity.reimport_hint(self.uri, self.manifest or {}, self.problems)
        if repaired:
            return "removed (--repair): the next launch or resume computes it again"
        if self.kind in RECOMPUTED or self.manifest is None:
            return "would be recomputed: the next launch or resume removes it and computes it again"
        return "its trial reruns once it is removed: run `vizsweep verify --repair`"


def store_stages(store_uri: str) -> list[str]:
    """Every committed stage folder of the store (sweep folders excluded), and the sweeps' datasets."""
    root = store.normalize(store_uri)
    out = [
        f.rsplit("/", 1)[0]
        for f in store.listdir(root, recursive=True)
        if f.endswith("/" + store.MANIFEST) and "/sweeps/" not in f[len(root) :]
    ]
    for spec_uri in store.listdir(store.join(root, "sweeps"), recursive=True):
        if spec_uri.endswith("/spec.json"):
            out.append(_dataset_of(store.read_json(spec_uri)))
    return sorted(set(u for u in out if u and store.is_done(u)))


def sweep_stages(store_uri: str, sweep_id: str) -> list[str]:
    """The stages one sweep's plan uses: its dataset, and every stage keyed by its variants and attacks."""
    d = find_sweep(store_uri, sweep_id)
    plan_uri = store.join(d, "plan.json")
    keys = _keys(store.read_json(plan_uri)) if store.exists(plan_uri) else set()
    root = store.normalize(store_uri)
    used = [
        u for u in store_stages(store_uri)
        if u.startswith(root + "/") and any(p.split("=", 1)[-1] in keys for p in u[len(root) + 1 :].split("/"))
    ]  # fmt: skip
    dataset = _dataset_of(store.read_json(store.join(d, "spec.json")))
    return sorted(set(used + ([dataset] if dataset and store.is_done(dataset) else [])))


def _dataset_of(spec: dict) -> str:
    uri = (spec.get("dataset") or {}).get("uri")
    return store.normalize(uri) if uri else ""


def _keys(obj: Any) -> set[str]:
    """Content keys a plan names: variant and attack keys, and the model folders of its URIs."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and (k.endswith("key") or k == "base") and _KEY.match(v):
                out.add(v)
            out |= _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v)
    elif isinstance(obj, str) and "/models/" in obj:
        out.add(obj.split("/models/", 1)[1].split("/", 1)[0])
    return out


def check_stages(uris: list[str], checksums: bool = True, err=None) -> list[Stage]:
    """Sizes of every stage, then (``checksums``) the checksums of those whose sizes matched."""
    err = err if err is not None else sys.stderr  # at call time: a stream bound at import may be closed
    stages = []
    for u in uris:
        m, problems = integrity.stage_state(u)
        kind = (m or {}).get("kind", "")
        if m is None and any(store.is_dir(store.join(u, lay)) for lay in ("parquet", "webdataset")):
            kind = DATASET_KINDS[0] if store.is_dir(store.join(u, "webdataset")) else DATASET_KINDS[1]
        stages.append(Stage(u, kind, m, problems))
    if not checksums:
        return stages
    clean = [s for s in stages if not s.problems and s.manifest is not None]
    total = sum(len(integrity.recorded(s.manifest)) for s in clean)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if err.isatty() or done[0] == total or done[0] % 100 == 0:
            print(f"\rchecksums: {done[0]}/{total} files", end="", file=err, flush=True)

    for s in clean:
        s.problems = integrity.check(s.uri, s.manifest, checksums=True, on_file=tick, cached=False)
    if total:
        print(file=err)
    return stages


def cmd_verify(store_uri: str, sweep_id: str | None, quick: bool = False, repair: bool = False) -> int:
    """Print the damaged stages and what happens to each; 0 when clean, 1 when something is damaged."""
    uris = sweep_stages(store_uri, sweep_id) if sweep_id else store_stages(store_uri)
    stages = check_stages(uris, checksums=not quick)
    bad = [s for s in stages if s.problems]
    for s in bad:
        fixed = repair and s.kind not in DATASET_KINDS
        if fixed:
            integrity.clear(s.uri)
        print(f"corrupt {s.label()}: {s.uri}")
        for p in s.problems:
            rel = p.uri[len(s.uri) + 1 :] if p.uri.startswith(s.uri + "/") else posixpath.basename(p.uri)
            print(f"  {rel}: {p.what}")
        print(f"  -> {s.action(fixed)}")
    scope = f"sweep {sweep_id}" if sweep_id else f"store {store.normalize(store_uri)}"
    how = "sizes only" if quick else "sizes and checksums"
    files = sum(len(integrity.recorded(s.manifest)) for s in stages if s.manifest)
    print(f"{scope}: {len(stages)} stages, {files} files checked ({how}): "
          f"{len(bad)} corrupt" + ("" if bad else ", all intact"))  # fmt: skip
    return 1 if bad else 0
