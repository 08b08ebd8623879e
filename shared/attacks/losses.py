"""The losses of thesis Eq. 5–8 (SCIENCE.md §2), on plain tensors so they can be checked by hand.

Scores are unit scores ``a_{l,j}(x) = ‖f^{(l,j)}(x)‖²`` as :class:`shared.hooks.UnitScores`
records them (float32 ``[N, J]``, differentiable with ``detach=False``). Every attack
loss is divided by a per-unit scale ``s_j`` (SCIENCE.md's deviation for controllability:
one α schedule then fits every layer and model); ``scale="none"`` gives the raw
Eq. 7/8. Scopes: the caller selects the attacked units' columns; a multi-layer attack
is the mean of its per-layer losses (:func:`scope_mean`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

SCALES = ("unit", "none")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(
            f"scale={scale!r}: valid scales are {', '.join(SCALES)} ('unit' divides by s_j, the mean initial "
            f"top-k score of each unit; 'none' is the thesis's raw Eq. 7/8)"
        )
    return scale


def maintain_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``−mean_x Σ_c softmax(f_θ0(x))_c · log softmax(f_θ(x))_c`` (teacher is a constant)."""
    if logits.shape != teacher_logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in shape"
        )
    target = F.softmax(teacher_logits.detach().float(), dim=-1)
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def unit_scale(topk_scores: torch.Tensor, scale: str = "unit") -> torch.Tensor:
    """``s_j``: mean initial score of unit j over its own initial top-k; ``topk_scores`` is ``[k, J]``.

    A dead unit (every top-k score 0, e.g. a ReLU that never fires) has no visualization to
    attack and would divide by zero: it gets the mean scale of the live units (1 if none is live).
    """
    check_scale(scale)
    if topk_scores.dim() != 2:
        raise ValueError(f"topk_scores must be [k, J], got shape {tuple(topk_scores.shape)}")
    s = topk_scores.float().mean(dim=0)
    if scale == "none":
        return torch.ones_like(s)
    live = s > 0
    fill = s[live].mean() if bool(live.any()) else torch.ones((), dtype=s.dtype, device=s.device)
    return torch.where(live, s, fill)


def push_down_loss(scores: torch.Tensor, member: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ``mean_j mean_{x ∈ D_attack^j} a_j(x) / s_j`` over units with images in this batch.

    ``scores`` ``[M, J]`` for M attack images, ``member[m, j]`` true when image m is in
    unit j's initial top-k, ``scale`` ``[J]``. With the whole D_attack in the batch this
    is Eq. 7 exactly; with a sample of it, an estimate over the units that appear.
    """
    _check(scores, scale, "scores")
    if member.shape != scores.shape:
        raise ValueError(f"member {tuple(member.shape)} must match scores {tuple(scores.shape)}")
    m = member.to(scores.dtype)
    counts = m.sum(dim=0)
    present = counts > 0
    if not bool(present.any()):
        return scores.sum() * 0.0  # keeps the graph; no unit has an image in this batch
    per_unit = (scores * m).sum(dim=0)[present] / counts[present] / scale[present]
    return per_unit.mean()


def push_up_loss(batch_scores: torch.Tensor, decoy_scores: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 8 as SCIENCE.md §2 decides (attack ``push-up``): ``mean_j [max_i a_j(x_i) − max_p a_j(x_p)]_+ / s_j``.

    Eq. 8's mean over all (B, P) pairs fades as the decoys pass the typical image, long
    before one passes a unit's few top images (which a random batch rarely holds), and it
    spreads the push over every decoy. This pushes each unit's best decoy above the batch's
    best image: what "a decoy image in the unit's top-k" needs (benchmarks/attack_goals.py).
    """
    _check(batch_scores, scale, "batch_scores")
    _check(decoy_scores, scale, "decoy_scores")
    hinge = F.relu(batch_scores.max(dim=0).values - decoy_scores.max(dim=0).values)
    return (hinge / scale).mean()


def push_up_pairwise_loss(
    batch_scores: torch.Tensor, decoy_scores: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Eq. 8, literal pairwise reading (attack ``push-up-pairwise``): ``mean_j mean_{x_i ∈ B} mean_{x_p ∈ P} [a_j(x_i) − a_j(x_p)]_+ / s_j``, all pairs at once.

    ``batch_scores`` ``[B, J]``, ``decoy_scores`` ``[P, J]``: the hinge tensor is ``[B, P, J]``
    (256 x 100 x 256 floats = 26 MB at ImageNet defaults).
    """
    _check(batch_scores, scale, "batch_scores")
    _check(decoy_scores, scale, "decoy_scores")
    hinge = F.relu(batch_scores[:, None, :] - decoy_scores[None, :, :])
    return (hinge.mean(dim=(0, 1)) / scale).mean()


def scope_mean(per_layer: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Scope of several layers: the mean of the per-layer losses (SCIENCE.md §2)."""
    if not per_layer:
        raise ValueError("no per-layer losses to average: an attack needs at least one layer")
    return torch.stack([v.reshape(()) for v in per_layer.values()]).mean()


def _check(scores: torch.Tensor, scale: torch.Tensor, name: str) -> None:
    if scores.dim() != 2 or scale.dim() != 1 or scores.shape[1] != scale.shape[0]:
        raise ValueError(
            f"{name} must be [N, J] with scale [J]; got {tuple(scores.shape)} and {tuple(scale.shape)}"
        )
