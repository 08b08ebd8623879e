"""The thesis's attacks (SCIENCE.md §2), each one hook over :class:`shared.attacks.base.UnitScoreAttack`."""

from __future__ import annotations

import torch

from shared.attacks.base import StepScores, UnitScoreAttack, register_attack
from shared.attacks.losses import push_down_loss, push_up_loss, push_up_pairwise_loss


@register_attack("finetune")
class FineTune(UnitScoreAttack):
    """The control row: α = 0, the maintain loss (Eq. 6) alone; the α rule never moves it."""

    uses = ()
    fixed_alpha = 0.0

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return torch.zeros(())


@register_attack("push-down")
class PushDown(UnitScoreAttack):
    """Eq. 7: push the initial top-k images' scores of each attacked unit towards zero."""

    uses = ("attack",)

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        if self.targets.member is None or step.attack_rows is None:
            raise ValueError("push-down needs AttackTargets.member and the step's attack_rows (D_attack)")
        member = self.targets.member[layer][step.attack_rows]
        return push_down_loss(self.select("attack", layer, step), member, self.targets.scale[layer])


@register_attack("push-up")
class PushUp(UnitScoreAttack):
    """Eq. 8 as SCIENCE.md §2 reads it: each unit's best decoy above the batch's best image."""

    uses = ("train", "decoy")
    all_decoys = True  # the max over D_decoy is over all of it, not over a sample

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return push_up_loss(
            self.select("train", layer, step), self.select("decoy", layer, step), self.targets.scale[layer]
        )


@register_attack("push-up-pairwise")
class PushUpPairwise(UnitScoreAttack):
    """Eq. 8's literal pairwise reading: decoys above every training image, hinge over all (B, P) pairs."""

    uses = ("train", "decoy")

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return push_up_pairwise_loss(
            self.select("train", layer, step), self.select("decoy", layer, step), self.targets.scale[layer]
        )
