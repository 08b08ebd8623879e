"""The attack job (SCIENCE.md §2): fine-tune a model on ``α·L_A + (1−α)·L_M`` (thesis Eq. 5).

Inputs: a base checkpoint and its initial top-k tables on the train split (computed or
reused through ``jobs.activations`` + ``jobs.topk``, so this job needs Ray). Training
batches stream in a seeded order (``jobs.train_stream``); every evaluation interval the top-1
accuracy on a fixed held-out subset sets the next α (``shared.alpha.next_alpha``, or
``alpha_source`` when a Tune scheduler decides), the step metrics go to ``report``, and
a checkpoint holding everything needed to continue exactly is written. Output:
``{store}/models/{key}/model.pt`` + ``_MANIFEST.json``; a rerun with the same key is
skipped. No Tune or MLflow here: the orchestrator wraps ``report`` and ``alpha_source``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from jobs.attack_data import prepare_data, steps_per_epoch
from jobs.attack_spec import CODE_VERSION, AttackSpec
from jobs.attack_state import find_checkpoint, load_state, rng_state, save_state, set_rng_state
from jobs.hold import hold_after_checkpoint
from jobs.train_stream import TrainStream
from shared import store, timing
from shared.adam import Adam
from shared.alpha import next_alpha
from shared.attacks import accuracy, accuracy_and_scores, build_attack, train_step
from shared.device import autocast, pick_device
from shared.models.zoo import build_model, save_checkpoint

__all__ = ["AttackResult", "AttackSpec", "EvalScores", "model_dir", "run_attack"]
Report = Callable[[dict[str, Any]], dict[str, Any] | None]
AlphaSource = Callable[[int, dict[str, Any]], float]


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
    result_step: int | None = None  # step whose weights are the result (< steps: budget kept, see below)
    budget_broken: bool = False  # α-controlled, and no evaluated state held the accuracy budget
    eval_scores: EvalScores | None = None  # the result's unit scores over the whole evaluation split


@dataclass(frozen=True)
class EvalScores:
    """Unit scores of the attacked layers over every readable image of the evaluation split,
    recorded by the last evaluation when its weights are the result's: the metrics stage's
    activation tables of θ on that split, without their forward pass (``jobs.activations.commit_scored``)."""

    step: int  # the evaluated step (the scores are the result's only when it is the result step)
    split: str
    ids: list[str]  # readable images, in the evaluation's order
    labels: Any  # np.ndarray [N] int64
    scores: dict[str, Any]  # layer -> np.ndarray [N, J] float32
    unreadable: list[str]  # the split's images that did not decode


def model_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "models", key)


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
            done["steps"], True, False, None, time.time() - t0, done.get("result_step"),
            bool(done.get("budget_broken", False)),
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
            _set_deterministic(True)

    def __exit__(self, *exc: object) -> None:
        _set_deterministic(self.prev)


def _set_deterministic(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` without its import of torch._inductor (3 s in a fresh
    trial worker, to set inductor's flag for compiled code, which an attack never runs); the public call
    when inductor is loaded already."""
    if "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(mode)
    else:
        torch._C._set_deterministic_algorithms(mode)


