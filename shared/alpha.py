"""The α controller of SCIENCE.md §2 as a pure function (dynamic balancing after Davari et al. 2022).

Thesis Eq. 5 minimises ``α·L_A + (1−α)·L_M``. Every evaluation interval the accuracy
drop ``acc(θ0) − acc(θ)`` (percentage points) on a fixed held-out subset decides the
next α: above the limit α is halved, otherwise doubled up to ``alpha_max`` (< 1, or
the maintain term would change sign). A floor ``alpha_min`` keeps α from vanishing;
a trial already at the floor whose drop is still over the limit cannot be rescued by
α any more ("budget broken"): the sweep's scheduler stops such a trial.

No Tune here: the Tune scheduler and the standalone attack loop both call
:func:`next_alpha`, so the rule is tested once, without a cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Action = Literal["halve", "double", "hold"]


@dataclass(frozen=True)
class AlphaConfig:
    """Settings of the α rule (SCIENCE.md §2 defaults)."""

    alpha0: float = 0.1  # α of the first evaluation interval
    alpha_max: float = 0.95  # doubling stops here; must stay < 1 (Eq. 5's maintain weight 1−α > 0)
    max_drop_pp: float = 0.5  # accuracy drop (pp) above which α is halved
    alpha_min: float = 1e-4  # halving stops here; a drop over the limit at the floor breaks the budget

    def __post_init__(self) -> None:
        for name in ("alpha0", "alpha_max", "max_drop_pp", "alpha_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"AlphaConfig.{name}={value!r}: must be a finite number")
        if not 0.0 < self.alpha_max < 1.0:
            raise ValueError(
                f"AlphaConfig.alpha_max={self.alpha_max!r}: must be in (0, 1); at α >= 1 the maintain "
                f"term (1 − α)·L_M of Eq. 5 vanishes or changes sign"
            )
        if not 0.0 < self.alpha_min <= self.alpha_max:
            raise ValueError(
                f"AlphaConfig.alpha_min={self.alpha_min!r}: must be in (0, alpha_max={self.alpha_max!r}]"
            )
        if not self.alpha_min <= self.alpha0 <= self.alpha_max:
            raise ValueError(
                f"AlphaConfig.alpha0={self.alpha0!r}: must lie in [alpha_min, alpha_max] = "
                f"[{self.alpha_min!r}, {self.alpha_max!r}] (and so in (0, 1))"
            )
        if self.max_drop_pp < 0:
            raise ValueError(
                f"AlphaConfig.max_drop_pp={self.max_drop_pp!r}: must be >= 0 (percentage points of top-1)"
            )


@dataclass(frozen=True)
class AlphaDecision:
    """What the rule decided at one evaluation, and why (logged as metrics)."""

    alpha: float  # α for the next interval
    previous: float  # α of the interval just evaluated
    drop_pp: float  # acc(θ0) − acc(θ) in percentage points
    action: Action  # "halve", "double", or "hold" (already at the floor / the cap)
    at_floor: bool  # the new α equals alpha_min
    budget_broken: bool  # α was already at the floor and the drop is still over the limit

    def as_metrics(self) -> dict[str, float | str | bool]:
        """Step metrics of the decision (``alpha`` itself is reported as the α the interval used)."""
        return {
            "alpha_next": self.alpha,
            "alpha_action": self.action,
            "alpha_at_floor": self.at_floor,
            "budget_broken": self.budget_broken,
        }


def next_alpha(alpha: float, drop_pp: float, cfg: AlphaConfig | None = None) -> AlphaDecision:
    """SCIENCE.md §2: ``drop > max_drop_pp`` → ``α/2`` (not below alpha_min), else ``min(2α, alpha_max)``."""
    cfg = cfg or AlphaConfig()
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise ValueError(
            f"alpha={alpha!r}: the rule needs 0 < α < 1 (the fine-tuning baseline keeps α = 0 and never calls it)"
        )
    if isinstance(drop_pp, bool) or not isinstance(drop_pp, int | float) or math.isnan(drop_pp):
        raise ValueError(f"drop_pp={drop_pp!r}: must be a number (accuracy drop in percentage points)")
    alpha, drop_pp = float(alpha), float(drop_pp)
    if drop_pp > cfg.max_drop_pp:
        new = max(alpha / 2.0, cfg.alpha_min)
        action: Action = "halve" if new < alpha else "hold"
        broken = alpha <= cfg.alpha_min
    else:
        new = min(2.0 * alpha, cfg.alpha_max)
        action = "double" if new > alpha else "hold"
        broken = False
    return AlphaDecision(new, alpha, drop_pp, action, new <= cfg.alpha_min, broken)
