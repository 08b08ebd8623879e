"""Attack families and their attacks (SCIENCE.md §2, §6, §7): records, plugins, registries, losses.

Importing this package registers the built-in families (``featureviz``: the thesis's attacks;
``saliency``: Heo et al.'s saliency fooling; ``input``: Adv² and PSE's input-space attacks).
"""

from shared.attacks import featureviz as _featureviz  # noqa: F401  (registers the thesis's family)
from shared.attacks import saliency as _saliency  # noqa: F401  (registers Heo et al.'s family)

from shared.attacks import input_attacks as _input_attacks  # noqa: F401  # isort: skip  (registered third: report order)
from shared.attacks.base import (
    ATTACKS,
    SETS,
    Attack,
    AttackTargets,
    StepBatch,
    StepLosses,
    StepScores,
    UnitInputs,
    UnitScoreAttack,
    accuracy,
    attack_names,
    build_attack,
    get_attack,
    mix_seed,
    register_attack,
    sample_rows,
    train_step,
)
from shared.attacks.family import (
    BASE,
    FAMILIES,
    AttackConfig,
    AttackFamily,
    ConfigProblem,
    attack_order,
    config_models,
    families,
    family_of,
    register_family,
    starting_models,
)
from shared.attacks.losses import (
    SCALES,
    maintain_loss,
    push_down_loss,
    push_up_loss,
    push_up_pairwise_loss,
    scope_mean,
    unit_scale,
)

__all__ = [
    "BASE",
    "ATTACKS",
    "FAMILIES",
    "SCALES",
    "SETS",
    "Attack",
    "AttackConfig",
    "AttackFamily",
    "AttackTargets",
    "ConfigProblem",
    "StepBatch",
    "StepLosses",
    "StepScores",
    "UnitInputs",
    "UnitScoreAttack",
    "accuracy",
    "attack_names",
    "attack_order",
    "build_attack",
    "config_models",
    "families",
    "family_of",
    "get_attack",
    "maintain_loss",
    "mix_seed",
    "push_down_loss",
    "push_up_loss",
    "push_up_pairwise_loss",
    "register_attack",
    "register_family",
    "sample_rows",
    "scope_mean",
    "starting_models",
    "train_step",
    "unit_scale",
]
