"""The attack job's data: D_attack, D_decoy, the evaluation subset, and the training stream.

- D_attack^j (Eq. 7) = unit j's initial top-k on the train split, from the committed
  activation and top-k tables (computed or reused via ``jobs.activations``/``jobs.topk``);
  ``s_j`` is the mean of those k scores (SCIENCE.md §2).
- D_decoy (Eq. 8) = ``decoy_images`` train images of ``decoy_class``, drawn with the seed
  from the split's image index; the evaluation subset likewise from ``eval_split``. All
  three are fetched by id (:func:`shared.image_index.fetch_images`), never by a scan.
- Training batches stream through Ray Data in an order that is a function of
  (seed, epoch): fixed-size blocks (so the layout does not depend on the cluster's
  size), seeded ``randomize_block_order``, decode, then a seeded local shuffle buffer
  with ``preserve_order`` so parallel decode tasks cannot reorder rows (:class:`TrainStream`).
  A resumed run replays its epoch's stream up to its position without training: no
  shuffle state to save, and cheap when the decoded split is cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import torch

from shared import store
from shared.attacks import AttackTargets, get_attack, mix_seed, unit_scale
from shared.models.zoo import model_info

if TYPE_CHECKING:
    from jobs.attack import AttackSpec


@dataclass
class AttackData:
    targets: AttackTargets  # on the training device
    attack_ids: list[str]  # rows of targets.member (push-down), else empty
    attack_pixels: torch.Tensor | None  # decoded D_attack, when the attack uses it
    decoy_ids: list[str]
    decoy_pixels: torch.Tensor | None  # decoded D_decoy, when the attack uses it
    eval_ids: list[str]
    eval_pixels: torch.Tensor
    eval_labels: torch.Tensor
    train_rows: int  # images in the train split (from its index)
    topk: dict[str, str]  # layer -> committed initial top-k folder


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
    """Everything the loop needs besides the stream; the initial tables are computed when missing."""
    uses = get_attack(spec.attack).uses
    topk = initial_topk(spec, store_uri)
    targets, attack_ids = build_targets(spec, topk, with_member="attack" in uses)
    train_ids, train_labels = split_index(spec.dataset, spec.train_split)
    attack_pixels = decoy_pixels = None
    decoy_ids: list[str] = []
    if "attack" in uses:
        attack_pixels, keep = decode_ids(spec, spec.train_split, attack_ids)
        if not keep.all():  # unreadable top-k images cannot be pushed down: drop their rows
            attack_ids = [i for i, k in zip(attack_ids, keep) if k]
            member = {k: v[torch.from_numpy(keep)] for k, v in (targets.member or {}).items()}
            targets = AttackTargets(targets.layers, targets.units, targets.scale, member)
    if "decoy" in uses:
        pool = np.sort(train_ids[train_labels == spec.decoy_class].astype(str))
        if len(pool) == 0:
            raise ValueError(
                f"decoy_class={spec.decoy_class} has no images in split {spec.train_split!r} of {spec.dataset} "
                f"(labels there: {sorted(set(train_labels.tolist()))[:20]})"
            )
        rng = np.random.default_rng([spec.seed, 2])
        decoy_ids = sorted(rng.choice(pool, size=min(spec.decoy_images, len(pool)), replace=False).tolist())
        decoy_pixels, keep = decode_ids(spec, spec.train_split, decoy_ids)
        decoy_ids = [i for i, k in zip(decoy_ids, keep) if k]
    eval_all, eval_lab = split_index(spec.dataset, spec.eval_split)
    rng = np.random.default_rng([spec.seed, 3])
    pick = np.sort(rng.choice(len(eval_all), size=min(spec.eval_images, len(eval_all)), replace=False))
    eval_ids = [str(i) for i in eval_all[pick]]
    eval_pixels, keep = decode_ids(spec, spec.eval_split, eval_ids)
    eval_labels = torch.from_numpy(eval_lab[pick][keep].astype(np.int64))
    eval_ids = [i for i, k in zip(eval_ids, keep) if k]
    return AttackData(
        targets=targets.to(device),
        attack_ids=attack_ids,
        attack_pixels=None if attack_pixels is None else attack_pixels.to(device),
        decoy_ids=decoy_ids,
        decoy_pixels=None if decoy_pixels is None else decoy_pixels.to(device),
        eval_ids=eval_ids,
        eval_pixels=eval_pixels.to(device),
        eval_labels=eval_labels.to(device),
        train_rows=len(train_ids),
        topk=topk,
    )


def initial_topk(spec: AttackSpec, store_uri: str) -> dict[str, str]:
    """Committed top-k folders (layer -> URI) of the variant's initial tables on the train split."""
    from jobs.activations import ActivationsSpec, run_activations
    from jobs.topk import run_topk

    acts = ActivationsSpec(
        dataset=spec.dataset, split=spec.train_split, model=spec.model, weights=spec.weights,
        variant_key=spec.variant_key, layers=tuple(spec.layers), state_key="init", device=spec.device,
    )  # fmt: skip
    tables = run_activations(acts, store_uri).tables
    return {layer: run_topk(tables[layer], spec.k).uri for layer in spec.layers}


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
        scale[layer] = unit_scale(scores.T, spec.scale)[units[layer]]  # s_j over the unit's own top-k
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


