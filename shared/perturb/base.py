"""Input-space perturbations as plugins (SCIENCE.md §7): the victim they attack, their registry.

A :class:`Victim` bundles what every attack of §7 needs from one model: the bare model (in
eval mode), its pixel-space view, its interpreter and the smooth-ReLU twin (built on first
use). A :class:`Perturbation` has one hook, :meth:`Perturbation.attack`, which turns a batch
of pixel images, true labels and target classes into per-image columns (``adv`` plus
metrics): what a Ray Data batch job writes to Parquet. Its docstring's first line is its
description; :meth:`Perturbation.params` is what a run logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from shared.interpreters.base import Interpreter, as_target, get_interpreter
from shared.perturb.pixel import Normalise, PixelModel, normaliser
from shared.perturb.smooth import smooth_relu_twin
from shared.registry import Registry, first_line

Columns = dict[str, torch.Tensor]  # name -> per-image values [N, ...]


@dataclass(eq=False)
class Victim:
    """One model under attack: ``model`` takes normalised inputs; everything else works on [0, 1] pixels."""

    model: nn.Module
    model_name: str | None
    normalise: Normalise
    interpreter: Interpreter
    layer: str | None = None
    _twin: nn.Module | None = field(default=None, repr=False)

    @property
    def pixel(self) -> PixelModel:
        return PixelModel(self.model, self.normalise)

    @property
    def twin(self) -> nn.Module:
        """The smooth-ReLU twin (``smooth.py``), copied once per victim."""
        if self._twin is None:
            self._twin = smooth_relu_twin(self.model)
        return self._twin

    def maps(self, x: torch.Tensor, cls: int | torch.Tensor) -> torch.Tensor:
        """The real interpreter's normalised map of class ``cls`` at pixel images ``x``, at input size, detached."""
        e = self.interpreter.explain(
            self.model, self.model_name, self.normalise(x), cls, self.layer, tuple(x.shape[-2:])
        )
        return e.heatmap.detach()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.pixel(x)


def make_victim(
    model: nn.Module, model_name: str, interpreter: str = "gradcam", layer: str | None = None
) -> Victim:
    """A :class:`Victim` of a registered model (its normalisation); the model is put in eval mode."""
    model.eval()
    p = next(model.parameters(), None)
    return Victim(
        model,
        model_name,
        normaliser(model_name, p.device if p is not None else None),
        get_interpreter(interpreter)(),
        layer,
    )


def random_targets(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A target class per image, uniform over the classes other than its label."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: a targeted attack needs at least 2 classes")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels range over [{int(labels.min())}, {int(labels.max())}]; classes are 0..{num_classes - 1}"
        )
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def check_targets(target: int | torch.Tensor, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Targets as ``[N]`` longs, each in 0..num_classes−1 (else a ValueError naming the bad value)."""
    t = as_target(target, n, device)
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(f"target class {int(t[bad][0])} is out of range; valid: 0..{num_classes - 1}")
    return t


class Perturbation:
    """Base class: plugins implement :meth:`attack`."""

    name: ClassVar[str] = ""  # set by register_perturbation
    formula: ClassVar[str] = ""  # the exact rule, logged with the params

    @classmethod
    def description(cls) -> str:
        return first_line(cls.__doc__)

    def params(self) -> dict[str, Any]:
        """Run parameters to log: the constructor's values and the formula."""
        return {**{k: v for k, v in vars(self).items() if not k.startswith("_")}, "formula": self.formula}

    def attack(self, victim: Victim, x: torch.Tensor, true: torch.Tensor, target: torch.Tensor) -> Columns:
        """The hook: pixel images ``x`` [N,C,H,W], labels and targets [N] -> per-image columns incl. ``adv``."""
        raise NotImplementedError


PERTURBATIONS: Registry[type[Perturbation]] = Registry("perturbation")


def register_perturbation(name: str) -> Callable[[type[Perturbation]], type[Perturbation]]:
    """Class decorator: register a :class:`Perturbation` under ``name`` (duplicates raise)."""

    def deco(cls: type[Perturbation]) -> type[Perturbation]:
        if not (isinstance(cls, type) and issubclass(cls, Perturbation)):
            raise TypeError(f"register_perturbation({name!r}) expects a Perturbation subclass, got {cls!r}")
        if not cls.description():
            raise TypeError(
                f"perturbation {name!r} ({cls.__name__}) needs a docstring: its first line describes it"
            )
        PERTURBATIONS.register(name)(cls)
        cls.name = name
        return cls

    return deco


def get_perturbation(name: str) -> type[Perturbation]:
    """The registered class; unknown names list the valid ones."""
    return PERTURBATIONS.get(name)


def perturbation_names() -> list[str]:
    return PERTURBATIONS.names()
