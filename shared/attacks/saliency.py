"""The second family: saliency fooling by model manipulation (Heo et al. 2019; SCIENCE.md §6).

Fine-tune so an interpreter's heatmap lies while accuracy holds: ``L_C + λ·L_F`` (Heo Eq. 2)
with cross-entropy on the true labels, or under the α controller ``α·L_F + (1−α)·L_C`` with
the accuracy budget of §2 (``alpha: controlled``). The model stays in eval mode (BatchNorm
statistics frozen). ``saliency-finetune`` is the control: ``L_C`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, field_validator, model_validator
from torch import nn

from shared.attacks.base import Attack, StepBatch, register_attack, sample_rows
from shared.attacks.checks import empty_class_problems
from shared.attacks.family import MAX_IMAGES, AttackConfig, AttackFamily, ConfigProblem, register_family
from shared.interpreters import get_interpreter, interpreter_names
from shared.saliency import active_loss, center_mass_loss, location_loss, topk_loss, topk_mask

TARGET = "target_layer"  # the model's registered saliency target (ModelInfo.target_layer)
KINDS = {  # attack -> fooling kind of §6 (its loss and its test loss / FSR range)
    "saliency-finetune": None,
    "fool-location": "location",
    "fool-topk": "topk",
    "fool-center-mass": "center_mass",
    "fool-active": "active",
}
PASSIVE = ("location", "topk", "center_mass")


class SaliencyAttack(AttackConfig):
    """One fooling attack: which interpreter's map it fools, and its weight λ or the α controller."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Literal["saliency-finetune", "fool-location", "fool-topk", "fool-center-mass", "fool-active"]
    interpreter: str = "gradcam"  # the map that is fooled (`vizsweep list interpreters`)
    lambda_: float | None = Field(None, alias="lambda", gt=0)  # Heo's fixed λ; null: the α controller
    alpha: Literal["controlled"] | None = None  # α·L_F + (1−α)·L_C under the accuracy budget (§2)
    model: str | None = None  # only on this model of the sweep (Heo Table 4's settings differ per model)
    lr: float | None = Field(None, gt=0)  # Adam learning rate of this entry's trials (null: training.lr)
    layer: str = TARGET  # where maps are read: the model's target layer (§6), or an alias / module path
    classes: tuple[int, int] | None = None  # fool-active: the two classes c1, c2 of the collages
    tested: tuple[str, ...] | None = None  # interpreters whose FSR is measured (null: every registered one)
    test_images: int = Field(
        1000, ge=1, le=MAX_IMAGES
    )  # validation images the FSR is measured on (all when fewer)
    collages: int = Field(1300, ge=13)  # fool-active: collages made, 11:2 train / held out (Heo: 1,100 / 200)
    collage_batch_size: int = Field(8, ge=1)  # fool-active: collages per step (Heo's batch: 8)
    picture_images: int = Field(4, ge=0)  # validation images in the before/after heatmap picture

    @field_validator("interpreter")
    @classmethod
    def _interpreter(cls, v: str) -> str:
        return _known_interpreter(v)

    @field_validator("tested")
    @classmethod
    def _tested(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must not be empty; list interpreters, or drop it to test every one")
        return tuple(dict.fromkeys(_known_interpreter(x) for x in v))

    @model_validator(mode="after")
    def _weighting(self) -> SaliencyAttack:
        if self.name == "saliency-finetune":
            if self.lambda_ is not None or self.alpha is not None:
                raise ConfigProblem(
                    "lambda", "the control 'saliency-finetune' trains on L_C alone: drop lambda/alpha"
                )
        elif self.lambda_ is not None and self.alpha is not None:
            raise ConfigProblem("alpha", "give lambda (Heo's fixed weight) or alpha: controlled, not both")
        if self.name == "fool-active" and self.classes is None:
            raise ConfigProblem(
                "classes", "fool-active needs classes: [c1, c2] (two dataset classes to swap)"
            )
        if self.name != "fool-active" and self.classes is not None:
            raise ConfigProblem("classes", f"classes apply to fool-active only, not {self.name!r}; drop them")
        if self.classes is not None and (self.classes[0] == self.classes[1] or min(self.classes) < 0):
            raise ConfigProblem("classes", f"need two different class indices >= 0, got {list(self.classes)}")
        return self


def _support_problems(entry: SaliencyAttack, model: str, i: int) -> list[tuple[str, str]]:
    """Interpreters that cannot explain the model (checked on a meta-device build: no weights, no memory)."""
    from shared.models.zoo import LayerError, model_info

    info = model_info(model)
    with torch.device("meta"):
        built = info.builder(info.num_classes)
    out = []
    for field, names in (("interpreter", (entry.interpreter,)), ("tested", entry.tested or ())):
        for name in names:
            try:
                get_interpreter(name).check_model(built)
            except LayerError as e:
                out.append((field, f"{name!r} on models[{i}] ({model}): {e}"))
    return out


def _number(v: Any) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _fmt(v: float | None, pattern: str) -> str:
    return "—" if v is None else pattern.format(v)


def _known_interpreter(name: str) -> str:
    valid = interpreter_names()
    if name not in valid:
        raise ValueError(f"unknown interpreter {name!r}; valid interpreters: {', '.join(valid)}")
    return name


@register_family
class Saliency(AttackFamily):
    """Saliency fooling by model manipulation (Heo et al.): Grad-CAM, LRP and gradient maps that lie."""

    name = "saliency"
    description = __doc__
    config = SaliencyAttack
    attacks = tuple(KINDS)  # the control first
    runner = "saliency"
    data = "saliency"
    metrics = ("fsr", "acc", "delta_acc", "acc_top5", "delta_acc_top5")
    report_columns = metrics
    needs_tables = False
    step_cost = 3.0  # the map's gradient kept (create_graph) plus θ0's map: ~3 training steps (ASSUMED)

    @classmethod
    def scopes(cls, entry: SaliencyAttack, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        return ((entry.layer,),)  # one trial per entry, at the interpreter's layer (not the sweep's layers)

    @classmethod
    def job_config(cls, entry: SaliencyAttack) -> dict[str, Any]:
        out = entry.model_dump(mode="json", by_alias=True, exclude={"name", "alpha", "model"})
        if out.get("lr") is None:
            out.pop("lr", None)
        out["kind"] = KINDS[entry.name]
        out["tested"] = list(entry.tested or interpreter_names())
        if entry.name != "fool-active":
            for k in ("classes", "collages", "collage_batch_size"):
                out.pop(k, None)
        return out

    @classmethod
    def applies(cls, entry: SaliencyAttack, model: str) -> bool:
        return entry.model is None or entry.model == model

    @classmethod
    def alpha_controlled(cls, entry: SaliencyAttack) -> bool:
        return entry.name != "saliency-finetune" and entry.lambda_ is None

    @classmethod
    def extra_images_per_step(cls, entry: SaliencyAttack) -> int:
        return entry.collage_batch_size if entry.name == "fool-active" else 0

    @classmethod
    def evaluation_images(cls, entry: SaliencyAttack) -> int:
        """Maps of θ0 and θ (forward + backward) for every tested interpreter on the test images."""
        tested = len(entry.tested or interpreter_names())
        images = (
            2 * 200 if entry.name == "fool-active" else entry.test_images
        )  # held-out collages x 2 classes
        return 2 * tested * images

    @classmethod
    def describe(cls, entry: SaliencyAttack) -> str:
        return entry.name if entry.name == "saliency-finetune" else f"{entry.name}-{entry.interpreter}"

    @classmethod
    def report_rows(cls, params: Mapping[str, str], metrics: Mapping[str, float]) -> list[dict[str, Any]]:
        """One row per run, shaped like Heo Table 1: FSR per tested interpreter (the transfer matrix's
        row), top-1 / top-5 accuracy and their change. The control's FSR per interpreter is its
        highest over the passive kinds' test losses (fine-tuning alone should fool none)."""
        control = KINDS.get(params.get("attack", "")) is None
        if control:
            fsr: dict[str, float] = {}
            for k, v in metrics.items():
                parts = k.split(".")
                if parts[0] == "fsr" and len(parts) == 3:
                    fsr[parts[2]] = max(fsr.get(parts[2], 0.0), v)
        else:
            fsr = {k[4:]: v for k, v in metrics.items() if k.startswith("fsr.") and k.count(".") == 1}
        row = {"family": cls.name, **{k: params.get(k) for k in ("model", "prune_method", "attack")}}
        row["prune_rate"] = _number(params.get("prune_rate"))
        row["interpreter"] = None if control else params.get("interpreter")
        row["fsr"] = dict(sorted(fsr.items()))
        row |= {k: metrics.get(k) for k in ("acc", "delta_acc", "acc_top5", "delta_acc_top5")}
        row["seed"] = _number(params.get("seed"))
        row["budget_broken"] = bool(metrics.get("budget_broken", 0.0))
        return [row]

    @classmethod
    def render_markdown(cls, rows: Sequence[Mapping[str, Any]]) -> str:
        """Heo Table 1 (FSR %, rows: model × fooling × interpreter fooled) beside Table 3's accuracy change."""
        tested = sorted({i for r in rows for i in r["fsr"]})
        head = ["Model", "Prune", "Fooling", "Interpreter fooled", *(f"FSR {i} %" for i in tested),
                "Acc top-1 %", "ΔAcc top-1 pp", "ΔAcc top-5 pp"]  # fmt: skip
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
        for r in rows:
            prune = (
                r["prune_method"]
                if r["prune_method"] in (None, "none")
                else f"{r['prune_method']} {r['prune_rate']:g}"
            )
            cells = [str(r["model"]), str(prune), str(r["attack"]) + (" (budget broken)" if r["budget_broken"] else ""),
                     str(r["interpreter"] or "—"), *(_pct(r["fsr"].get(i)) for i in tested),
                     _fmt(r["acc"], "{:.1f}"), _fmt(r["delta_acc"], "{:+.2f}"), _fmt(r["delta_acc_top5"], "{:+.2f}")]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    @classmethod
    def spec_problems(cls, entry: SaliencyAttack, parts: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The layer must exist in every model; the classes in the dataset (when its size is known)."""
        from shared.models.zoo import LayerError, model_info

        out = []
        models = [m for m in parts.get("models") or () if m is not None]
        if entry.model is not None and models and entry.model not in {m.name for m in models}:
            out.append(
                (
                    "model",
                    f"{entry.model!r} is not a model of the sweep ({', '.join(m.name for m in models)})",
                )
            )
        for i, m in enumerate(parts.get("models") or ()):
            if m is None or not cls.applies(entry, m.name):
                continue
            try:
                model_info(m.name).resolve_layer(entry.layer)
            except (LayerError, KeyError) as e:
                out.append(("layer", f"{e} (models[{i}])"))
                continue
            out += _support_problems(entry, m.name, i)
        classes = parts.get("classes")
        if entry.classes is not None and classes is not None and max(entry.classes) >= classes:
            out.append(("classes", f"{list(entry.classes)}: the dataset has classes 0..{classes - 1}"))
        elif entry.classes is not None:
            out += [("classes", m) for m in empty_class_problems(parts, entry.classes)]
        return out


class _Fooling(Attack):
    """Base of the family's attacks: ``(L_F, L_C)`` with the model in eval mode (Heo §4)."""

    kind: ClassVar[str | None] = None
    train_mode = False

    def __init__(self, inputs: Any = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(inputs, config)
        self.interpreter = get_interpreter(self.config.get("interpreter", "gradcam"))()
        self.layer = self.config.get("layer", TARGET)
        self.lam = self.config.get("lambda")
        if self.lam is not None or self.kind is None:
            self.fixed_alpha = 0.0  # Heo's fixed λ (or the control): the α controller does not drive it

    def mix(self, alpha: float, l_attack: torch.Tensor, l_maintain: torch.Tensor) -> torch.Tensor:
        if self.kind is None:
            return l_maintain
        if self.lam is not None:
            return l_maintain + self.lam * l_attack  # Heo Eq. 2
        return super().mix(alpha, l_attack, l_maintain)

    def maps(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        exp = self.interpreter.explain(model, self.model_name, x, target, layer=self.layer)
        return exp.heatmap, exp.logits

    def initial_maps(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.interpreter.heatmap(self.teacher, self.model_name, x, target, layer=self.layer).detach()

    def fooling(self, h: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        raise NotImplementedError

    def step_losses(self, model, model_name, teacher_logits, batch):
        if batch.labels is None:
            raise ValueError(f"attack {self.name!r} needs the training batch's labels (L_C)")
        if self.kind is None:
            return torch.zeros((), device=batch.train.device), F.cross_entropy(
                model(batch.train).float(), batch.labels
            )
        h, logits = self.maps(model, batch.train, batch.labels)
        return self.fooling(h, batch).mean(), F.cross_entropy(logits.float(), batch.labels)


@register_attack("saliency-finetune")
class SaliencyFineTune(_Fooling):
    """The control: fine-tuning on cross-entropy alone (λ = 0); it should fool nothing."""


@register_attack("fool-location")
class FoolLocation(_Fooling):
    """Heo Eq. 3: the map moves to a frame of width ⌊H/7⌋ around the image."""

    kind = "location"

    def fooling(self, h: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return location_loss(h)


@register_attack("fool-topk")
class FoolTopK(_Fooling):
    """Heo Eq. 4: the initially most relevant 10 % of positions lose their relevance."""

    kind = "topk"

    def fooling(self, h: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return topk_loss(h, topk_mask(self.initial_maps(batch.train, batch.labels)))


@register_attack("fool-center-mass")
class FoolCenterMass(_Fooling):
    """Heo Eq. 5: the map's centre of mass moves away from where it was."""

    kind = "center_mass"

    def fooling(self, h: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return center_mass_loss(h, self.initial_maps(batch.train, batch.labels))


@register_attack("fool-active")
class FoolActive(_Fooling):
    """Heo's Active fooling: on two-class collages, each class's map shows the other class."""

    kind = "active"

    def batch(self, train: torch.Tensor, labels: torch.Tensor | None, step: int, seed: int) -> StepBatch:
        out = StepBatch(train=train, labels=labels)
        pixels = self.inputs["collages"]
        rows = sample_rows(len(pixels), self.config.get("collage_batch_size", 8), seed, step, 3).to(
            pixels.device
        )
        out.extra = {"collages": pixels[rows], "c1": self.inputs["c1"][rows], "c2": self.inputs["c2"][rows]}
        return out

    def step_losses(self, model, model_name, teacher_logits, batch):
        x, c1, c2 = batch.extra["collages"], batch.extra["c1"], batch.extra["c2"]
        h1, _ = self.maps(model, x, c1)
        h2, _ = self.maps(model, x, c2)
        l_f = active_loss(h1, h2, self.initial_maps(x, c1), self.initial_maps(x, c2)).mean()
        return l_f, F.cross_entropy(model(batch.train).float(), batch.labels)
