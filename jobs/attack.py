"""The attack job (SCIENCE.md §2): fine-tune a model on ``α·L_A + (1−α)·L_M`` (thesis Eq. 5).

Inputs: a base checkpoint and its initial top-k tables on the train split (computed or
reused through ``jobs.activations`` + ``jobs.topk``, so this job needs Ray). Training
batches stream through Ray Data in a seeded order; every evaluation interval the top-1
accuracy on a fixed held-out subset sets the next α (``shared.alpha.next_alpha``, or
``alpha_source`` when a Tune scheduler decides), the step metrics go to ``report``, and
a checkpoint holding everything needed to continue exactly is written. Output:
``{store}/models/{key}/model.pt`` + ``_MANIFEST.json``; a rerun with the same key is
skipped. No Tune or MLflow here: the orchestrator wraps ``report`` and ``alpha_source``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from jobs.attack_data import AttackData, prepare_data, steps_per_epoch
from jobs.attack_state import find_checkpoint, load_state, rng_state, save_state, set_rng_state
from jobs.train_stream import TrainStream
from shared import store
from shared.alpha import AlphaConfig, next_alpha
from shared.attacks import SCALES, StepBatch, accuracy, build_attack, get_attack, sample_rows, train_step
from shared.device import autocast, pick_device
from shared.models.zoo import build_model, model_info, save_checkpoint

CODE_VERSION = "attack-v1"  # bump when the loop changes what a spec produces
EXECUTION_ONLY = ("device", "checkpoint_every", "keep_checkpoints", "eval_batch_size", "cache_mb")
Report = Callable[[dict[str, Any]], dict[str, Any] | None]
AlphaSource = Callable[[int, dict[str, Any]], float]


@dataclass(frozen=True)
class AttackSpec:
    """Everything that determines an attacked model (all but EXECUTION_ONLY goes into its key)."""

    dataset: str  # dataset root URI (any layout shared.datasets reads)
    model: str  # registered model name, e.g. "alexnet_mini"
    weights: str  # base checkpoint URI (the variant being attacked)
    variant_key: str  # content key of that variant: its initial tables live under model={variant_key}
    attack: str  # registered attack: "finetune", "push-down" or "push-up"
    layers: tuple[str, ...] = ("conv5",)  # scope: one layer (default) or several (mean of per-layer L_A)
    units: str | tuple[int, ...] = "all"  # "all" units of each layer, or unit indices (one unit: (j,))
    scale: str = "unit"  # "unit": L_A divided by s_j (SCIENCE.md deviation); "none": raw Eq. 7/8
    k: int = 10  # D_attack^j = initial top-k of unit j on the train split; s_j averages over them
    decoy_class: int = 1  # push-up: label of the decoy class (ImageNet: goldfish)
    decoy_images: int = 100  # push-up: |D_decoy|, random train images of decoy_class (seeded)
    alpha: AlphaConfig = AlphaConfig()  # α rule settings (α0 0.1, cap 0.95, halve above 0.5 pp drop)
    # Thesis: Adam 1e-5 for 5 ImageNet epochs (25k steps of 256). alexnet_mini on 4,800 synthetic
    # images gets ~150 steps in a 5-minute CPU budget: 1e-4 moves conv5's top-k there while the
    # α rule holds the accuracy drop (benchmarks/attack_goals.py).
    lr: float = 1e-4  # Adam learning rate
    batch_size: int = 64  # training images per step (B of Eq. 8)
    epochs: int = 2  # passes over the train split
    max_steps: int | None = None  # stop after this many steps (None: epochs x steps per epoch)
    evals_per_epoch: int = 10  # evaluation intervals per epoch (α update, report, checkpoint)
    eval_split: str = "val"  # split the fixed evaluation subset is drawn from (held out from training)
    eval_images: int = 2000  # size of that subset (seeded; the whole split when smaller)
    attack_batch_size: int | None = 64  # push-down: D_attack images per step, sampled (None: all)
    decoy_batch_size: int | None = 32  # push-up: D_decoy images per step, sampled (P of Eq. 8; None: all)
    shuffle_buffer: int = 1024  # rows in Ray Data's seeded local shuffle buffer
    block_rows: int = 256  # rows per block that the seeded randomize_block_order permutes
    train_split: str = "train"  # the split D that is trained on and whose top-k is attacked
    seed: int = 0  # data order, subsets, dropout
    amp: bool = False  # bf16 autocast (changes the numerics, hence in the key)
    # Execution settings: they do not change the result, so they stay out of the key.
    device: str = field(default="auto", compare=False)  # "auto": CUDA when present, else CPU
    checkpoint_every: int = field(default=1, compare=False)  # in evaluation intervals
    keep_checkpoints: int = field(default=2, compare=False)  # newest step-* folders kept
    eval_batch_size: int = field(default=256, compare=False)  # images per forward when evaluating
    cache_mb: int = field(
        default=2048, compare=False
    )  # keep the decoded train split in Ray's store if it fits

    def __post_init__(self) -> None:
        get_attack(self.attack)  # unknown names fail here, listing the valid ones
        info = model_info(self.model)
        if isinstance(self.layers, str) or not self.layers:
            raise ValueError(f"AttackSpec.layers={self.layers!r}: give a non-empty list, e.g. ['conv5']")
        object.__setattr__(self, "layers", tuple(self.layers))
        for layer in self.layers:
            info.resolve_layer(layer)
        if self.units != "all":
            if (
                isinstance(self.units, str)
                or not self.units
                or not all(_is_int(u) and u >= 0 for u in self.units)
            ):
                raise ValueError(
                    f"AttackSpec.units={self.units!r}: 'all' or a non-empty list of unit indices >= 0"
                )
            object.__setattr__(self, "units", tuple(sorted(set(int(u) for u in self.units))))
        if self.scale not in SCALES:
            raise ValueError(f"AttackSpec.scale={self.scale!r}: valid scales are {', '.join(SCALES)}")
        if isinstance(self.alpha, dict):
            object.__setattr__(self, "alpha", AlphaConfig(**self.alpha))
        positive = ("k", "decoy_images", "batch_size", "epochs", "evals_per_epoch", "eval_images")
        positive += (
            "shuffle_buffer",
            "block_rows",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_batch_size",
            "cache_mb",
        )
        for name in positive + ("max_steps", "attack_batch_size", "decoy_batch_size"):
            value = getattr(self, name)
            if (value is not None or name in positive) and not (_is_int(value) and value >= 1):
                raise ValueError(f"AttackSpec.{name}={value!r}: must be an integer >= 1")
        if not (_is_int(self.decoy_class) and self.decoy_class >= 0):
            raise ValueError(f"AttackSpec.decoy_class={self.decoy_class!r}: must be a class index >= 0")
        if not self.lr > 0:
            raise ValueError(f"AttackSpec.lr={self.lr!r}: must be > 0")

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}

    def key(self, dataset_id: str) -> str:
        return store.content_key(self.identity(), dataset_id, CODE_VERSION)


@dataclass
class AttackResult:
    model_uri: str | None  # committed attacked model; None when the run was stopped early
    key: str  # content key (state_key of the final activation tables)
    history: list[dict[str, Any]]  # one entry per evaluation (the reported step metrics)
    final_acc: float | None  # top-1 on the evaluation subset after the last step, in [0, 1]
    acc0: float | None  # the same for the initial model
    steps: int  # optimizer steps taken in total
    skipped: bool  # True when a committed run with this key was found
    stopped: bool  # True when report asked to stop before the end
    checkpoint: str | None  # newest checkpoint written (None when none was)
    seconds: float  # wall time of this call


def model_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "models", key)


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def run_attack(
    spec: AttackSpec,
    store_uri: str,
    report: Report | None = None,
    checkpoint_dir: str | None = None,
    resume_from: str | None = None,
    alpha_source: AlphaSource | None = None,
) -> AttackResult:
    """Run (or reuse) one attack; see the module docstring for the loop.

    ``report(metrics)`` gets each evaluation's step metrics (plus ``checkpoint``: the folder
    written at that step or None) and may return ``{"stop": True}`` to end the run after a
    checkpoint. ``alpha_source(step, metrics)``, when given, replaces the α rule: it is asked
    for the next α after each report (a Tune scheduler's decision, handed back).
    """
    from jobs.raysetup import ensure_ray
    from shared.dataset_meta import dataset_id

    t0 = time.time()
    key = spec.key(dataset_id(spec.dataset))
    out = model_dir(store_uri, key)
    done = store.read_manifest(out)
    if done is not None and done.get("key") == key:
        return AttackResult(
            store.join(out, "model.pt"), key, done["history"], done["final_acc"], done["acc0"],
            done["steps"], True, False, None, time.time() - t0,
        )  # fmt: skip
    ensure_ray()
    device = pick_device(spec.device)
    with _deterministic(device):
        return _run(spec, store_uri, key, device, report, checkpoint_dir, resume_from, alpha_source, t0)


class _deterministic:
    """``torch.use_deterministic_algorithms`` on CPU for the run (CUDA would need CUBLAS settings)."""

    def __init__(self, device: torch.device) -> None:
        self.on = device.type == "cpu"

    def __enter__(self) -> None:
        self.prev = torch.are_deterministic_algorithms_enabled()
        if self.on:
            torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.prev)


class _Trial:
    """One attack run's state and loop; the pieces are small so each can be read against Eq. 5."""

    def __init__(self, spec: AttackSpec, store_uri: str, key: str, device: torch.device) -> None:
        self.spec, self.key, self.device = spec, key, device
        self.data = prepare_data(spec, store_uri, device)
        torch.manual_seed(spec.seed)  # dropout; resumed runs restore the RNG states instead
        self.model, self.meta = build_model(spec.model, weights=spec.weights)
        self.teacher, _ = build_model(spec.model, weights=spec.weights)  # θ0, frozen (Eq. 6)
        self.model.to(device).train()
        self.teacher.to(device).eval().requires_grad_(False)
        self.attack = build_attack(spec.attack, self.data.targets)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec.lr)
        self.amp = autocast(device, spec.amp)
        self.acc0 = self.accuracy(self.teacher)
        self.per_epoch = steps_per_epoch(self.data.train_rows, spec.batch_size)
        self.total = spec.epochs * self.per_epoch
        self.total = self.total if spec.max_steps is None else min(spec.max_steps, self.total)
        fixed = self.attack.fixed_alpha
        self.step, self.alpha, self.pending = 0, spec.alpha.alpha0 if fixed is None else fixed, False
        self.history: list[dict[str, Any]] = []
        self.last_ckpt: str | None = None

    def accuracy(self, model: torch.nn.Module) -> float:
        return accuracy(
            model, self.data.eval_pixels, self.data.eval_labels, self.spec.eval_batch_size, self.amp
        )

    def resume(self, path: str, alpha_source: AlphaSource | None) -> None:
        state = load_state(find_checkpoint(path), self.key)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step, self.alpha, self.history = state["step"], state["alpha"], list(state["history"])
        if state["alpha_pending"]:  # stopped between its report and the scheduler's answer: ask again
            self.alpha = _ask(alpha_source, self.step, self.history[-1])

    def train(
        self, report: Report | None, checkpoint_dir: str | None, alpha_source: AlphaSource | None
    ) -> bool:
        """Steps until the end (returns False) or until ``report`` asks to stop (returns True)."""
        stream = TrainStream(self.spec, self.data.train_rows, self.spec.cache_mb * 2**20)
        boundaries = _boundaries(self.per_epoch, self.spec.evals_per_epoch)
        sums, count = [0.0, 0.0], 0
        while self.step < self.total:
            epoch, pos = divmod(self.step, self.per_epoch)
            for pixels in stream.epoch(epoch, skip=pos, device=self.device):
                batch = _step_batch(self.spec, self.data, pixels, self.step)
                losses = train_step(
                    self.model,
                    self.spec.model,
                    self.teacher,
                    self.attack,
                    batch,
                    self.alpha,
                    self.optimizer,
                    self.amp,
                )
                sums, count = [sums[0] + losses.attack, sums[1] + losses.maintain], count + 1
                self.step, pos = self.step + 1, pos + 1
                if pos in boundaries or self.step == self.total:
                    metrics = self.evaluate(sums[0] / count, sums[1] / count, alpha_source is None)
                    sums, count = [0.0, 0.0], 0
                    if self.after_eval(metrics, report, checkpoint_dir, alpha_source):
                        return True
                if self.step >= self.total:
                    break
            if pos < self.per_epoch and self.step < self.total:
                raise RuntimeError(
                    f"epoch {epoch} of {self.spec.train_split!r} gave {pos} batches, expected {self.per_epoch}: "
                    f"did the dataset change under the run? (its key is fixed at the start)"
                )
        return False

    def evaluate(self, attack_loss: float, maintain_loss: float, use_rule: bool) -> dict[str, Any]:
        """Step metrics of the interval just finished; the α rule runs here unless a scheduler decides."""
        acc = self.accuracy(self.model)
        metrics: dict[str, Any] = {
            "step": self.step, "epoch": self.step / self.per_epoch, "attack_loss": float(attack_loss),
            "maintain_loss": float(maintain_loss), "alpha": float(self.alpha), "acc": acc,
            "acc_drop": 100.0 * (self.acc0 - acc), "acc0": self.acc0,
        }  # fmt: skip
        fixed = self.attack.fixed_alpha is not None
        if not fixed and use_rule:
            decision = next_alpha(self.alpha, metrics["acc_drop"], self.spec.alpha)
            metrics.update(decision.as_metrics())
            self.alpha = decision.alpha
        self.pending = not fixed and not use_rule
        self.history.append(metrics)
        return metrics

    def after_eval(self, metrics, report, checkpoint_dir, alpha_source) -> bool:
        """Checkpoint (if due), report, then take a scheduler's α; True when report asked to stop."""
        due = checkpoint_dir is not None and len(self.history) % self.spec.checkpoint_every == 0
        ckpt = self.save(checkpoint_dir) if due else None
        stop = _wants_stop(report({**metrics, "checkpoint": ckpt}) if report is not None else None)
        if stop and ckpt is None and checkpoint_dir is not None:
            ckpt = self.save(checkpoint_dir)
        self.last_ckpt = ckpt or self.last_ckpt
        if self.pending:
            self.alpha, self.pending = _ask(alpha_source, self.step, metrics), False
        return stop

    def save(self, checkpoint_dir: str) -> str:
        state = {
            "key": self.key, "spec": asdict(self.spec), "step": self.step, "alpha": float(self.alpha),
            "alpha_pending": self.pending, "history": self.history, "acc0": self.acc0,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
        }  # fmt: skip
        return save_state(checkpoint_dir, self.step, state, self.spec.keep_checkpoints)


