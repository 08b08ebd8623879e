"""Trial runners: how a family's trials train and are measured, behind one interface.

The orchestrator plans a :class:`TrialJob` (JSON-able, family-agnostic), asks the runner the
family record names (``AttackFamily.runner``) for its keys and stored result, and runs it with
the hooks of a Tune trial. ``finetuning`` is the shared fine-tuning loop (``jobs.attack``) plus
the unit-metrics stage (``jobs.metrics``); families that perturb inputs register their own.
No Tune or MLflow here: ``report`` and ``alpha_source`` come from the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jobs import featureviz_stage
from jobs.activations import commit_scored
from jobs.attack import AlphaSource, AttackResult, Report, model_dir, run_attack
from jobs.attack_spec import AttackSpec
from jobs.metrics import MetricsResult, MetricsSpec, committed_metrics, draw_pictures, run_metrics
from shared import store, timing
from shared.attacks import family_of
from shared.registry import Registry

LOOP_SETTINGS = ("lr", "batch_size", "epochs", "max_steps", "evals_per_epoch", "eval_images", "amp")


@dataclass(frozen=True)
class TrialJob:
    """One trial of any family, as the orchestrator plans it (JSON-able through :meth:`to_dict`)."""

    attack: str  # a registered attack; its family's runner runs the trial
    config: dict[str, Any]  # the family's job settings (AttackFamily.job_config)
    dataset: str  # dataset root URI
    model: str  # registered model name
    weights: str  # the variant's checkpoint URI or torchvision weights name
    variant_key: str  # content key of the variant (its tables live under model={variant_key})
    layers: tuple[str, ...]  # the trial's layer scope
    units: str | tuple[int, ...]  # "all" or unit indices
    seed: int
    train_split: str
    val_split: str
    training: dict[str, Any] = field(default_factory=dict)  # the shared loop's settings (LOOP_SETTINGS)
    alpha: dict[str, Any] = field(default_factory=dict)  # AlphaConfig fields
    evaluation: dict[str, Any] = field(default_factory=dict)  # the metrics settings of the spec
    # A trial on another trial's model (AttackFamily.starts_from): that trial's attack key, and then
    # ``weights`` is its model, filled in by the orchestrator once it is trained; "": the variant itself.
    start_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return store.json_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialJob:
        d = dict(d)
        d["layers"] = tuple(d["layers"])
        if d["units"] != "all":
            d["units"] = tuple(d["units"])
        return cls(**d)

    @property
    def family(self) -> str:
        return family_of(self.attack).name


@dataclass
class TrialOutcome:
    """What a finished (or stored) trial produced; the orchestrator logs it."""

    attack_key: str
    model_uri: str | None  # the attacked model; None when stopped early
    history: list[dict[str, Any]]  # step metrics, one entry per evaluation
    final: dict[str, float]  # final metrics (MLflow names)
    artifacts: list[tuple[str, str]]  # (store URI, file name at the run's artifact root)
    unit_tables: dict[str, str] = field(default_factory=dict)  # "layer/split" -> per-unit table URI
    budget_broken: bool = False
    # Seconds per part of this run (shared.timing: train_s, eval_s, tables_s, metrics_s, other_s,
    # wall_s, ...); empty for an outcome read from the store. Costs, not results: kept out of ``final``.
    costs: dict[str, float] = field(default_factory=dict)


class Runner:
    """Base class: keys, stored results and the run of one family's trials."""

    name: ClassVar[str] = ""
    draws_after: ClassVar[bool] = False  # True: :meth:`pictures` has pictures to draw after the trial

    def attack_key(self, job: TrialJob, dataset_id: str) -> str:
        raise NotImplementedError

    def trial_key(self, job: TrialJob, dataset_id: str) -> str:
        raise NotImplementedError

    def stored(self, job: TrialJob, store_uri: str) -> TrialOutcome | None:
        """The committed outcome, or None when anything is unfinished (reads manifests only)."""
        raise NotImplementedError

    def run(
        self,
        job: TrialJob,
        store_uri: str,
        report: Report | None = None,
        checkpoint_dir: str | None = None,
        resume_from: str | None = None,
        alpha_source: AlphaSource | None = None,
    ) -> TrialOutcome | None:
        """Train and measure; None when ``report`` stopped the run early."""
        raise NotImplementedError

    def pictures(self, job: TrialJob, store_uri: str) -> list[tuple[str, str]]:
        """The pictures of a finished trial that :meth:`run` left to draw, drawn now unless they are
        already: ``(store URI, file name at the run's artifact root)``. CPU work only, so the sweep runs
        it after the trial has handed back its GPU. None by default (a family draws its own in ``run``)."""
        return []


