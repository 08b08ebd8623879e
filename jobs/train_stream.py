"""Training batches streamed through Ray Data in an order that is a function of (seed, epoch).

Shared by the attack loop (pixels only: its losses need no labels) and the pruning job's
fine-tuning (pixels and labels): neither holds the split in memory, so both run at ImageNet
scale. A resumed run replays its epoch's stream up to its position without training: no
shuffle state to save, and cheap when the decoded split is cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from shared.attacks import mix_seed
from shared.models.zoo import model_info


class StreamSettings(Protocol):
    """What decides the stream (``jobs.attack.AttackSpec`` and ``jobs.prune.PruneSpec`` have these)."""

    dataset: str
    train_split: str
    model: str
    seed: int
    batch_size: int
    block_rows: int
    shuffle_buffer: int


def _decode(batch: dict, pre) -> dict:
    from shared.datasets import decode_batch

    out = decode_batch(batch, pre)
    return {"pixels": out["pixels"], "label": out["label"], "ok": out["ok"]}


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

    def __init__(self, spec: StreamSettings, rows: int, cache_bytes: int) -> None:
        self.spec = spec
        self.rows = rows  # images in the split (from its index)
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

    def _batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        from ray.data import RandomSeedConfig

        seed = mix_seed(self.spec.seed, epoch) & 0x7FFFFFFF
        order = RandomSeedConfig(seed=seed, reseed_after_execution=False)
        if self.cached is not None:
            ds = self.cached.randomize_block_order(seed=order)
        else:
            ds = self._decoded(self._read().randomize_block_order(seed=order))
        return ds.iter_torch_batches(
            batch_size=self.spec.batch_size, drop_last=True, device="cpu",
            local_shuffle_buffer_size=self.spec.shuffle_buffer, local_shuffle_seed=seed,
        )  # fmt: skip

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Pixel batches of ``epoch`` from batch ``skip`` on (earlier ones are replayed and dropped)."""
        for pixels, _ in self.labelled(epoch, skip, device):
            yield pixels

    def labelled(
        self, epoch: int, skip: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(pixels, labels) batches of ``epoch`` from batch ``skip`` on; corrupt images drop out."""
        for i, batch in enumerate(self._batches(epoch)):
            if i < skip:
                continue
            ok = batch["ok"].bool()
            pixels, labels = batch["pixels"], batch["label"]
            if not bool(ok.all()):
                pixels, labels = pixels[ok], labels[ok]
            yield pixels.to(device), labels.to(device)