def _run(spec, store_uri, key, device, report, checkpoint_dir, resume_from, alpha_source, t0) -> AttackResult:
    trial = _Trial(spec, store_uri, key, device)
    if resume_from is not None:
        trial.resume(resume_from, alpha_source)
    stopped = trial.train(report, checkpoint_dir, alpha_source)
    final_acc = trial.history[-1]["acc"] if trial.history else trial.acc0
    uri = None
    if not stopped:
        uri = _commit(
            spec,
            store_uri,
            key,
            trial.model,
            trial.meta,
            trial.history,
            final_acc,
            trial.acc0,
            trial.step,
            time.time() - t0,
        )
    return AttackResult(
        uri,
        key,
        trial.history,
        final_acc,
        trial.acc0,
        trial.step,
        False,
        stopped,
        trial.last_ckpt,
        time.time() - t0,
    )


def _boundaries(per_epoch: int, evals: int) -> set[int]:
    """Positions in an epoch after which an evaluation runs: ``evals`` evenly spaced, the last at the end."""
    return {max(1, round((i + 1) * per_epoch / evals)) for i in range(evals)}


def _step_batch(spec: AttackSpec, data: AttackData, pixels: torch.Tensor, step: int) -> StepBatch:
    """The training batch plus this step's D_attack / D_decoy samples (pure functions of seed and step)."""
    batch = StepBatch(train=pixels)
    if data.attack_pixels is not None:
        rows = sample_rows(len(data.attack_pixels), spec.attack_batch_size, spec.seed, step, 1)
        batch.attack, batch.attack_rows = data.attack_pixels[rows], rows.to(pixels.device)
    if data.decoy_pixels is not None:
        take = None if get_attack(spec.attack).all_decoys else spec.decoy_batch_size
        rows = sample_rows(len(data.decoy_pixels), take, spec.seed, step, 2)
        batch.decoy = data.decoy_pixels[rows]
    return batch