def _decode(batch: dict, pre) -> dict:
    from shared.datasets import decode_batch

    out = decode_batch(batch, pre)
    return {"pixels": out["pixels"], "ok": out["ok"]}


def _ordered(ds):
    ds.context.execution_options.preserve_order = True  # the dataset's own copy of the context
    return ds


class TrainStream:
    """The training batches of every epoch, in an order that is a function of (seed, epoch) only.

    Order: the split re-blocked into ``block_rows``-row blocks (Ray 2.60 reads a small split
    as one block whatever ``override_num_blocks`` says, and block counts would otherwise
    follow the cluster), blocks permuted by ``randomize_block_order(seed_e)``, each block
    decoded whole, then Ray's local shuffle buffer seeded with ``seed_e``. When the decoded
    split fits in ``cache_bytes`` it is decoded once and kept in the object store; permuting
    those blocks gives the same order (checked: one decoded block per re-blocked block, else
    it streams), so the cache is an execution setting, not part of the result.
    """

    def __init__(self, spec: AttackSpec, rows: int, cache_bytes: int) -> None:
        self.spec = spec
        self.pre = model_info(spec.model).preprocess
        self.cached = None
        if rows * 3 * self.pre.crop**2 * 4 <= cache_bytes:
            cached = self._decoded(self._read()).materialize()
            if cached.num_blocks() == -(-rows // spec.block_rows):
                self.cached = _ordered(cached)

    def _read(self):
        from shared.datasets import read_records

        ds = _ordered(read_records(self.spec.dataset, self.spec.train_split))
        return ds.repartition(target_num_rows_per_block=self.spec.block_rows, strict=True)

    def _decoded(self, ds):
        # batch_size=None: a whole block per call, so decoded blocks map one-to-one onto read blocks
        return ds.map_batches(_decode, fn_kwargs={"pre": self.pre}, batch_format="numpy", batch_size=None)

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Pixel batches of ``epoch`` from batch ``skip`` on (earlier ones are replayed and dropped)."""
        from ray.data import RandomSeedConfig

        seed = mix_seed(self.spec.seed, epoch) & 0x7FFFFFFF
        order = RandomSeedConfig(seed=seed, reseed_after_execution=False)
        if self.cached is not None:
            ds = self.cached.randomize_block_order(seed=order)
        else:
            ds = self._decoded(self._read().randomize_block_order(seed=order))
        batches = ds.iter_torch_batches(
            batch_size=self.spec.batch_size, drop_last=True, device="cpu",
            local_shuffle_buffer_size=self.spec.shuffle_buffer, local_shuffle_seed=seed,
        )  # fmt: skip
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            ok = batch["ok"].bool()
            pixels = batch["pixels"] if bool(ok.all()) else batch["pixels"][ok]  # corrupt images drop out
            yield pixels.to(device)
