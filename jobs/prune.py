"""The pruning job (SCIENCE.md §4): prune a base model, fine-tune it, report its accuracy.

Output: ``{store}/models/{key}/model.pt`` (a ``vizsweep-model-v1`` checkpoint whose meta holds
the index map of structured methods), ``index_map.json`` (structured methods) and, last,
``_MANIFEST.json`` with weight_pruning_rate, filter_pruning_rate and fine_tuned_acc. A run
whose manifest exists is reused, not redone. Method ``none`` returns the base untouched.

- norm: global L1 threshold, masks fixed while fine-tuning, folded in before saving (the
  checkpoint is a plain state_dict and loads with ``build_model`` as well).
- group: ``sparse_epochs`` of Torch-Pruning group-sparse training, then structured removal
  at ``rate`` per layer, then fine-tuning.
- vulnerability: remove ``units`` of ``layer`` (ranked by ``shared.pruners.rank_by_clip_delta``
  in the orchestrator), then fine-tune.
Each method is a plugin of :mod:`shared.pruners` (``get_pruner(spec.method)``): this job only
runs its hook between loading and fine-tuning. Structured checkpoints change the architecture:
``shared.models.load_checkpoint`` rebuilds them from the index map in their meta.
Fine-tuning follows the thesis: Adam at ``lr`` (1e-5), x0.1 from ``lr_drop_at`` of the steps.
Training batches stream in a seeded order that our code defines (:class:`jobs.train_stream.TrainStream`:
in this process on one node, through Ray Data across nodes; random horizontal flips on top), and the fine-tuned accuracy is the accuracy stage's Acc(θ0) of the
variant (``jobs.accuracy``, reused by every attack's metrics): neither holds a split in
memory, so the job runs on ImageNet as on the synthetic set.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from jobs import decoded_splits
from jobs.accuracy import run_accuracy
from jobs.attack_data import split_index, steps_per_epoch
from jobs.train_stream import TrainStream
from shared import integrity, store
from shared.dataset_meta import dataset_id
from shared.device import pick_device
from shared.models import model_info, save_checkpoint
from shared.models.zoo import build_model
from shared.progress import Progress, no_progress
from shared.pruners import (
    PruneContext,
    check_method,
    check_priority,
    filter_sparsity,
    get_pruner,
    make_permanent,
    weight_pruning_rate,
)

__all__ = ["CODE_VERSION", "PruneResult", "PruneSpec", "run_prune"]

CODE_VERSION = "prune-v3"  # v3: the train stream's order is ours (jobs.train_stream); bump when pruning or fine-tuning changes what a spec produces
EXECUTION_ONLY = ("device", "cache_mb")  # settings that do not change the result: kept out of the key


@dataclass(frozen=True)
class PruneSpec:
    """Everything that determines a pruned + fine-tuned model (all but EXECUTION_ONLY is in its key)."""

    dataset: str  # dataset root URI (the base model's training data)
    model: str  # registered model name, e.g. "alexnet_mini"
    weights: str  # base checkpoint URI or torchvision weights name
    base_key: str  # content key of the base model
    method: str  # a registered pruner (shared.pruners): none | norm | group | vulnerability
    rate: float  # norm: share of weights; group: share of units per layer; vulnerability: len(units) / J
    priority: str = "filter"  # group only: "filter" removes conv filters, "weight" fully connected neurons
    units: tuple[int, ...] = ()  # vulnerability only: unit indices of `layer` to remove
    layer: str = "conv5"  # vulnerability only: alias or module path whose units are removed
    epochs: int = 1  # fine-tuning passes over the train split (thesis: 20)
    lr: float = 1e-5  # Adam learning rate (thesis: 1e-5, then 1e-6 after half the epochs)
    lr_drop_at: float = 0.5  # fraction of the fine-tuning steps after which lr is x0.1
    sparse_epochs: int = 1  # group only: epochs of group-sparse training before the removal
    sparse_reg: float = 1e-4  # group only: coefficient of Torch-Pruning's group-norm regulariser
    batch_size: int = 64  # images per optimizer step
    seed: int = 0  # shuffling, augmentation, dropout
    train_split: str = "train"  # split that is fine-tuned on
    val_split: str = "val"  # split whose top-1 is reported as fine_tuned_acc
    layout: str | None = None  # dataset layout; None = detect
    block_rows: int = 256  # rows per block that the seeded stream order permutes (jobs.train_stream)
    shuffle_buffer: int = 1024  # rows per shuffle window: consecutive blocks whose rows are permuted
    device: str = field(default="auto", compare=False)  # "auto": CUDA when present, else CPU
    cache_mb: int = field(default=2048, compare=False)  # keep the decoded train split in memory if it fits

    def __post_init__(self) -> None:
        model_info(self.model)  # unknown names fail here, listing the valid ones
        check_method(self.method, "PruneSpec.method")
        check_priority(self.priority, "PruneSpec.priority")
        object.__setattr__(self, "units", tuple(self.units))
        get_pruner(self.method).check_job(self.rate, self.units, "PruneSpec")
        for name, low in (("epochs", 1), ("batch_size", 1), ("sparse_epochs", 0), ("block_rows", 1),
                          ("shuffle_buffer", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"PruneSpec.{name}={value!r}: must be an integer >= {low}")
        if not self.lr > 0:
            raise ValueError(f"PruneSpec.lr={self.lr!r}: must be > 0")
        if not self.sparse_reg >= 0:
            raise ValueError(f"PruneSpec.sparse_reg={self.sparse_reg!r}: must be >= 0")
        if not 0.0 <= self.lr_drop_at <= 1.0:
            raise ValueError(f"PruneSpec.lr_drop_at={self.lr_drop_at!r}: must be in [0, 1]")


@dataclass(frozen=True)
class PruneResult:
    model_uri: str  # checkpoint URI (shared.models.load_checkpoint); the base's if nothing is pruned
    key: str  # content key of the pruned model (base_key for a method that prunes nothing)
    weight_rate: float  # weight pruning rate: share of the base's conv+linear weights removed or zero
    filter_rate: float  # filter pruning rate: share of the base's conv filters removed (or all-zero)
    acc: float | None  # fine-tuned top-1 on spec.val_split in [0, 1]; None when nothing was pruned
    reused: bool  # True when nothing was computed (finished run found, or a method that prunes nothing)
    index_map_uri: str | None  # index_map.json for structured methods, else None


def prune_key(spec: PruneSpec) -> str:
    fields = {k: v for k, v in asdict(spec).items() if k not in EXECUTION_ONLY}
    return store.content_key(fields, dataset_id(spec.dataset), CODE_VERSION)


def run_prune(spec: PruneSpec, store_uri: str, progress: Progress = no_progress) -> PruneResult:
    """Prune ``spec.weights`` by ``spec.method``, fine-tune, commit (or reuse a finished run)."""
    pruner = get_pruner(spec.method)
    if not pruner.prunes:
        return PruneResult(spec.weights, spec.base_key, 0.0, 0.0, None, True, None)
    t0 = time.time()
    key = prune_key(spec)
    out = store.join(store_uri, "models", key)
    model_uri = store.join(out, "model.pt")
    done = integrity.intact_manifest(out)  # a damaged checkpoint: pruned again
    if done is not None:
        imap = store.join(out, "index_map.json") if "index_map.json" in done["files"] else None
        return PruneResult(
            model_uri, key, done["weight_pruning_rate"], done["filter_pruning_rate"],
            done["fine_tuned_acc"], True, imap,
        )  # fmt: skip

    from jobs.raysetup import ensure_ray, where

    integrity.check_dataset(spec.dataset, spec.train_split)  # a damaged shard is named, with its re-import
    integrity.prepare_recompute(out)
    ensure_ray()  # joins a running cluster: its node count picks the stream's and accuracy's executors
    device = pick_device(spec.device)
    info = model_info(spec.model)
    base, meta = build_model(spec.model, weights=spec.weights)
    stream = TrainStream(spec, len(split_index(spec.dataset, spec.train_split)[0]), spec.cache_mb * 2**20)
    torch.manual_seed(spec.seed)  # dropout
    model = copy.deepcopy(base).to(device)
    example = torch.zeros(1, 3, info.preprocess.crop, info.preprocess.crop, device=device)
    history: list[dict] = []

    def train(m: nn.Module, epochs: int, phase: str, after_backward: Callable[[], None] | None) -> None:
        history.extend(_fit(m, spec, stream, device, epochs, phase, progress, after_backward))

    ctx = PruneContext(example, (info.head,), lambda layer: info.resolve_layer(layer, model), train)
    model, index_map = pruner().prune(model, spec, ctx)
    history += _fit(model, spec, stream, device, spec.epochs, "fine-tune", progress)
    decoded_splits.forget()  # this Ray worker runs other tasks next: it does not hold the decoded split
    make_permanent(model)
    model = model.cpu().to(memory_format=torch.contiguous_format)
    rates = {
        "weight_pruning_rate": weight_pruning_rate(base, model),
        "filter_pruning_rate": filter_sparsity(base, model),
    }
    record = {
        "kind": "pruned-model",
        "key": key,
        "model": spec.model,
        "method": spec.method,
        "rate": spec.rate,
        "base_key": spec.base_key,
        "spec": asdict(spec),
        "code_version": CODE_VERSION,
        **rates,
    }
    save_checkpoint(
        model, spec.model, model_uri, {"classes": meta.get("classes"), "index_map": index_map, **record}
    )
    # Acc(θ0) of the variant on V: the same stage (and key) the attacks' metrics read
    acc = (
        run_accuracy(
            spec.dataset, spec.val_split, spec.model, model_uri, store_uri, key, "init", device=spec.device
        ).acc
        / 100.0
    )
    record["fine_tuned_acc"] = acc
    files = ["model.pt"]
    if index_map is not None:
        store.write_json(store.join(out, "index_map.json"), index_map)
        files.append("index_map.json")
    num_classes = model.get_submodule(info.head).out_features
    store.write_manifest(
        out,
        {
            **record,
            "num_classes": num_classes,
            "classes": meta.get("classes"),
            "files": files,
            "history": history,
            "seconds": time.time() - t0,
            "ran_on": where(),
        },
    )
    imap = store.join(out, "index_map.json") if index_map is not None else None
    return PruneResult(
        model_uri, key, rates["weight_pruning_rate"], rates["filter_pruning_rate"], acc, False, imap
    )


def _fit(
    model: nn.Module,
    spec: PruneSpec,
    stream: TrainStream,
    device: torch.device,
    epochs: int,
    phase: str,
    progress: Progress,
    after_backward: Callable[[], None] | None = None,
) -> list[dict]:
    """Cross-entropy training with Adam; ``lr`` x0.1 from ``lr_drop_at`` of the steps (fine-tune phase).

    Epoch ``e`` of the sparse phase and of fine-tuning read different stream orders (the phase
    offsets the epoch number), each a function of the seed only.
    """
    model.to(memory_format=torch.channels_last)  # oneDNN's preferred layout (see jobs.pretrain)
    gen = torch.Generator().manual_seed(spec.seed)
    steps = steps_per_epoch(stream.rows, spec.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    drop_at = spec.lr_drop_at * epochs * steps if phase == "fine-tune" else float("inf")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1 if step >= drop_at else 1.0)
    offset = 1000 if phase == "sparse" else 0
    history = []
    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        for x, y in stream.labelled(offset + epoch, 0, device):
            flip = (torch.rand(len(x), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)  # the one augmentation kept
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            seen += len(y)
        history.append(
            {
                "phase": phase,
                "epoch": epoch + 1,
                "loss": total / max(seen, 1),
                "lr": opt.param_groups[0]["lr"],
            }
        )
        progress(epoch + 1, epochs, phase=phase, loss=history[-1]["loss"])
    return history
