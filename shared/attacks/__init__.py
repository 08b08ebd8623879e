"""Attacks on feature visualization by fine-tuning (SCIENCE.md §2): losses, plugins, registry."""

from shared.attacks import builtin as _builtin  # noqa: F401  (registers finetune, push-down, push-up, push-up-max)
from shared.attacks.base import (
    ATTACKS,
    SETS,
    Attack,
    AttackTargets,
    StepBatch,
    StepLosses,
    StepScores,
    accuracy,
    attack_names,
    build_attack,
    get_attack,
    mix_seed,
    register_attack,
    sample_rows,
    train_step,
)
from shared.attacks.losses import (
    SCALES,
    maintain_loss,
    push_down_loss,
    push_up_loss,
    push_up_max_loss,
    scope_mean,
    unit_scale,
)

__all__ = [
    "ATTACKS",
    "SCALES",
    "SETS",
    "Attack",
    "AttackTargets",
    "StepBatch",
    "StepLosses",
    "StepScores",
    "accuracy",
    "attack_names",
    "build_attack",
    "get_attack",
    "maintain_loss",
    "mix_seed",
    "push_down_loss",
    "push_up_loss",
    "push_up_max_loss",
    "register_attack",
    "sample_rows",
    "scope_mean",
    "train_step",
    "unit_scale",
]
