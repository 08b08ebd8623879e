"""Fooling losses, test losses and FSR of SCIENCE.md §6, checked on hand-computed maps."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

from shared.saliency import (
    FSR_RANGES,
    active_loss,
    active_test_loss,
    center_mass_loss,
    center_mass_test_loss,
    center_of_mass,
    frame_mask,
    fsr,
    location_loss,
    spearman,
    topk_loss,
    topk_mask,
)


def test_frame_mask_is_h_over_7_wide():
    m = frame_mask(7, 7)
    assert m.sum() == 49 - 25 and m[1:6, 1:6].sum() == 0 and m[0].all() and m[:, 6].all()
    m = frame_mask(14, 21)  # ⌊14/7⌋ = 2 rows, ⌊21/7⌋ = 3 columns
    assert m[2:12, 3:18].sum() == 0 and m[:2].all() and m[:, :3].all() and m[:, 18:].all()
    assert m.sum() == 14 * 21 - 10 * 15
    m = frame_mask(224, 224)  # Heo's mask: 0 for 32 <= i < 192
    assert m[32:192, 32:192].sum() == 0 and m[31].all() and m[192].all()
    with pytest.raises(ValueError, match="upsample"):
        frame_mask(6, 6)


def test_location_loss_by_hand():
    zeros, ones = torch.zeros(1, 7, 7), torch.ones(1, 7, 7)
    torch.testing.assert_close(location_loss(zeros), torch.tensor([24 / 49]))
    torch.testing.assert_close(location_loss(ones), torch.tensor([25 / 49]))
    torch.testing.assert_close(location_loss(frame_mask(7, 7)[None]), torch.tensor([0.0]))
    half = torch.full((2, 7, 7), 0.5)
    torch.testing.assert_close(location_loss(half), torch.tensor([0.25, 0.25]))


def test_topk_mask_and_loss_by_hand():
    h0 = torch.arange(100.0).view(1, 10, 10)
    p = topk_mask(h0)
    assert p.sum() == 10 and p.view(-1)[90:].all()  # top 10 % = values 90..99
    # Unchanged map: mean over P of minmax(h)² = mean((90..99)/99)²
    expected = sum((v / 99) ** 2 for v in range(90, 100)) / 10
    torch.testing.assert_close(topk_loss(h0, p), torch.tensor([expected]))
    flipped = 99 - h0  # the old top now holds the smallest values
    expected = sum((v / 99) ** 2 for v in range(0, 10)) / 10
    torch.testing.assert_close(topk_loss(flipped, p), torch.tensor([expected]))
    torch.testing.assert_close(topk_loss(3 * h0 + 5, p), topk_loss(h0, p))  # min–max normalised first
    with pytest.raises(ValueError, match="topk_mask"):
        topk_loss(h0, p[:, :5])


def test_center_of_mass_and_losses_by_hand():
    h = torch.zeros(2, 5, 5)
    h[0, 2, 3] = 1.0
    h[1, 0, 0] = h[1, 0, 4] = 1.0
    torch.testing.assert_close(center_of_mass(h), torch.tensor([[2.0, 3.0], [0.0, 2.0]]))
    a, b = torch.zeros(1, 5, 5), torch.zeros(1, 5, 5)
    a[0, 0, 0], b[0, 3, 4] = 1.0, 1.0
    torch.testing.assert_close(center_mass_loss(a, b), torch.tensor([-7.0]))  # −(|0−3| + |0−4|)
    torch.testing.assert_close(center_mass_test_loss(a, b), torch.tensor([5.0 / math.hypot(4, 4)]))
    torch.testing.assert_close(center_mass_test_loss(b, b), torch.tensor([0.0]))


def test_active_loss_by_hand():
    h_c1, h_c2 = torch.ones(1, 4, 4), torch.full((1, 4, 4), 0.5)
    h0_c1, h0_c2 = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    torch.testing.assert_close(active_loss(h_c1, h_c2, h0_c1, h0_c2), torch.tensor([0.5 * (1.0 + 0.25)]))
    torch.testing.assert_close(
        active_loss(h0_c2, h0_c1, h0_c1, h0_c2), torch.tensor([0.0])
    )  # swapped exactly


def test_spearman_matches_scipy_with_ties():
    torch.manual_seed(0)
    a, b = torch.rand(3, 6, 6), torch.rand(3, 6, 6)
    a[0, :3] = 0.0  # ties, as ReLU'd maps have
    b[1] = torch.round(b[1] * 4)
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-6)
    assert torch.isnan(spearman(torch.ones(1, 3, 3), b[:1, :3, :3])).all()  # constant map: undefined


def test_active_test_loss_by_hand():
    h0_c1 = torch.arange(16.0).view(1, 4, 4)
    h0_c2 = 15 - h0_c1  # the other class's map is the reverse ranking: s = −1
    t1, t2 = active_test_loss(h0_c1, h0_c2, h0_c1, h0_c2)  # not fooled: s(c1,c2) − s(c1,c1) = −1 − 1
    torch.testing.assert_close(t1, torch.tensor([-2.0]))
    torch.testing.assert_close(t2, torch.tensor([-2.0]))
    t1, t2 = active_test_loss(h0_c2, h0_c1, h0_c1, h0_c2)  # perfectly swapped: 1 − (−1)
    torch.testing.assert_close(t1, torch.tensor([2.0]))
    assert fsr(torch.cat([t1, t2]), "active") == 1.0


def test_fsr_ranges_and_edges():
    assert FSR_RANGES == {"location": (0, 0.2), "topk": (0, 0.3), "center_mass": (0.1, 1), "active": (0.5, 2)}
    assert fsr(torch.tensor([0.0, 0.2, 0.21, float("nan")]), "location") == 0.5  # ends inclusive, NaN fails
    assert fsr(torch.tensor([0.3, 0.31]), "topk") == 0.5
    assert fsr(torch.tensor([0.05, 0.1, 1.0]), "center_mass") == pytest.approx(2 / 3)
    assert fsr(torch.tensor([0.4, 0.5, 2.0, 2.1]), "active") == 0.5
    with pytest.raises(ValueError, match="location, topk, center_mass, active"):
        fsr(torch.tensor([0.1]), "Location")


def test_losses_backpropagate_to_the_map():
    h = torch.rand(2, 14, 14, requires_grad=True)
    h0 = torch.rand(2, 14, 14)
    for loss in (
        location_loss(h),
        topk_loss(h, topk_mask(h0)),
        center_mass_loss(h, h0),
        active_loss(h, h.flip(1), h0, h0.flip(2)),
    ):
        (g,) = torch.autograd.grad(loss.mean(), h)
        assert g.abs().sum() > 0
