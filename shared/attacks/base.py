"""Attack plugins over one shared training step (thesis Eq. 5: ``min_θ α·L_A + (1−α)·L_M``).

An attack is a small class with one hook, :meth:`Attack.layer_loss` (its ``L_A`` on
one layer, given the hooked unit scores of the batches it asked for in ``uses``);
:func:`train_step` does the rest: forwards with :class:`shared.hooks.UnitScores`, the
frozen teacher's logits for the maintain loss (Eq. 6), the α mix, backward and the
optimizer step. The outer loop (data, evaluation, α rule, checkpoints) is
``jobs/attack.py``; this module has no Ray and no I/O.

Register an attack with :func:`register_attack`; names are unique (a duplicate
raises) and a failed lookup lists the registered names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from shared.adam import Adam
from shared.attacks.losses import maintain_loss, scope_mean
from shared.hooks import UnitScores
from shared.registry import Registry

# Image sets a step can hook: the training batch B, a sample of D_attack, a sample of D_decoy.
SETS = ("train", "attack", "decoy")


@dataclass(frozen=True)
class AttackTargets:
    """What an attack aims at, per layer (every tensor is indexed by attacked unit, not by unit id)."""

    layers: tuple[str, ...]  # layer aliases of the scope
    units: dict[str, torch.Tensor]  # layer -> long [J_sel]: attacked unit indices
    scale: dict[str, torch.Tensor]  # layer -> float [J_sel]: s_j (ones for scale="none")
    member: dict[str, torch.Tensor] | None = None  # layer -> bool [M, J_sel]: D_attack image m in top-k of j

    def __post_init__(self) -> None:
        for layer in self.layers:
            if layer not in self.units or layer not in self.scale:
                raise ValueError(f"AttackTargets: layer {layer!r} needs units and scale entries")
            if self.units[layer].shape != self.scale[layer].shape:
                raise ValueError(
                    f"AttackTargets: layer {layer!r} has {len(self.units[layer])} units "
                    f"but {len(self.scale[layer])} scales"
                )

    def to(self, device: torch.device) -> AttackTargets:
        member = None if self.member is None else {k: v.to(device) for k, v in self.member.items()}
        return AttackTargets(
            self.layers,
            {k: v.to(device) for k, v in self.units.items()},
            {k: v.to(device) for k, v in self.scale.items()},
            member,
        )


@dataclass
class StepScores:
    """Hooked scores of one step: set name -> layer -> ``[N, J_l]`` (all units; attacks select)."""

    scores: dict[str, dict[str, torch.Tensor]]
    attack_rows: torch.Tensor | None = None  # long [M']: rows of targets.member in the "attack" sample

    def get(self, kind: str, layer: str) -> torch.Tensor:
        try:
            return self.scores[kind][layer]
        except KeyError:
            raise KeyError(
                f"no {kind!r} scores for layer {layer!r}: declare {kind!r} in the attack's `uses`"
            ) from None


class Attack:
    """Base class of every attack that fine-tunes weights: one step's ``(L_A, L_M)`` of Eq. 5.

    Subclasses override :meth:`step_losses` (and :meth:`batch` when a step needs more than
    the training batch). ``inputs`` is what the family's data provider prepared (for the
    thesis's family an :class:`AttackTargets`), ``config`` the family config's job settings.
    """

    name: ClassVar[str] = ""
    fixed_alpha: ClassVar[float | None] = None  # α the controller must not move (fine-tuning: 0)
    train_mode: ClassVar[bool] = True  # the model's mode while fine-tuned (Heo: eval, BatchNorm frozen)

    def __init__(self, inputs: Any = None, config: Mapping[str, Any] | None = None) -> None:
        self.inputs = inputs
        self.config = dict(config or {})
        self.teacher: nn.Module | None = None  # θ0, frozen; set by bind()

    def bind(self, model_name: str, teacher: nn.Module) -> None:
        """Called once by the loop: the frozen initial model (losses that compare with θ0 need it)."""
        self.model_name, self.teacher = model_name, teacher

    def mix(self, alpha: float, l_attack: torch.Tensor, l_maintain: torch.Tensor) -> torch.Tensor:
        """Eq. 5's ``α·L_A + (1−α)·L_M``; a family with a fixed weight λ overrides it (Heo Eq. 2)."""
        return alpha * l_attack + (1.0 - alpha) * l_maintain

    def batch(self, train: torch.Tensor, labels: torch.Tensor | None, step: int, seed: int) -> StepBatch:
        """The pixels of one step; a pure function of (seed, step) so resumes need no state."""
        return StepBatch(train=train, labels=labels)

    def step_losses(
        self, model: nn.Module, model_name: str, teacher_logits: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_A, L_M)`` of one step (with graphs); the loop mixes them with α and steps."""
        raise NotImplementedError(f"{type(self).__name__} must implement step_losses")


class UnitScoreAttack(Attack):
    """The thesis's attacks (SCIENCE.md §2): a loss on hooked unit scores; override :meth:`layer_loss`.

    ``uses`` names the image sets whose scores a step needs: the training batch, a sample of
    D_attack, D_decoy; the maintain loss is Eq. 6's distillation from the frozen θ0.
    """

    uses: ClassVar[tuple[str, ...]] = ()  # which of SETS need hooked scores
    all_decoys: ClassVar[bool] = False  # every step sees all of D_decoy (ignores decoy_batch_size)

    def __init__(self, inputs: Any = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(inputs, config)
        self.targets: AttackTargets = inputs.targets if isinstance(inputs, UnitInputs) else inputs
        self.pixels = inputs if isinstance(inputs, UnitInputs) else UnitInputs(self.targets)

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement layer_loss (its L_A on one layer)")

    def loss(self, step: StepScores) -> torch.Tensor:
        """``L_A`` of the scope: mean of the per-layer losses (SCIENCE.md §2)."""
        return scope_mean({layer: self.layer_loss(layer, step) for layer in self.targets.layers})

    def select(self, kind: str, layer: str, step: StepScores) -> torch.Tensor:
        """The attacked units' columns of one set's scores."""
        return step.get(kind, layer)[:, self.targets.units[layer]]

    def batch(self, train: torch.Tensor, labels: torch.Tensor | None, step: int, seed: int) -> StepBatch:
        """The training batch plus this step's D_attack / D_decoy samples (pure functions of seed and step)."""
        out = StepBatch(train=train, labels=labels)
        p = self.pixels
        if "attack" in self.uses and p.attack is not None:
            rows = sample_rows(len(p.attack), self.config.get("attack_batch_size"), seed, step, 1)
            out.attack, out.attack_rows = p.attack[rows.to(p.attack.device)], rows.to(train.device)
        if "decoy" in self.uses and p.decoy is not None:
            take = None if self.all_decoys else self.config.get("decoy_batch_size")
            out.decoy = p.decoy[sample_rows(len(p.decoy), take, seed, step, 2).to(p.decoy.device)]
        return out

    def step_losses(
        self, model: nn.Module, model_name: str, teacher_logits: torch.Tensor, batch: StepBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layers = list(self.targets.layers)
        scores: dict[str, dict[str, torch.Tensor]] = {}
        if "train" in self.uses:
            with UnitScores(model, model_name, layers, detach=False) as rec:
                logits = rec.run(batch.train)
            scores["train"] = rec.scores
        else:
            logits = model(batch.train)
        for kind in ("attack", "decoy"):
            if kind not in self.uses:
                continue
            pixels = getattr(batch, kind)
            if pixels is None:
                raise ValueError(
                    f"attack {self.name!r} uses the {kind!r} set but the step has no {kind} pixels"
                )
            with UnitScores(model, model_name, layers, detach=False) as rec:
                rec.run(pixels, stop_early=True)  # only the hooked layers' scores are needed
            scores[kind] = rec.scores
        l_m = maintain_loss(logits, teacher_logits)
        if not self.uses:
            return torch.zeros((), device=l_m.device), l_m
        return self.loss(StepScores(scores, batch.attack_rows)), l_m


@dataclass
class UnitInputs:
    """What the thesis's attacks get from their data provider: targets and the fixed image sets."""

    targets: AttackTargets
    attack: torch.Tensor | None = None  # decoded D_attack, rows of targets.member
    decoy: torch.Tensor | None = None  # decoded D_decoy


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register an :class:`Attack` subclass under ``name`` (duplicates raise)."""

    def deco(cls: type[Attack]) -> type[Attack]:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"register_attack({name!r}) needs an Attack subclass, got {cls!r}")
        bad = [u for u in getattr(cls, "uses", ()) if u not in SETS]
        if bad:
            raise ValueError(f"attack {name!r} uses unknown image sets {bad}; valid: {', '.join(SETS)}")
        ATTACKS.register(name)(cls)
        cls.name = name
        return cls

    return deco


def get_attack(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def attack_names() -> list[str]:
    return ATTACKS.names()


def build_attack(name: str, inputs: Any, config: Mapping[str, Any] | None = None) -> Attack:
    """An attack instance over the inputs its family's data provider prepared."""
    return get_attack(name)(inputs, config)


# --- the shared step -----------------------------------------------------------------


@dataclass
class StepBatch:
    """Pixels of one step: the training batch and, when the attack uses them, D_attack / D_decoy samples."""

    train: torch.Tensor  # [B, 3, H, W]
    labels: torch.Tensor | None = None  # long [B]: the training batch's labels
    attack: torch.Tensor | None = None  # [M', 3, H, W]
    attack_rows: torch.Tensor | None = None  # long [M']: their rows in targets.member
    decoy: torch.Tensor | None = None  # [P, 3, H, W]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # a family's own per-step tensors


@dataclass(frozen=True)
class StepLosses:
    total: float
    attack: float
    maintain: float


def train_step(
    model: nn.Module,
    model_name: str,
    teacher: nn.Module,
    attack: Attack,
    batch: StepBatch,
    alpha: float,
    optimizer: torch.optim.Optimizer | Adam,
    autocast: contextlib.AbstractContextManager | None = None,
) -> StepLosses:
    """One optimizer step on Eq. 5, ``α·L_A + (1−α)·L_M``, with the attack's own losses.

    ``model`` in the mode its family trains in; ``teacher`` (θ0) frozen in eval mode.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: must be in [0, 1) (Eq. 5)")
    amp = autocast if autocast is not None else contextlib.nullcontext()
    with torch.no_grad(), amp:
        teacher_logits = teacher(batch.train)
    with amp:
        l_a, l_m = attack.step_losses(model, model_name, teacher_logits, batch)
    total = attack.mix(alpha, l_a, l_m)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return StepLosses(float(total.detach()), float(l_a.detach()), float(l_m.detach()))


def sample_rows(n: int, take: int | None, seed: int, step: int, stream: int) -> torch.Tensor:
    """``take`` of ``n`` rows for one step, a pure function of (seed, step, stream): resumes need no state."""
    if take is None or take >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(mix_seed(seed, step, stream))
    return torch.randperm(n, generator=gen)[:take].sort().values


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (FNV-1a over 64-bit words): distinct tuples give distinct seeds."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


@torch.no_grad()
def accuracy(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 256,
    autocast: contextlib.AbstractContextManager | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] in eval mode; the model's previous mode is restored."""
    return _accuracy(model, pixels, labels, batch_size, autocast)


@torch.no_grad()
def accuracy_and_scores(
    model: nn.Module,
    model_name: str,
    layers: Sequence[str],
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 256,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[float, dict[str, torch.Tensor]]:
    """:func:`accuracy`, and the unit scores of ``layers`` (``[N, J]`` float32 on the CPU, as an
    activation table holds them) recorded on the same forward passes."""
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with UnitScores(model, model_name, list(layers)) as rec:

        def keep() -> None:
            for layer in layers:
                parts[layer].append(rec.scores[layer].float().cpu())

        acc = _accuracy(model, pixels, labels, batch_size, autocast, keep)
    return acc, {layer: torch.cat(p) if p else torch.zeros(0, 0) for layer, p in parts.items()}


def _accuracy(
    model, pixels, labels, batch_size, autocast, after_batch: Callable[[], None] | None = None
) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(pixels), batch_size):
            with torch.no_grad(), autocast if autocast is not None else contextlib.nullcontext():
                logits = model(pixels[i : i + batch_size])
            correct += int((logits.argmax(dim=1) == labels[i : i + batch_size]).sum())
            if after_batch is not None:
                after_batch()
    finally:
        model.train(was_training)
    return correct / max(len(pixels), 1)
