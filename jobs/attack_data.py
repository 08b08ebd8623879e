"""The attack job's data: D_attack, D_decoy, the evaluation subset, and the training stream.

- D_attack^j (Eq. 7) = unit j's initial top-k on the train split, from the committed
  activation and top-k tables (computed or reused via ``jobs.activations``/``jobs.topk``);
  ``s_j`` is the mean of those k scores (SCIENCE.md §2).
- D_decoy (Eq. 8) = ``decoy_images`` train images of ``decoy_class``, drawn with the seed
  from the split's image index; the evaluation subset likewise from ``eval_split``. All
  three are fetched by id (:func:`shared.image_index.fetch_images`), never by a scan.
- Training batches stream in an order that our code defines as a function of
  (seed, epoch): fixed-size blocks (so the layout does not depend on the cluster's
  size) permuted with numpy, rows permuted within windows of consecutive blocks
  (:class:`jobs.train_stream.TrainStream`: decoded in this process on one node, by
  Ray Data in the same order across nodes). A resumed run starts at its batch: the
  order is computed, so there is no shuffle state to save.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from jobs.attack_spec import AttackSpec
from shared import store
from shared.attacks import AttackTargets, UnitInputs, family_of, get_attack, unit_scale
from shared.models.zoo import model_info
from shared.registry import Registry

# A family's data provider: (spec, store, device) -> the inputs its attacks are built over.
Provider = Callable[[AttackSpec, str, torch.device], Any]
PROVIDERS: Registry[Provider] = Registry("attack data provider")


def register_provider(name: str) -> Callable[[Provider], Provider]:
    """Register a data provider that family records name in ``data`` (duplicates raise)."""
    return PROVIDERS.register(name)


@dataclass
class EvalSubset:
    """The fixed held-out subset whose top-1 accuracy drives the α controller (SCIENCE.md §2)."""

    ids: list[str]
    pixels: torch.Tensor
    labels: torch.Tensor
    split_rows: int = 0  # images in the whole split (ids == all of it, less unreadable ones, when equal)
    unreadable: list[str] = field(default_factory=list)  # picked images that did not decode


@dataclass
class AttackData:
    inputs: Any  # what the family's provider prepared (the thesis's family: UnitInputs)
    eval: EvalSubset
    train_rows: int  # images in the train split (from its index)


def steps_per_epoch(train_rows: int, batch_size: int) -> int:
    """Full batches per epoch (the stream drops the last partial one, so every step has B images)."""
    n = train_rows // batch_size
    if n < 1:
        raise ValueError(f"the train split has {train_rows} images, fewer than batch_size={batch_size}")
    return n


def split_index(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, labels) of a split, sorted by id, from its image index (built once, then reused)."""
    from shared.image_index import build_index

    fs, path = store.resolve(build_index(dataset, split))
    table = pq.read_table(path, filesystem=fs, columns=["image_id", "label"])
    return np.asarray(table.column("image_id").to_pylist(), dtype=object), table.column("label").to_numpy()


def prepare_data(spec: AttackSpec, store_uri: str, device: torch.device) -> AttackData:
    """The family's inputs (its declared provider), the evaluation subset and the train split's size."""
    provider = PROVIDERS.get(family_of(spec.attack).data)
    inputs = provider(spec, store_uri, device)
    train_ids, _ = split_index(spec.dataset, spec.train_split)
    return AttackData(inputs, eval_subset(spec, device), len(train_ids))


def eval_subset(spec: AttackSpec, device: torch.device) -> EvalSubset:
    """``eval_images`` images of ``eval_split``, drawn with the seed (the whole split when smaller)."""
    eval_all, eval_lab = split_index(spec.dataset, spec.eval_split)
    rng = np.random.default_rng([spec.seed, 3])
    pick = np.sort(rng.choice(len(eval_all), size=min(spec.eval_images, len(eval_all)), replace=False))
    ids = [str(i) for i in eval_all[pick]]
    pixels, keep = decode_ids(spec, spec.eval_split, ids)
    labels = torch.from_numpy(eval_lab[pick][keep].astype(np.int64))
    bad = [i for i, k in zip(ids, keep) if not k]
    ids = [i for i, k in zip(ids, keep) if k]
    return EvalSubset(ids, pixels.to(device), labels.to(device), len(eval_all), bad)


@register_provider("unit-targets")
def unit_targets(spec: AttackSpec, store_uri: str, device: torch.device) -> UnitInputs:
    """The thesis's family: attacked units, s_j, and the D_attack / D_decoy pixels its attack uses."""
    uses = getattr(get_attack(spec.attack), "uses", ())
    cfg = spec.config
    topk = initial_topk(spec, store_uri)
    targets, attack_ids = build_targets(spec, topk, with_member="attack" in uses)
    attack_pixels = decoy_pixels = None
    if "attack" in uses:
        attack_pixels, keep = decode_ids(spec, spec.train_split, attack_ids)
        if not keep.all():  # unreadable top-k images cannot be pushed down: drop their rows
            member = {k: v[torch.from_numpy(keep)] for k, v in (targets.member or {}).items()}
            targets = AttackTargets(targets.layers, targets.units, targets.scale, member)
    if "decoy" in uses:
        decoy_pixels = decoy_set(spec, int(cfg["decoy_class"]), int(cfg["decoy_images"]))
    return UnitInputs(
        targets.to(device),
        None if attack_pixels is None else attack_pixels.to(device),
        None if decoy_pixels is None else decoy_pixels.to(device),
    )


