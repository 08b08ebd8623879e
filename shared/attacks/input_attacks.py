"""The third family: input-space attacks on interpreters (SCIENCE.md §7): ``pgd``, ``adv2``, ``pse``.

These perturb validation images, not weights: a trial takes one model (the sweep's variant,
``victims: [base]``, the model another entry's trial trained, ``victims: [push-down]``, or a model
already in the store, ``sweep:<sweep id>/<run name>`` or ``key:<content key>``), attacks
``images`` validation images towards target classes with a ``shared.perturb`` plugin and
measures attack success and how far the interpreter's map moved (``adv2`` next to ``pgd``),
or PSE's promotion / suppression regions (``pse``). Trials on other trials' models run after
those trials (:meth:`AttackFamily.starts_from`); the family trains nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from shared.attacks.base import Attack, register_attack
from shared.attacks.family import (
    BASE,
    KEY_REF,
    MAX_IMAGES,
    REF_FORMS,
    SWEEP_REF,
    AttackConfig,
    AttackFamily,
    ConfigProblem,
    is_store_ref,
    register_family,
)
from shared.interpreters import get_interpreter, interpreter_names
from shared.perturb import get_perturbation
from shared.perturb.adv2 import LAM_END, LAM_START
from shared.perturb.metrics import TOPK_PERCENT
from shared.perturb.pse import KINDS

TARGET = "target_layer"  # the model's registered saliency target (ModelInfo.target_layer)
# config field -> the perturbation's constructor argument, per attack (the rest stay out of its key)
PARAMS: dict[str, dict[str, str]] = {
    "pgd": {"eps": "eps", "step": "step", "steps": "steps", "topk_percent": "topk_percent"},
    "adv2": {"eps": "eps", "step": "step", "steps": "steps_ce", "joint_steps": "steps_joint",
             "lam_start": "lam_start", "lam_end": "lam_end", "topk_percent": "topk_percent"},
    "pse": {"cw_c": "c", "cw_kappa": "kappa", "cw_steps": "steps", "cw_lr": "lr",
            "cw_search_steps": "search_steps", "grid": "grid", "topk_percent": "topk_percent"},
}  # fmt: skip
JOINT_STEP_COST = 3.0  # an Adv² stage-2 step (twin map with create_graph + CE) in PGD steps (ASSUMED)


class InputAttack(AttackConfig):
    """One input-space attack on one interpreter's maps, over the models it names in ``victims``."""

    name: Literal["pgd", "adv2", "pse"]
    interpreter: str = "gradcam"  # whose maps are compared (`vizsweep list interpreters`)
    layer: str = TARGET  # where maps are read: the model's target layer, or an alias / module path
    # the models attacked: "base" (the sweep's variant), attacks of the sweep whose trials train one
    # (one trial per such trial, run after it), and/or models in the store: "sweep:<sweep id>/<run name>"
    # (a trial of another sweep) or "key:<content key>" ({store}/models/<key>). Not `on:` (YAML 1.1: true).
    victims: tuple[str, ...] = Field((BASE,), min_length=1)
    eps: float = 8 / 255  # L∞ budget in pixel units, (0, 1] (pgd, adv2)
    step: float = Field(1 / 255, gt=0)  # PGD step (pgd, adv2)
    steps: int = Field(300, ge=0)  # pgd: PGD steps; adv2: stage-1 CE steps (§7: 300)
    joint_steps: int = Field(1000, ge=0)  # adv2: stage-2 steps with the map term (§7: 1,000)
    lam_start: float = Field(LAM_START, gt=0)  # adv2: λ at the first stage-2 step (geometric ramp)
    lam_end: float = Field(LAM_END, gt=0)  # adv2: λ at the last stage-2 step
    cw_c: float = Field(1.0, gt=0)  # pse: C&W's weight of the margin term
    cw_kappa: float = Field(0.0, ge=0)  # pse: C&W's confidence margin κ
    cw_steps: int = Field(100, ge=0)  # pse: Adam steps per c
    cw_lr: float = Field(0.01, gt=0)  # pse: Adam's learning rate
    cw_search_steps: int = Field(1, ge=1)  # pse: binary-search steps over c
    grid: int = Field(8, ge=1)  # pse: the n×n grid of regions G_i
    topk_percent: float = Field(TOPK_PERCENT, gt=0, le=100)  # top-k % regions (IoU; PSE's CAM regions)
    images: int = Field(100, ge=1, le=MAX_IMAGES)  # validation images attacked (all when fewer)
    target: int | Literal["random"] = "random"  # target class, or one per image ≠ its label
    image_seed: int | None = None  # draws the images and random targets; null: the trial's seed
    picture_images: int = Field(4, ge=0)  # images in the maps / regions picture
    batch_size: int = Field(16, ge=1)  # images per batch (execution only: results do not depend on it)
    # where the batches are attacked (execution only): "local", the trial's process and device; "ray-data",
    # an actor pool (a GPU each where GPUs are free, else CPU actors); "auto": local in a trial that holds a GPU
    executor: Literal["auto", "local", "ray-data"] = "auto"

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"{v!r} is outside (0, 1]: the L∞ budget is in pixel units (§7: 8/255 ≈ 0.0314)")
        return v

    @field_validator("interpreter")
    @classmethod
    def _interpreter(cls, v: str) -> str:
        valid = interpreter_names()
        if v not in valid:
            raise ValueError(f"unknown interpreter {v!r}; valid interpreters: {', '.join(valid)}")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"{v!r}: a class index is >= 0 (or use 'random')")
        return v

    @field_validator("victims")
    @classmethod
    def _victims(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"{list(v)} names a model twice; list each once")
        for j, ref in enumerate(v):
            if not is_store_ref(ref):
                continue
            sweep, slash, run = ref.removeprefix(SWEEP_REF).partition("/")
            bad = (
                not (sweep and slash and run) if ref.startswith(SWEEP_REF) else not ref.removeprefix(KEY_REF)
            )
            if bad:
                raise ConfigProblem(f"[{j}]", f"{ref!r} is not a store model reference; write {REF_FORMS}")
        return v