def _ask(alpha_source: AlphaSource | None, step: int, metrics: dict[str, Any]) -> float:
    if alpha_source is None:
        raise ValueError(
            "the checkpoint waits for an α decision from an alpha_source (it was written by a run that had one); "
            "pass alpha_source to resume it"
        )
    alpha = alpha_source(step, metrics)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha_source returned {alpha!r} at step {step}: α must be a number in (0, 1)")
    return float(alpha)


def _wants_stop(reply: dict[str, Any] | None) -> bool:
    if reply is None:
        return False
    if not isinstance(reply, dict) or set(reply) - {"stop"}:
        raise ValueError(f"report returned {reply!r}: expected None or a dict with only the key 'stop'")
    return bool(reply.get("stop", False))


def _commit(spec, store_uri, key, model, meta, history, final_acc, acc0, steps, seconds) -> str:
    out = model_dir(store_uri, key)
    uri = store.join(out, "model.pt")
    info = {
        "key": key,
        "spec": asdict(spec),
        "code_version": CODE_VERSION,
        "acc0": acc0,
        "final_acc": final_acc,
    }
    # a structured-pruned variant keeps its index map, or its attacked model could not be rebuilt
    shape = {"index_map": meta["index_map"]} if meta.get("index_map") else {}
    save_checkpoint(model.cpu(), spec.model, uri, {"classes": meta.get("classes"), **shape, **info})
    store.write_manifest(
        out,
        {
            "kind": "attacked-model", **info, "model": spec.model, "files": ["model.pt"], "history": history,
            "steps": steps, "train_seconds": seconds,
            "inputs": {"dataset": spec.dataset, "weights": spec.weights, "variant_key": spec.variant_key},
        },
    )  # fmt: skip
    return uri