def decoy_set(spec: AttackSpec, decoy_class: int, count: int) -> torch.Tensor:
    """D_decoy (Eq. 8): ``count`` train images of ``decoy_class``, drawn with the seed."""
    train_ids, train_labels = split_index(spec.dataset, spec.train_split)
    pool = np.sort(train_ids[train_labels == decoy_class].astype(str))
    if len(pool) == 0:
        raise ValueError(
            f"decoy_class={decoy_class} has no images in split {spec.train_split!r} of {spec.dataset} "
            f"(labels there: {sorted(set(train_labels.tolist()))[:20]})"
        )
    rng = np.random.default_rng([spec.seed, 2])
    ids = sorted(rng.choice(pool, size=min(count, len(pool)), replace=False).tolist())
    pixels, _ = decode_ids(spec, spec.train_split, ids)
    return pixels


def initial_topk(spec: AttackSpec, store_uri: str) -> dict[str, str]:
    """Committed top-k folders (layer -> URI) of the variant's initial tables on the train split."""
    from jobs.activations import ActivationsSpec, run_activations
    from jobs.topk import run_topk

    acts = ActivationsSpec(
        dataset=spec.dataset, split=spec.train_split, model=spec.model, weights=spec.weights,
        variant_key=spec.variant_key, layers=tuple(spec.layers), state_key="init", device=spec.device,
    )  # fmt: skip
    tables = run_activations(acts, store_uri).tables
    return {layer: run_topk(tables[layer], int(spec.config.get("k", 10))).uri for layer in spec.layers}


def build_targets(
    spec: AttackSpec, topk: dict[str, str], with_member: bool
) -> tuple[AttackTargets, list[str]]:
    """Units, scales s_j and (push-down) the D_attack membership matrix over the union of top-k ids."""
    from jobs.topk import read_topk

    units, scale, sets = {}, {}, {}
    for layer in spec.layers:
        table = read_topk(topk[layer])
        n_units = int(store.read_manifest(topk[layer])["units"])
        unit = np.asarray(table.column("unit").to_pylist())
        k_eff = len(unit) // n_units
        scores = torch.tensor(table.column("score").to_pylist(), dtype=torch.float32).reshape(n_units, k_eff)
        ids = np.asarray(table.column("image_id").to_pylist(), dtype=object).reshape(n_units, k_eff)
        sel = list(range(n_units)) if spec.units == "all" else list(spec.units)
        if sel[-1] >= n_units:
            raise ValueError(
                f"units {[u for u in sel if u >= n_units]} do not exist: {layer} has {n_units} units"
            )
        units[layer] = torch.tensor(sel, dtype=torch.long)
        scale[layer] = unit_scale(scores.T, spec.config.get("scale", "unit"))[
            units[layer]
        ]  # s_j over the unit's own top-k
        sets[layer] = [set(ids[j]) for j in sel]
    attack_ids: list[str] = []
    member = None
    if with_member:
        attack_ids = sorted({i for layer_sets in sets.values() for s in layer_sets for i in s})
        row = {i: r for r, i in enumerate(attack_ids)}
        member = {}
        for layer, layer_sets in sets.items():
            m = torch.zeros(len(attack_ids), len(layer_sets), dtype=torch.bool)
            for j, s in enumerate(layer_sets):
                m[[row[i] for i in s], j] = True
            member[layer] = m
    return AttackTargets(tuple(spec.layers), units, scale, member), attack_ids


def decode_ids(spec: AttackSpec, split: str, ids: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """Decoded pixels of the readable images among ``ids`` and the readable mask (fetched by id)."""
    from shared.datasets import decode_image
    from shared.image_index import fetch_images

    pre = model_info(spec.model).preprocess
    raw = fetch_images(spec.dataset, split, ids)
    arrays = [decode_image(raw[i], pre) for i in ids]
    keep = np.array([a is not None for a in arrays], dtype=bool)
    good = [a for a in arrays if a is not None]
    if not good:
        raise ValueError(
            f"none of the {len(ids)} images picked from split {split!r} of {spec.dataset} decodes"
        )
    return torch.from_numpy(np.stack(good)), keep


@register_provider("saliency")
def saliency_inputs(spec: AttackSpec, store_uri: str, device: torch.device) -> dict[str, torch.Tensor] | None:
    """Heo's families: nothing beyond the labelled stream, but Active fooling's training collages."""
    cfg = spec.config
    if cfg.get("kind") != "active":
        return None
    from jobs.collages import CollageSpec, read_collages, run_collages

    c1, c2 = cfg["classes"]
    res = run_collages(
        CollageSpec(dataset=spec.dataset, c1=int(c1), c2=int(c2), images=int(cfg["collages"]),
                    train_split=spec.train_split, heldout_split=spec.eval_split, seed=spec.seed),
        store_uri,
    )  # fmt: skip
    pixels, a, b = read_collages(res.uri, "train", model_info(spec.model).preprocess)
    return {"collages": pixels.to(device), "c1": a.to(device), "c2": b.to(device)}
