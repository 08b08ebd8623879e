"""The thesis's attacks (SCIENCE.md §2), each one hook over :mod:`shared.attacks.base`."""

from __future__ import annotations

import torch

from shared.attacks.base import Attack, StepScores, register_attack
from shared.attacks.losses import push_down_loss, push_up_loss, push_up_max_loss


@register_attack("finetune")
class FineTune(Attack):
    """The control row: α = 0, the maintain loss (Eq. 6) alone; the α rule never moves it."""

    uses = ()
    fixed_alpha = 0.0

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return torch.zeros(())


@register_attack("push-down")
class PushDown(Attack):
    """Eq. 7: push the initial top-k images' scores of each attacked unit towards zero."""

    uses = ("attack",)

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        if self.targets.member is None or step.attack_rows is None:
            raise ValueError("push-down needs AttackTargets.member and the step's attack_rows (D_attack)")
        member = self.targets.member[layer][step.attack_rows]
        return push_down_loss(self.select("attack", layer, step), member, self.targets.scale[layer])


@register_attack("push-up")
class PushUp(Attack):
    """Eq. 8: decoy images' scores above every training image's, hinge over all (B, P) pairs."""

    uses = ("train", "decoy")

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return push_up_loss(
            self.select("train", layer, step), self.select("decoy", layer, step), self.targets.scale[layer]
        )


@register_attack("push-up-max")
class PushUpMax(Attack):
    """Proposed deviation from Eq. 8 (``shared.attacks.losses.push_up_max_loss``): each unit's best
    decoy above the batch's best image. Not the thesis's push-up: reported under its own name."""

    uses = ("train", "decoy")
    all_decoys = True  # the max over P is over all of D_decoy, not over a sample

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return push_up_max_loss(
            self.select("train", layer, step), self.select("decoy", layer, step), self.targets.scale[layer]
        )