RUNNERS: Registry[Runner] = Registry("trial runner")


def _commit_eval_tables(mspec: MetricsSpec, store_uri: str, res: AttackResult) -> None:
    """θ's activation tables on the evaluation split from the last evaluation's unit scores, when it
    recorded them (``jobs.attack.EvalScores``): the metrics stage then finds them committed and
    skips that forward pass over the split."""
    ev = res.eval_scores
    if ev is None or ev.split not in (mspec.val_split, *mspec.splits) or set(ev.scores) != set(mspec.layers):
        return
    with timing.part("tables"):
        commit_scored(mspec.activations("final", ev.split), store_uri, ev.ids, ev.labels, ev.scores,
                      ev.unreadable, source="attack evaluation")  # fmt: skip


def register_runner(cls: type[Runner]) -> type[Runner]:
    RUNNERS.register(cls.name)(cls())
    return cls


def runner_for(attack: str) -> Runner:
    """The runner of the family that declares ``attack``."""
    return RUNNERS.get(family_of(attack).runner)


@register_runner
class FineTuneRunner(Runner):
    """The shared fine-tuning loop (Eq. 5 with the attack's loss hooks), then the §3 metrics."""

    name = "finetuning"
    draws_after = True

    def attack_spec(self, job: TrialJob, **execution: Any) -> AttackSpec:
        """The loop's spec; ``execution`` overrides settings (execution-only ones, or max_steps in tests)."""
        t = {k: job.training[k] for k in LOOP_SETTINGS if k in job.training}
        t |= {k: job.config[k] for k in LOOP_SETTINGS if job.config.get(k) is not None}  # an entry's own lr
        return AttackSpec(
            dataset=job.dataset, model=job.model, weights=job.weights, variant_key=job.variant_key,
            attack=job.attack, config=job.config, layers=job.layers, units=job.units, alpha=job.alpha,
            eval_split=job.val_split, train_split=job.train_split, seed=job.seed, **{**t, **execution},
        )  # fmt: skip

    def metrics_spec(self, job: TrialJob, store_uri: str, dataset_id: str) -> MetricsSpec:
        e = job.evaluation
        akey = self.attack_key(job, dataset_id)
        return MetricsSpec(
            dataset=job.dataset, model=job.model, variant_key=job.variant_key, init_weights=job.weights,
            final_weights=store.join(model_dir(store_uri, akey), "model.pt"), final_state_key=akey,
            layers=job.layers, units=job.units, k=e["k"], tau_images=e["tau_images"], tau_seed=job.seed,
            val_split=job.val_split, splits=tuple(e["splits"]), embedder=e["embedder"],
            picture_units=_picture_units(e["picture_units"]), decoy_class=job.config.get("decoy_class"), label=job.attack,
        )  # fmt: skip

    def attack_key(self, job: TrialJob, dataset_id: str) -> str:
        return self.attack_spec(job).key(dataset_id)

    def trial_key(self, job: TrialJob, dataset_id: str) -> str:
        # the metrics spec's keyed fields do not depend on the store's location
        m = self.metrics_spec(job, "/", dataset_id)
        keyed = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.compare}
        keyed.pop("final_weights")
        fv = featureviz_stage.keyed(job.evaluation)  # only when on: keys of sweeps without it unchanged
        extra = () if fv is None else ({"featureviz": fv},)
        return store.content_key(self.attack_key(job, dataset_id), store.json_plain(keyed), *extra)

    def committed_attack(self, job: TrialJob, store_uri: str, dataset_id: str) -> tuple[str, dict | None]:
        """(attack key, its committed manifest or None): the trained half of a stored trial."""
        akey = self.attack_key(job, dataset_id)
        am = store.read_manifest(model_dir(store_uri, akey))
        return akey, am if am is not None and am.get("key") == akey else None

    def stored(self, job: TrialJob, store_uri: str) -> TrialOutcome | None:
        from shared.dataset_meta import dataset_id

        ds_id = dataset_id(job.dataset)
        akey, am = self.committed_attack(job, store_uri, ds_id)
        if am is None:
            return None
        mres = committed_metrics(self.metrics_spec(job, store_uri, ds_id), store_uri)
        if mres is None:
            return None
        fv = None
        if featureviz_stage.settings(job.evaluation) is not None:
            fv = featureviz_stage.committed_stage(job, store_uri, akey, mres)
            if fv is None:
                return None
        return self._outcome(job, akey, store.join(model_dir(store_uri, akey), "model.pt"), am, mres, fv)

    def run(self, job, store_uri, report=None, checkpoint_dir=None, resume_from=None, alpha_source=None):
        from shared.dataset_meta import dataset_id

        with trial_timer() as timer:
            spec = self.attack_spec(job)
            res = run_attack(
                spec, store_uri, report=report, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                alpha_source=alpha_source,
            )  # fmt: skip
            if res.stopped or res.model_uri is None:
                return None
            mspec = self.metrics_spec(job, store_uri, dataset_id(job.dataset))
            _commit_eval_tables(mspec, store_uri, res)
            with timing.part("metrics"):  # the pictures are drawn after the trial (``pictures``)
                mres = run_metrics(mspec, store_uri, pictures=False)
            fv = None
            if featureviz_stage.settings(job.evaluation) is not None:  # timed as the "featureviz" part
                fv = featureviz_stage.run_stage(job, store_uri, res.key, res.model_uri, mres)
            am = {"history": res.history, "result_step": res.result_step, "budget_broken": res.budget_broken}
            outcome = self._outcome(job, res.key, res.model_uri, am, mres, fv)
            outcome.costs = timer.costs()
            return outcome

    def pictures(self, job: TrialJob, store_uri: str) -> list[tuple[str, str]]:
        """The before/after picture of each (layer, split), from the committed metrics stage."""
        from shared.dataset_meta import dataset_id

        mres = committed_metrics(self.metrics_spec(job, store_uri, dataset_id(job.dataset)), store_uri)
        if mres is None:
            raise store.StoreError(f"trial {job.attack} on {job.layers}: its metrics are not committed yet")
        return draw_pictures(mres)

    def _outcome(
        self, job: TrialJob, akey: str, model_uri: str, am: dict, mres: MetricsResult, fv: Any = None
    ) -> TrialOutcome:
        """``fv``: the feature-visualisation stage's result (featureviz_stage.StageResult), None when off."""
        history = list(am.get("history", []))
        final = final_metrics(job, history, mres)
        broken = _budget_finals(final, am)
        artifacts = []
        tables = {}
        for (layer, split), m in mres.per.items():
            tables[f"{layer}/{split}"] = m.uri
            artifacts.append((m.table_uri, f"{layer}_{split}_unit_metrics.parquet"))
        if fv is not None:
            final |= fv.final
            artifacts += [(uri, f"featureviz_{name}") for uri, name in fv.artifacts]
        return TrialOutcome(akey, model_uri, history, final, artifacts, tables, broken)