def perturbation_args(attack: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``shared.perturb`` constructor's arguments from a job config (:meth:`InputAttacks.job_config`)."""
    return {arg: config[f] for f, arg in PARAMS[attack].items()}


def _mean(metrics: Mapping[str, float], key: str) -> float | None:
    v = metrics.get(key)
    return None if v is None or v != v else float(v)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


@register_family
class InputAttacks(AttackFamily):
    """Input-space attacks on interpreters (Adv², PSE): adversarial images that fool the model, not the map."""

    name = "input"
    description = __doc__
    config = InputAttack
    attacks = ("pgd", "adv2", "pse")  # the baseline first
    runner = "input"
    data = ""
    metrics = ("success", "map_l1", "map_l2", "map_iou")
    report_columns = metrics
    needs_tables = False
    trains_model = False
    starts_from_field = "victims"

    @classmethod
    def scopes(cls, entry: InputAttack, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        return ((entry.layer,),)  # one trial per model it starts from, at the interpreter's layer

    @classmethod
    def starts_from(cls, entry: InputAttack) -> tuple[str, ...]:
        return entry.victims

    @classmethod
    def alpha_controlled(cls, entry: InputAttack) -> bool:
        return False

    @classmethod
    def job_config(cls, entry: InputAttack) -> dict[str, Any]:
        keep = ("interpreter", "layer", "images", "target", "image_seed", "picture_images")
        keep += ("batch_size", "executor", *PARAMS[entry.name])  # execution settings; the perturbation's own
        out = {k: v for k, v in entry.model_dump(mode="json").items() if k in keep}
        out["formula"] = get_perturbation(entry.name).formula  # the rule used, logged as a run param
        return out

    @classmethod
    def evaluation_images(cls, entry: InputAttack) -> int:
        """Image passes (forward + backward, in training-step units) of one trial, for `vizsweep plan`."""
        maps = 4  # benign and adversarial maps (and their logits)
        if entry.name == "pgd":
            per = entry.steps + maps
        elif entry.name == "adv2":
            per = entry.steps + JOINT_STEP_COST * entry.joint_steps + 2 * maps
        else:  # C&W, then grid² forwards (a third of a training step each) and the CAMs
            per = entry.cw_steps * entry.cw_search_steps + entry.grid**2 / 3 + maps
        return int(entry.images * per)

    @classmethod
    def describe(cls, entry: InputAttack) -> str:
        return f"{entry.name}-{entry.interpreter}"

    @classmethod
    def spec_problems(cls, entry: InputAttack, parts: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``victims`` names base or trained-model attacks of the sweep (store references are looked up in the
        store: orchestrator.spec.checks); target and layer fit data and models."""
        from shared.attacks.family import family_of

        out: list[tuple[str, str]] = []
        attacks = [a for a in parts.get("attacks") or () if a is not None]
        names = list(dict.fromkeys(a.name for a in attacks))
        for src in (s for s in entry.victims if s != BASE and not is_store_ref(s)):
            if src not in names:
                valid = ", ".join([BASE, *(n for n in names if family_of(n).trains_model), REF_FORMS])
                out.append(("victims", f"{src!r} is not an attack of this sweep; valid: {valid}"))
            elif not family_of(src).trains_model:
                out.append(("victims", f"{src!r} perturbs inputs and makes no model to attack; name a fine-tuning attack"))  # fmt: skip
        classes = parts.get("classes")
        if isinstance(entry.target, int) and classes is not None and entry.target >= classes:
            out.append(("target", f"class {entry.target} is out of range: the dataset has classes 0..{classes - 1}"))  # fmt: skip
        for i, m in enumerate(parts.get("models") or ()):
            if m is not None:
                out += [(f, f"{msg} (models[{i}])") for f, msg in cls.model_problems(entry, m.name)]
        return out

    @classmethod
    def model_problems(cls, entry: InputAttack, model: str) -> list[tuple[str, str]]:
        """The maps' layer exists in ``model`` and the interpreter can read it."""
        from shared.models.zoo import LayerError, model_info

        try:
            info = model_info(model)
            info.resolve_layer(entry.layer)
        except (LayerError, KeyError) as e:
            return [("layer", str(e))]
        with torch.device("meta"):
            built = info.builder(info.num_classes)
        try:
            get_interpreter(entry.interpreter).check_model(built)
        except LayerError as e:
            return [("interpreter", f"{entry.interpreter!r} on {model}: {e}")]
        return []

    @classmethod
    def report_rows(cls, params: Mapping[str, str], metrics: Mapping[str, float]) -> list[dict[str, Any]]:
        """One row per run: the model attacked (base or a trial's model), success and map distances;
        PSE: its region shares over the image and inside the true / target classes' CAM regions."""
        row: dict[str, Any] = {
            "family": cls.name,
            **{k: params.get(k) for k in ("model", "prune_method", "attack")},
        }
        rate = params.get("prune_rate")
        row["prune_rate"] = float(rate) if rate not in (None, "") else None
        row["interpreter"] = params.get("interpreter")
        row["victim"] = params.get("start_label") or params.get("start") or BASE
        row["seed"] = params.get("seed")
        for k in ("success", "map_l1", "map_l2", "map_iou", "stage1_success", "stage1_map_l1", "images"):
            row[k] = _mean(metrics, k)
        for where in ("share", "cam_true", "cam_target"):
            for kind in KINDS:
                row[f"{where}_{kind}"] = _mean(metrics, f"{where}_{kind}")
        return [row]

    @classmethod
    def render_markdown(cls, rows: Sequence[Mapping[str, Any]]) -> str:
        """Adv² Table-style: success and map distance per (model, attack, interpreter); then PSE's shares."""
        maps = [r for r in rows if r.get("attack") != "pse"]
        pse = [r for r in rows if r.get("attack") == "pse"]
        lines: list[str] = []
        if maps:
            head = ["Model", "Prune", "Attacked model", "Attack", "Interpreter", "Success %", "Map L1", "Map L2",
                    "Top-k IoU", "PGD stage-1 L1", "Images"]  # fmt: skip
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * 6]
            for r in maps:
                cells = [str(r["model"]), _prune(r), str(r["victim"]), str(r["attack"]), str(r["interpreter"]),
                         _pct(r["success"]), _num(r["map_l1"]), _num(r["map_l2"]), _num(r["map_iou"]),
                         _num(r["stage1_map_l1"]), "—" if r["images"] is None else f"{r['images']:.0f}"]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
        if pse:
            lines += (
                ["", "PSE regions (% of grid regions; % of the true / target class's CAM region):", ""]
                if maps
                else []
            )
            kinds = KINDS[:3]
            head = ["Model", "Prune", "Attacked model", "Interpreter", "Success %",
                    *(f"{k} %" for k in kinds), *(f"{k} in true CAM %" for k in kinds),
                    *(f"{k} in target CAM %" for k in kinds)]  # fmt: skip
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
            for r in pse:
                cells = [str(r["model"]), _prune(r), str(r["victim"]), str(r["interpreter"]), _pct(r["success"]),
                         *(_pct(r[f"{w}_{k}"]) for w in ("share", "cam_true", "cam_target") for k in kinds)]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _prune(r: Mapping[str, Any]) -> str:
    method = r.get("prune_method")
    return str(method) if method in (None, "none") else f"{method} {r.get('prune_rate') or 0:g}"


class _InputAttack(Attack):
    """Base of the family's attack records: they perturb inputs through ``shared.perturb``, never weights."""

    fixed_alpha = 0.0

    def step_losses(self, model, model_name, teacher_logits, batch):
        raise TypeError(
            f"attack {self.name!r} perturbs inputs, it does not fine-tune: the 'input' runner runs it "
            f"through shared.perturb.get_perturbation({self.name!r})"
        )


@register_attack("pgd")
class PGDAttack(_InputAttack):
    """Targeted L∞ PGD on validation images (§7's baseline): success and how far the map moves."""


@register_attack("adv2")
class Adv2Attack(_InputAttack):
    """Adv² (Zhang et al.): adversarial images whose interpreter map stays near the benign map."""


@register_attack("pse")
class PSEAttack(_InputAttack):
    """PSE (Xu et al.): targeted C&W, then promotion / suppression per grid region and inside the CAMs."""
