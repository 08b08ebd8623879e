"""The built-in perturbations of SCIENCE.md §7: ``pgd`` (baseline), ``adv2``, ``pse``.

Map metrics compare the adversarial image's map of the *target* class with the benign
image's map of the *true* class (Adv²: the interpretation should look benign), both from
the victim's real interpreter (not the twin) at input size.
"""

from __future__ import annotations

import torch

from shared.perturb.adv2 import ADV2_LOSS, LAM_END, LAM_START, adv2, twin_map_fn
from shared.perturb.base import Columns, Perturbation, Victim, register_perturbation
from shared.perturb.cw import cw_l2
from shared.perturb.metrics import TOPK_PERCENT, map_l1, map_l2, success, topk_iou
from shared.perturb.pgd import check_budget, pgd
from shared.perturb.pse import KINDS, PSE_FORMULA, kind_shares, region_effects, shares_in_mask
from shared.perturb.smooth import SMOOTH_RELU_FORMULA
from shared.saliency.losses import topk_mask


def map_columns(
    victim: Victim,
    x: torch.Tensor,
    adv: torch.Tensor,
    true: torch.Tensor,
    target: torch.Tensor,
    percent: float,
    prefix: str = "",
) -> Columns:
    """success, map_l1, map_l2, map_iou of ``adv`` against the benign map."""
    benign, mapped = victim.maps(x, true), victim.maps(adv, target)
    return {
        f"{prefix}success": success(victim.logits(adv), target),
        f"{prefix}map_l1": map_l1(mapped, benign),
        f"{prefix}map_l2": map_l2(mapped, benign),
        f"{prefix}map_iou": topk_iou(mapped, benign, percent),
        f"{prefix}linf": (adv - x).abs().flatten(1).amax(1),
    }


@register_perturbation("pgd")
class PGDPerturbation(Perturbation):
    """Targeted L∞ PGD (ε = 8/255, step 1/255, [0, 1] clamp): the baseline without a map term."""

    formula = "x <- clip_[0,1](clip_eps(x - step*sign grad CE(f(x),t)))"

    def __init__(
        self,
        eps: float = 8 / 255,
        step: float = 1 / 255,
        steps: int = 300,
        random_start: bool = False,
        topk_percent: float = TOPK_PERCENT,
    ):
        check_budget(eps, step, steps)
        self.eps, self.step, self.steps, self.random_start = eps, step, steps, random_start
        self.topk_percent = topk_percent

    def attack(self, victim: Victim, x: torch.Tensor, true: torch.Tensor, target: torch.Tensor) -> Columns:
        adv = pgd(victim.pixel, x, target, self.eps, self.step, self.steps, self.random_start)
        return {"adv": adv, **map_columns(victim, x, adv, true, target, self.topk_percent)}


@register_perturbation("adv2")
class Adv2Perturbation(Perturbation):
    """Adv² (Zhang et al.): PGD to the target class that keeps the interpreter's map near the benign map."""

    formula = f"{ADV2_LOSS}; map gradient through twin: {SMOOTH_RELU_FORMULA}"

    def __init__(
        self,
        eps: float = 8 / 255,
        step: float = 1 / 255,
        steps_ce: int = 300,
        steps_joint: int = 1000,
        lam_start: float = LAM_START,
        lam_end: float = LAM_END,
        topk_percent: float = TOPK_PERCENT,
    ):
        check_budget(eps, step, steps_ce + steps_joint)
        self.eps, self.step, self.steps_ce, self.steps_joint = eps, step, steps_ce, steps_joint
        self.lam_start, self.lam_end, self.topk_percent = lam_start, lam_end, topk_percent

    def attack(self, victim: Victim, x: torch.Tensor, true: torch.Tensor, target: torch.Tensor) -> Columns:
        size = tuple(x.shape[-2:])
        g = twin_map_fn(
            victim.interpreter, victim.twin, victim.model_name, victim.normalise, target, victim.layer, size
        )
        r = adv2(
            victim.pixel,
            x,
            target,
            g,
            victim.maps(x, true),
            self.eps,
            self.step,
            self.steps_ce,
            self.steps_joint,
            self.lam_start,
            self.lam_end,
        )
        return {
            "adv": r.adv,
            "stage1_adv": r.stage1,  # plain PGD's image (the benign / PGD / Adv² picture)
            "map_term": r.map_term,
            **map_columns(victim, x, r.adv, true, target, self.topk_percent),
            **map_columns(victim, x, r.stage1, true, target, self.topk_percent, prefix="stage1_"),
        }


@register_perturbation("pse")
class PSEPerturbation(Perturbation):
    """PSE (Xu et al.): targeted C&W L2, then promotion/suppression per grid region and inside the CAMs."""

    formula = PSE_FORMULA

    def __init__(
        self,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        search_steps: int = 1,
        grid: int = 8,
        topk_percent: float = TOPK_PERCENT,
    ):
        self.c, self.kappa, self.steps, self.lr, self.search_steps = c, kappa, steps, lr, search_steps
        self.grid, self.topk_percent = grid, topk_percent

    def attack(self, victim: Victim, x: torch.Tensor, true: torch.Tensor, target: torch.Tensor) -> Columns:
        adv = cw_l2(victim.pixel, x, target, self.c, self.kappa, self.steps, self.lr, self.search_steps)
        r = region_effects(victim.pixel, x, adv, true, target, self.grid)
        frac = self.topk_percent / 100
        cams = {
            "cam_true": topk_mask(victim.maps(x, true), frac),
            "cam_target": topk_mask(victim.maps(adv, target), frac),
        }
        cols: Columns = {
            "adv": adv,
            "success": success(victim.logits(adv), target),
            "l2": (adv - x).flatten(1).norm(dim=1),
            "region_kind": r.kind,
            "region_d0": r.d0,
            "region_dt": r.dt,
        }
        shares = kind_shares(r.kind)
        for i, k in enumerate(KINDS):
            cols[f"share_{k}"] = shares[:, i]
        for cam, mask in cams.items():
            inside = shares_in_mask(r.kind, r.regions, mask)
            for i, k in enumerate(KINDS):
                cols[f"{cam}_{k}"] = inside[:, i]
        return cols
