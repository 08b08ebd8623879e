"""Phase 0 on the driver: the synthetic dataset (when asked for and missing), the base models
(the project's pretraining, reused when stored, or the weights the spec names) and the
reference encoder of CLIP-δ. Cheap or cached; pruned variants are the next phase's."""

from __future__ import annotations

from typing import Any

from jobs.pretrain import PretrainSpec, run_pretrain
from jobs.reference_encoder import train_reference_encoder
from orchestrator.plan import Prepared, Variant, needs_tables
from shared import store
from shared.dataset_meta import dataset_id
from shared.synth import generate

REFERENCE = "reference"  # the embedder the launcher trains (orchestrator.spec.REFERENCE_EMBEDDER)


def prepare(spec: Any, bar=None) -> Prepared:
    """Dataset, one unpruned variant per model entry, and the embedder spec the metrics use (the
    reference encoder is trained only when some attack's family computes unit tables)."""
    bar = bar or (lambda name: None)
    ds = spec.dataset
    if ds.synth is not None and not store.exists(store.join(ds.uri, "_MANIFEST.json")):
        generate(ds.uri, **ds.synth.model_dump(), progress=bar("synthetic data") or _noop)
    bases = tuple(base_variant(spec, m, bar) for m in spec.models)
    embedder = spec.metrics.embedder
    # Only unit metrics (CLIP-δ) read the embedder: a sweep whose families compute no tables skips it.
    if embedder == REFERENCE and needs_tables(spec):
        uri = train_reference_encoder(ds.uri, spec.store, progress=bar("reference encoder") or _noop)
        embedder = f"{REFERENCE}:{uri}"
    return Prepared(ds.uri, dataset_id(ds.uri), bases, embedder)


def base_variant(spec: Any, m: Any, bar) -> Variant:
    """The unpruned variant of model entry ``m``."""
    ds = spec.dataset
    if m.weights == "pretrain":
        res = run_pretrain(
            PretrainSpec(dataset=ds.uri, model=m.name, train_split=ds.train_split, val_split=ds.val_split),
            spec.store,
            progress=bar(f"pretrain {m.name}") or _noop,
        )
        return Variant(m.name, res.model_uri, res.key, res.key)
    key = model_key(m.name, m.weights)
    return Variant(m.name, m.weights, key, key)


def model_key(model: str, weights: str) -> str:
    """A base model given by the user: its name, weights and (for files) size identify it."""
    size = None
    if ("://" in weights or "/" in weights) and store.exists(weights):
        fs, path = store.resolve(weights)
        size = fs.get_file_info(path).size
    return store.content_key(
        {"model": model, "weights": store.normalize(weights) if size else weights, "size": size}
    )


def _noop(*a: Any, **k: Any) -> None:
    return None
