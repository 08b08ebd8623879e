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
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

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
    """Base class: override :meth:`layer_loss` (and set ``uses``); the scope mean is shared."""

    name: ClassVar[str] = ""
    uses: ClassVar[tuple[str, ...]] = ()  # which of SETS need hooked scores
    fixed_alpha: ClassVar[float | None] = None  # α the controller must not move (fine-tuning: 0)
    all_decoys: ClassVar[bool] = False  # every step sees all of D_decoy (ignores decoy_batch_size)

    def __init__(self, targets: AttackTargets) -> None:
        self.targets = targets

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement layer_loss (its L_A on one layer)")

    def loss(self, step: StepScores) -> torch.Tensor:
        """``L_A`` of the scope: mean of the per-layer losses (SCIENCE.md §2)."""
        return scope_mean({layer: self.layer_loss(layer, step) for layer in self.targets.layers})

    def select(self, kind: str, layer: str, step: StepScores) -> torch.Tensor:
        """The attacked units' columns of one set's scores."""
        return step.get(kind, layer)[:, self.targets.units[layer]]


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register an :class:`Attack` subclass under ``name`` (duplicates raise)."""

    def deco(cls: type[Attack]) -> type[Attack]:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"register_attack({name!r}) needs an Attack subclass, got {cls!r}")
        bad = [u for u in cls.uses if u not in SETS]
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


def build_attack(name: str, targets: AttackTargets) -> Attack:
    return get_attack(name)(targets)


# --- the shared step -----------------------------------------------------------------


@dataclass
class StepBatch:
    """Pixels of one step: the training batch and, when the attack uses them, D_attack / D_decoy samples."""

    train: torch.Tensor  # [B, 3, H, W]
    attack: torch.Tensor | None = None  # [M', 3, H, W]
    attack_rows: torch.Tensor | None = None  # long [M']: their rows in targets.member
    decoy: torch.Tensor | None = None  # [P, 3, H, W]


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
    optimizer: torch.optim.Optimizer,
    autocast: contextlib.AbstractContextManager | None = None,
) -> StepLosses:
    """One optimizer step on Eq. 5. ``model`` should be in train mode, ``teacher`` frozen in eval mode."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: must be in [0, 1) (Eq. 5)")
    layers = list(attack.targets.layers)
    amp = autocast if autocast is not None else contextlib.nullcontext()
    with torch.no_grad(), amp:
        teacher_logits = teacher(batch.train)
    scores: dict[str, dict[str, torch.Tensor]] = {}
    with amp:
        if "train" in attack.uses:
            with UnitScores(model, model_name, layers, detach=False) as rec:
                logits = rec.run(batch.train)
            scores["train"] = rec.scores
        else:
            logits = model(batch.train)
        for kind in ("attack", "decoy"):
            if kind not in attack.uses:
                continue
            pixels = getattr(batch, kind)
            if pixels is None:
                raise ValueError(
                    f"attack {attack.name!r} uses the {kind!r} set but the step has no {kind} pixels"
                )
            with UnitScores(model, model_name, layers, detach=False) as rec:
                rec.run(pixels, stop_early=True)  # only the hooked layers' scores are needed
            scores[kind] = rec.scores
    l_m = maintain_loss(logits, teacher_logits)
    if attack.uses:
        l_a = attack.loss(StepScores(scores, batch.attack_rows))
    else:
        l_a = torch.zeros((), device=l_m.device)
    total = alpha * l_a + (1.0 - alpha) * l_m
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
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(pixels), batch_size):
            with autocast if autocast is not None else contextlib.nullcontext():
                logits = model(pixels[i : i + batch_size])
            correct += int((logits.argmax(dim=1) == labels[i : i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(pixels), 1)
