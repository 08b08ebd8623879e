"""A whole attack family written outside orchestrator/, jobs/ and shared/ (issue 9's proof).

``push-random-up`` pushes a fixed, seeded random set of training images above each unit's
best training image: the push-up loss of SCIENCE.md §2 with a random set instead of a decoy
class. It reuses the shared fine-tuning loop (runner ``finetuning``) and the unit metrics; its
own parts are the config, the attack's hook and the data provider. A sweep loads it with
``plugins: [tests.plugins.random_set]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from jobs.attack_data import build_targets, decode_ids, initial_topk, register_provider, split_index
from jobs.attack_spec import AttackSpec
from shared.attacks import (
    AttackConfig,
    AttackFamily,
    StepScores,
    UnitInputs,
    UnitScoreAttack,
    push_up_loss,
    register_attack,
    register_family,
)


@register_attack("push-random-up")
class PushRandomUp(UnitScoreAttack):
    """Push a fixed random image set above each unit's best training image."""

    uses = ("train", "decoy")
    all_decoys = True

    def layer_loss(self, layer: str, step: StepScores) -> torch.Tensor:
        return push_up_loss(
            self.select("train", layer, step), self.select("decoy", layer, step), self.targets.scale[layer]
        )


class RandomSetAttack(AttackConfig):
    """One entry of the family: how many random training images are pushed up."""

    name: Literal["push-random-up"]
    images: int = Field(8, ge=1)  # size of the random set


@register_provider("random-set")
def random_set(spec: AttackSpec, store_uri: str, device: torch.device) -> UnitInputs:
    """Attacked units and their scales (initial top-k), and the random set's pixels."""
    targets, _ = build_targets(spec, initial_topk(spec, store_uri), with_member=False)
    ids, _ = split_index(spec.dataset, spec.train_split)
    rng = np.random.default_rng([spec.seed, 7])
    picked = sorted(rng.choice(ids.astype(str), size=int(spec.config["images"]), replace=False).tolist())
    pixels, _ = decode_ids(spec, spec.train_split, picked)
    return UnitInputs(targets.to(device), None, pixels.to(device))


@register_family
class RandomSet(AttackFamily):
    """A random image set pushed up the units' rankings (a test family)."""

    name = "random-set"
    config = RandomSetAttack
    attacks = ("push-random-up",)
    runner = "finetuning"
    data = "random-set"
    metrics = ("clip_delta", "kendall_tau", "topk_overlap", "acc", "delta_acc")
    report_columns = metrics

    @classmethod
    def extra_images_per_step(cls, entry: RandomSetAttack) -> int:
        return entry.images