@register_runner
class SaliencyRunner(FineTuneRunner):
    """Heo et al.'s fooling: the shared loop (the attack's own losses, eval mode), then FSR (§6)."""

    name = "saliency"
    draws_after = False  # the heatmap picture is part of its evaluation stage (``run``)

    def eval_spec(self, job: TrialJob, store_uri: str, dataset_id: str):
        from jobs.saliency_eval import SaliencyEvalSpec

        c = job.config
        akey = self.attack_key(job, dataset_id)
        collages = None
        if c.get("kind") == "active":
            from jobs.collages import CollageSpec, collage_dir

            cs = CollageSpec(dataset=job.dataset, c1=int(c["classes"][0]), c2=int(c["classes"][1]),
                             images=int(c["collages"]), train_split=job.train_split, heldout_split=job.val_split,
                             seed=job.seed)  # fmt: skip
            collages = collage_dir(store_uri, cs.key(dataset_id))
        return SaliencyEvalSpec(
            dataset=job.dataset, model=job.model, variant_key=job.variant_key, init_weights=job.weights,
            final_weights=store.join(model_dir(store_uri, akey), "model.pt"), final_state_key=akey,
            kind=c.get("kind"), interpreters=tuple(c["tested"]), layer=job.layers[0], split=job.val_split,
            images=int(c["test_images"]), seed=job.seed, collages=collages, picture_images=int(c["picture_images"]),
        )  # fmt: skip

    def trial_key(self, job: TrialJob, dataset_id: str) -> str:
        e = self.eval_spec(job, "/", dataset_id)
        return store.content_key(self.attack_key(job, dataset_id), e.key(dataset_id))

    def stored(self, job: TrialJob, store_uri: str) -> TrialOutcome | None:
        from jobs.saliency_eval import committed_eval
        from shared.dataset_meta import dataset_id

        ds_id = dataset_id(job.dataset)
        akey, am = self.committed_attack(job, store_uri, ds_id)
        if am is None:
            return None
        res = committed_eval(self.eval_spec(job, store_uri, ds_id), store_uri)
        return None if res is None else self._saliency_outcome(job, akey, model_dir(store_uri, akey), am, res)

    def run(self, job, store_uri, report=None, checkpoint_dir=None, resume_from=None, alpha_source=None):
        from jobs.saliency_eval import run_saliency_eval
        from shared.dataset_meta import dataset_id

        with trial_timer() as timer:
            res = run_attack(self.attack_spec(job), store_uri, report=report, checkpoint_dir=checkpoint_dir,
                             resume_from=resume_from, alpha_source=alpha_source)  # fmt: skip
            if res.stopped or res.model_uri is None:
                return None
            with timing.part("metrics"):  # FSR: maps of θ0 and θ, their accuracies, the picture
                ev = run_saliency_eval(self.eval_spec(job, store_uri, dataset_id(job.dataset)), store_uri)
            am = {"history": res.history, "result_step": res.result_step, "budget_broken": res.budget_broken}
            outcome = self._saliency_outcome(job, res.key, model_dir(store_uri, res.key), am, ev)
            outcome.costs = timer.costs()
            return outcome

    def _saliency_outcome(self, job: TrialJob, akey: str, mdir: str, am: dict, ev) -> TrialOutcome:
        from jobs.saliency_eval import summary

        history = list(am.get("history", []))
        final = summary(ev, job.config.get("kind"), job.config["interpreter"])
        if history:
            final |= {
                "alpha_final": float(history[-1].get("alpha", 0.0)),
                "steps": float(history[-1]["step"]),
            }
        broken = _budget_finals(final, am)
        artifacts = [(ev.table_uri, "saliency_t.parquet")]
        if ev.picture_uri is not None:
            artifacts.append((ev.picture_uri, "heatmaps_before_after.png"))
        return TrialOutcome(akey, store.join(mdir, "model.pt"), history, final, artifacts, {}, broken)


