"""Pictures of the input family's trials (SCIENCE.md §7), as PNG bytes the orchestrator logs to MLflow.

- ``maps_picture``: per image, the image and its benign map (true class), then per attack image
  (plain PGD's, Adv²'s) the adversarial image's map of the target class: Adv² Fig.-style.
- ``regions_picture``: PSE's region kinds (promotion / suppression / balanced) over the CAM of the
  true class (benign image) and of the target class (adversarial image), top-k CAM region outlined.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from shared.perturb import Victim
from shared.perturb.pse import KINDS, grid_regions
from shared.saliency.losses import topk_mask

KIND_COLOURS = ("#d62728", "#1f77b4", "#bcbd22", "#00000000")  # promotion, suppression, balanced, inactive


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def maps_picture(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    shown: dict[str, torch.Tensor],
    title: str,
) -> bytes:
    """Benign / PGD / Adv² maps side by side (the PGD column: the attack's own, or Adv²'s stage 1)."""
    plt = _plt()
    n = len(x)
    advs = (
        [("PGD", shown["stage1_adv"]), ("Adv²", shown["adv"])]
        if "stage1_adv" in shown
        else [("PGD", shown["adv"])]
    )
    benign = victim.maps(x, y).cpu()
    cols = 2 + 2 * len(advs)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for r in range(n):
        axes[r][0].imshow(_img(x[r]))
        axes[r][1].imshow(_img(x[r]))
        axes[r][1].imshow(benign[r].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for j, (name, adv) in enumerate(advs):
            a = adv[:n].to(x.device)
            mapped = victim.maps(a, t).cpu()
            hit = victim.logits(a).argmax(1) == t
            axes[r][2 + 2 * j].imshow(_img(a[r]))
            axes[r][3 + 2 * j].imshow(_img(a[r]))
            axes[r][3 + 2 * j].imshow(mapped[r].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[r][3 + 2 * j].set_xlabel("on target" if bool(hit[r]) else "missed", fontsize=6)
            if r == 0:
                axes[r][2 + 2 * j].set_title(f"{name} image", fontsize=7)
                axes[r][3 + 2 * j].set_title(f"{name} map (target)", fontsize=7)
        if r == 0:
            axes[r][0].set_title("image", fontsize=7)
            axes[r][1].set_title("benign map (true)", fontsize=7)
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    return _png(fig, plt)


def regions_picture(
    victim: Victim,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    shown: dict[str, torch.Tensor],
    grid: int,
    title: str,
    topk_percent: float = 20.0,
) -> bytes:
    """PSE's region kinds over the true class's CAM (benign image) and the target class's (adversarial)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _plt()
    n = len(x)
    adv = shown["adv"][:n].to(x.device)
    kinds = shown["region_kind"][:n]
    regions = grid_regions(x.shape[-2], x.shape[-1], grid)
    cams = [("true-class CAM", x, victim.maps(x, y)), ("target-class CAM", adv, victim.maps(adv, t))]
    cmap = ListedColormap(KIND_COLOURS)
    fig, axes = plt.subplots(n, 3, figsize=(1.8 * 3, 1.8 * n), squeeze=False)
    for r in range(n):
        pixel_kind = kinds[r][regions].numpy()
        axes[r][0].imshow(_img(adv[r]))
        for j, (name, img, cam) in enumerate(cams):
            ax = axes[r][1 + j]
            ax.imshow(_img(img[r]))
            ax.imshow(cam[r].cpu().numpy(), cmap="gray", alpha=0.5, vmin=0, vmax=1)
            ax.imshow(
                pixel_kind, cmap=cmap, alpha=0.35, vmin=-0.5, vmax=len(KINDS) - 0.5, interpolation="nearest"
            )
            mask = topk_mask(cam[r : r + 1], topk_percent / 100)[0].cpu().float().numpy()
            ax.contour(mask, levels=[0.5], colors="white", linewidths=0.6)
            if r == 0:
                ax.set_title(name, fontsize=7)
        if r == 0:
            axes[r][0].set_title("C&W image", fontsize=7)
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=c, label=k) for k, c in zip(KINDS[:3], KIND_COLOURS)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=8)
    return _png(fig, plt)