class _Trial:
    """One attack run's state and loop; the pieces are small so each can be read against Eq. 5."""

    def __init__(self, spec: AttackSpec, store_uri: str, key: str, device: torch.device) -> None:
        self.spec, self.key, self.device = spec, key, device
        self.data = prepare_data(spec, store_uri, device)
        torch.manual_seed(spec.seed)  # dropout; resumed runs restore the RNG states instead
        self.model, self.meta = build_model(spec.model, weights=spec.weights)
        self.teacher, _ = build_model(spec.model, weights=spec.weights)  # θ0, frozen (Eq. 6)
        self.teacher.to(device).eval().requires_grad_(False)
        self.attack = build_attack(spec.attack, self.data.inputs, spec.config)
        self.attack.bind(spec.model, self.teacher)
        self.model.to(device).train(self.attack.train_mode)
        self.optimizer = Adam(self.model.parameters(), lr=spec.lr)  # torch.optim.Adam without torch._dynamo
        self.amp = autocast(device, spec.amp)
        self.acc0 = self.accuracy(self.teacher)
        self.per_epoch = steps_per_epoch(self.data.train_rows, spec.batch_size)
        self.total = spec.epochs * self.per_epoch
        self.total = self.total if spec.max_steps is None else min(spec.max_steps, self.total)
        fixed = self.attack.fixed_alpha
        self.step, self.alpha, self.pending = 0, spec.alpha.alpha0 if fixed is None else fixed, False
        self.history: list[dict[str, Any]] = []
        self.last_ckpt: str | None = None
        self.kept: tuple[int, dict[str, torch.Tensor]] | None = None  # last evaluated state within budget
        self.eval_scores: EvalScores | None = None  # what a recording evaluation kept

    def accuracy(self, model: torch.nn.Module, record: bool = False) -> float:
        """Top-1 on the evaluation subset; ``record``: keep the layers' unit scores too (:class:`EvalScores`)."""
        ev, spec = self.data.eval, self.spec
        with timing.part("eval"):
            if not record:
                return accuracy(model, ev.pixels, ev.labels, spec.eval_batch_size, self.amp)
            acc, scores = accuracy_and_scores(
                model, spec.model, spec.layers, ev.pixels, ev.labels, spec.eval_batch_size, self.amp
            )
        self.eval_scores = EvalScores(self.step, spec.eval_split, list(ev.ids), ev.labels.cpu().numpy(),
                                      {k: v.numpy() for k, v in scores.items()}, list(ev.unreadable))  # fmt: skip
        return acc

    def records_tables(self) -> bool:
        """Whether the last evaluation is also the metrics stage's forward pass over the split: it
        classifies every image of it, in fp32 (the tables are fp32; ``amp`` changes the scores)."""
        ev = self.data.eval
        return not self.spec.amp and len(ev.labels) > 0 and self.spec.eval_images >= ev.split_rows

    def resume(self, path: str, alpha_source: AlphaSource | None) -> None:
        state = load_state(find_checkpoint(path), self.key)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        timer = timing.current()
        if timer is not None:  # the trial's cost sums its attempts (each up to its last checkpoint)
            timer.carry(state.get("costs", {}))
        self.step, self.alpha, self.history = state["step"], state["alpha"], list(state["history"])
        if state.get("kept_step") is not None:
            kept = state["kept_model"] if state["kept_model"] is not None else state["model"]
            self.kept = (int(state["kept_step"]), {k: v.clone() for k, v in kept.items()})
        if state["alpha_pending"]:  # stopped between its report and the scheduler's answer: ask again
            self.alpha = _ask(alpha_source, self.step, self.history[-1])

    def train(
        self, report: Report | None, checkpoint_dir: str | None, alpha_source: AlphaSource | None
    ) -> bool:
        """Steps until the end (returns False) or until ``report`` asks to stop (returns True)."""
        with timing.part("train"):  # decoding (and caching) the train split feeds the steps
            stream = TrainStream(self.spec, self.data.train_rows, self.spec.cache_mb * 2**20)
        boundaries = _boundaries(self.per_epoch, self.spec.evals_per_epoch)
        sums, count = [0.0, 0.0], 0
        while self.step < self.total:
            epoch, pos = divmod(self.step, self.per_epoch)
            for pixels, labels in _timed(stream.labelled(epoch, skip=pos, device=self.device), "train"):
                with timing.part("train"):
                    batch = self.attack.batch(pixels, labels, self.step, self.spec.seed)
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
        acc = self.accuracy(self.model, record=self.step == self.total and self.records_tables())
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
        if metrics["acc_drop"] <= self.spec.alpha.max_drop_pp:
            # SCIENCE.md §2's budget: under the α controller the result is the last state that held it
            self.kept = (
                self.step,
                {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            )
        return metrics

    def result_state(self) -> tuple[int, bool]:
        """(result step, budget broken); the model is set to the result's weights (see result_choice)."""
        controlled = self.attack.fixed_alpha is None
        step, broken = result_choice(self.history, self.spec.alpha.max_drop_pp, controlled, self.step)
        if step != self.step and self.kept is not None and self.kept[0] == step:
            self.model.load_state_dict(self.kept[1])
        return step, broken

    def after_eval(self, metrics, report, checkpoint_dir, alpha_source) -> bool:
        """Checkpoint (if due), report, then take a scheduler's α; True when report asked to stop.

        No checkpoint after the last step unless the run stops there: the model is committed next,
        and a crash before that only repeats the last interval (a resumed run gives the same weights).
        """
        due = checkpoint_dir is not None and len(self.history) % self.spec.checkpoint_every == 0
        due = due and self.step < self.total
        ckpt = self.save(checkpoint_dir) if due else None
        stop = _wants_stop(report({**metrics, "checkpoint": ckpt}) if report is not None else None)
        if stop and ckpt is None and checkpoint_dir is not None:
            ckpt = self.save(checkpoint_dir)
        self.last_ckpt = ckpt or self.last_ckpt
        if ckpt is not None:
            hold_after_checkpoint(self.spec.attack, self.step)  # tests only: a named attack waits here
        if self.pending:
            self.alpha, self.pending = _ask(alpha_source, self.step, metrics), False
        return stop

    def save(self, checkpoint_dir: str) -> str:
        state = {
            "key": self.key, "spec": asdict(self.spec), "step": self.step, "alpha": float(self.alpha),
            "alpha_pending": self.pending, "history": self.history, "acc0": self.acc0,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
            "kept_step": None if self.kept is None else self.kept[0],
            # the kept state is usually this step's own weights: then only its step is saved
            "kept_model": None if self.kept is None or self.kept[0] == self.step else self.kept[1],
        }  # fmt: skip
        with timing.part("save"):
            timer = timing.current()
            state["costs"] = {} if timer is None else timer.totals()  # summed again on resume
            return save_state(checkpoint_dir, self.step, state, self.spec.keep_checkpoints)


def _run(spec, store_uri, key, device, report, checkpoint_dir, resume_from, alpha_source, t0) -> AttackResult:
    trial = _Trial(spec, store_uri, key, device)
    if resume_from is not None:
        trial.resume(resume_from, alpha_source)
    stopped = trial.train(report, checkpoint_dir, alpha_source)
    result_step, broken = trial.result_state() if not stopped else (trial.step, False)
    by_step = {h["step"]: h for h in trial.history}
    final_acc = by_step[result_step]["acc"] if result_step in by_step else trial.acc0
    uri = None
    if not stopped:
        outcome = {"result_step": result_step, "budget_broken": broken}
        uri = _commit(spec, store_uri, key, trial, final_acc, time.time() - t0, outcome)
        _share_accuracy(spec, store_uri, key, trial, result_step, uri)
    scored = trial.eval_scores
    return AttackResult(
        uri, key, trial.history, final_acc, trial.acc0, trial.step, False, stopped, trial.last_ckpt,
        time.time() - t0, result_step, broken,
        scored if uri is not None and scored is not None and scored.step == result_step else None,
    )  # fmt: skip


def _share_accuracy(
    spec: AttackSpec, store_uri: str, key: str, trial: _Trial, result_step: int, uri: str
) -> None:
    """Acc on the split, committed from the evaluations when they classified all of it (one forward
    pass over V fewer in the metrics stage): the result state's, and θ0's unless committed already.

    Only in fp32 (``amp`` off): the metrics stage classifies in fp32, and the two must agree.
    """
    from jobs.accuracy import commit_counted, committed_accuracy

    ev = trial.data.eval
    rows = len(ev.labels)
    by_step = {h["step"]: h for h in trial.history}
    if spec.amp or rows == 0 or spec.eval_images < ev.split_rows or result_step not in by_step:
        return
    base = (spec.dataset, spec.eval_split, spec.model)
    common = {"rows": rows, "corrupt": ev.split_rows - rows}
    if committed_accuracy(*base, spec.weights, store_uri, spec.variant_key, "init") is None:
        commit_counted(*base, spec.weights, store_uri, spec.variant_key, "init",
                       correct=round(trial.acc0 * rows), source="attack evaluation of θ0", **common)  # fmt: skip
    commit_counted(*base, uri, store_uri, spec.variant_key, key, correct=round(by_step[result_step]["acc"] * rows),
                   source=f"attack evaluation at step {result_step}", **common)  # fmt: skip


def result_choice(
    history: list[dict[str, Any]], max_drop_pp: float, controlled: bool, last_step: int
) -> tuple[int, bool]:
    """Which evaluated state is an α-controlled run's result (SCIENCE.md §2's accuracy budget).

    The last state, when it holds the budget or α does not drive the run; else the last
    evaluated state that held it; else the last state, marked ``budget broken`` so that no
    report shows it as a silent row.
    """
    if not controlled or not history or history[-1]["acc_drop"] <= max_drop_pp:
        return last_step, False
    held = [h["step"] for h in history if h["acc_drop"] <= max_drop_pp]
    return (int(held[-1]), False) if held else (last_step, True)


def _timed(items: Iterable[Any], part: str) -> Iterator[Any]:
    """``items``, each ``next`` charged to ``part`` (the training stream's decode and copy are training)."""
    it = iter(items)
    while True:
        with timing.part(part):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _boundaries(per_epoch: int, evals: int) -> set[int]:
    """Positions in an epoch after which an evaluation runs: ``evals`` evenly spaced, the last at the end."""
    return {max(1, round((i + 1) * per_epoch / evals)) for i in range(evals)}


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


def _commit(spec, store_uri, key, trial: _Trial, final_acc, seconds, outcome: dict[str, Any]) -> str:
    with timing.part("save"):
        return _write_model(spec, store_uri, key, trial, final_acc, seconds, outcome)


def _write_model(spec, store_uri, key, trial: _Trial, final_acc, seconds, outcome: dict[str, Any]) -> str:
    out = model_dir(store_uri, key)
    uri = store.join(out, "model.pt")
    info = {"key": key, "spec": asdict(spec), "code_version": CODE_VERSION, "acc0": trial.acc0,
            "final_acc": final_acc, **outcome}  # fmt: skip
    # a structured-pruned variant keeps its index map, or its attacked model could not be rebuilt
    meta = trial.meta
    shape = {"index_map": meta["index_map"]} if meta.get("index_map") else {}
    save_checkpoint(trial.model.cpu(), spec.model, uri, {"classes": meta.get("classes"), **shape, **info})
    store.write_manifest(
        out,
        {
            "kind": "attacked-model", **info, "model": spec.model, "files": ["model.pt"],
            "history": trial.history, "steps": trial.step, "train_seconds": seconds,
            "inputs": {"dataset": spec.dataset, "weights": spec.weights, "variant_key": spec.variant_key},
        },
    )  # fmt: skip
    return uri