@register_runner
class InputRunner(Runner):
    """Input-space attacks (§7): nothing trains; the trial's model is attacked on validation images."""

    name = "input"

    def input_spec(self, job: TrialJob):
        from jobs.input_attacks import InputAttackSpec
        from shared.attacks.input_attacks import perturbation_args

        c = job.config
        return InputAttackSpec(
            dataset=job.dataset, model=job.model, weights=job.weights, model_key=job.start_key or job.variant_key,
            attack=job.attack, params=perturbation_args(job.attack, c), interpreter=c["interpreter"],
            layer=job.layers[0], images=int(c["images"]), target=c["target"],
            seed=job.seed if c.get("image_seed") is None else int(c["image_seed"]), split=job.val_split,
            picture_images=int(c["picture_images"]), formula=c.get("formula", ""), batch_size=int(c["batch_size"]),
            executor=c.get("executor", "auto"),
        )  # fmt: skip

    def attack_key(self, job: TrialJob, dataset_id: str) -> str:
        return self.input_spec(job).key(dataset_id)

    def trial_key(self, job: TrialJob, dataset_id: str) -> str:
        return self.attack_key(job, dataset_id)

    def stored(self, job: TrialJob, store_uri: str) -> TrialOutcome | None:
        from jobs.input_attacks import committed

        res = committed(self.input_spec(job), store_uri)
        return None if res is None else self._outcome(res)

    def run(self, job, store_uri, report=None, checkpoint_dir=None, resume_from=None, alpha_source=None):
        from jobs.input_attacks import run_input_attack

        if not job.weights:
            raise ValueError(
                f"trial of {job.attack!r} on the model of trial {job.start_key}: no weights; that trial's "
                "model must be trained first (the orchestrator fills in its URI)"
            )
        with trial_timer() as timer:
            with timing.part("metrics"):
                res = run_input_attack(self.input_spec(job), store_uri)
            outcome = self._outcome(res)
            outcome.costs = timer.costs()
            return outcome

    def _outcome(self, res) -> TrialOutcome:
        final = dict(res.summary)
        artifacts = [(res.table_uri, "input_attack_images.parquet"), *res.pictures]
        return TrialOutcome(res.uri.rsplit("/", 1)[-1], None, [], final, artifacts)


