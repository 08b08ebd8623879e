"""Input-space attacks on interpreters (SCIENCE.md §7): PGD, Adv², C&W + PSE, their metrics and registry.

Importing the package registers ``pgd``, ``adv2`` and ``pse``. A batch job builds one
:class:`Victim` per model (``make_victim``) and calls
``get_perturbation(name)(**params).attack(victim, x, labels, targets)`` per batch.
"""

from shared.perturb import builtin as _builtin  # noqa: F401  (registers the built-ins)
from shared.perturb.adv2 import ADV2_LOSS, Adv2Result, adv2, lam_schedule, twin_map_fn
from shared.perturb.base import (
    PERTURBATIONS,
    Columns,
    Perturbation,
    Victim,
    check_targets,
    get_perturbation,
    make_victim,
    perturbation_names,
    random_targets,
    register_perturbation,
)
from shared.perturb.cw import cw_l2
from shared.perturb.metrics import map_l1, map_l2, mask_iou, success, success_rate, topk_iou
from shared.perturb.pgd import pgd, project
from shared.perturb.pixel import Normalise, PixelModel, normaliser, pixel_model
from shared.perturb.pse import PSE_FORMULA, PSEResult, classify, grid_regions, region_effects, shares_in_mask
from shared.perturb.smooth import SMOOTH_RELU_FORMULA, SmoothReLU, smooth_functional_relu, smooth_relu_twin

__all__ = [
    "ADV2_LOSS",
    "PERTURBATIONS",
    "PSE_FORMULA",
    "SMOOTH_RELU_FORMULA",
    "Adv2Result",
    "Columns",
    "Normalise",
    "PSEResult",
    "Perturbation",
    "PixelModel",
    "SmoothReLU",
    "Victim",
    "adv2",
    "check_targets",
    "classify",
    "cw_l2",
    "get_perturbation",
    "grid_regions",
    "lam_schedule",
    "make_victim",
    "map_l1",
    "map_l2",
    "mask_iou",
    "normaliser",
    "perturbation_names",
    "pgd",
    "pixel_model",
    "project",
    "random_targets",
    "region_effects",
    "register_perturbation",
    "shares_in_mask",
    "smooth_functional_relu",
    "smooth_relu_twin",
    "success",
    "success_rate",
    "topk_iou",
    "twin_map_fn",
]