@contextlib.contextmanager
def trial_timer() -> Iterator[timing.PartTimer]:
    """The caller's active timer (a Tune trial's, started with it), else one started now."""
    timer = timing.current() or timing.PartTimer()
    with timing.active(timer):
        yield timer


METRIC_NAMES = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap")


def final_metrics(job: TrialJob, history: list[dict], mres: MetricsResult) -> dict[str, float]:
    """The figures of Table 3.1 (layer means; for a multi-layer scope, their mean) plus every detail.

    Per split role (SCIENCE.md §3: ``train`` = the attacked set, ``val`` = the generalization
    split): ``{role}.{metric}``, the report's rows; counts of dead and killed units are summed
    over the layers. The unprefixed names repeat the attacked split's figures (the MLflow
    compare view); ``{layer}.{split}.{metric}`` keeps each layer.
    """
    counts = ("units_dead_init", "units_killed")  # summed over layers (SCIENCE.md §3, dead units)
    extras = ("decoy_top5", *counts)  # decoy_top5: only attacks with a decoy class have it
    flat = {k.replace("/", "."): float(v) for k, v in mres.flat().items() if v is not None}
    out: dict[str, float] = {k: v for k, v in flat.items() if v == v}  # drop NaN
    for split in dict.fromkeys(sp for _, sp in mres.per):
        role = "train" if split == job.train_split else "val" if split == job.val_split else split
        means = [mres.per[(ly, split)].means for ly in job.layers if (ly, split) in mres.per]
        for name in (*METRIC_NAMES, *extras):
            vals = [m[name] for m in means if m.get(name) is not None and m[name] == m[name]]
            if not vals:
                continue
            value = float(sum(vals)) if name in counts else float(sum(vals) / len(vals))
            out[f"{role}.{name}"] = value
            if split == job.train_split:
                out[name] = value
    if history:
        out["alpha_final"] = float(history[-1].get("alpha", 0.0))
        out["steps"] = float(history[-1]["step"])
    return out


def _budget_finals(final: dict[str, float], am: dict) -> bool:
    """Add the budget outcome of the attack (``result_step``, ``budget_broken``) to ``final``; broken?"""
    if am.get("result_step") is not None:
        final["result_step"] = float(am["result_step"])
    broken = bool(am.get("budget_broken", False))
    final["budget_broken"] = float(broken)
    return broken


def _picture_units(v: int | list[int] | tuple[int, ...]) -> int | tuple[int, ...]:
    """A count, or the units a spec names (a JSON list) as the metrics spec's hashable tuple."""
    return v if isinstance(v, int) else tuple(int(u) for u in v)
