"""shared.adam.Adam against its oracle, torch.optim.Adam: the same updates bit for bit, state dicts
that load either way, and no torch._dynamo import (the reason the class exists)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.adam import Adam

ROOT = Path(__file__).resolve().parents[1]


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    )


def _steps(net: torch.nn.Module, opt, n: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(6, 3, 8, 8, generator=gen)
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_same_updates_as_torch_optim_adam(weight_decay):
    ours, ref = _net(), _net()
    for net in (ours, ref):  # a parameter without a gradient is left alone by both
        net[3].bias.requires_grad_(False)
    _steps(ours, Adam(ours.parameters(), lr=3e-3, weight_decay=weight_decay), 7)
    _steps(ref, torch.optim.Adam(ref.parameters(), lr=3e-3, weight_decay=weight_decay), 7)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0].weight, _net()[0].weight)  # it did move them


def test_state_dicts_load_either_way_and_resume_the_same_run():
    ref = _net()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _steps(ref, ref_opt, 3)
    ours = _net()
    ours.load_state_dict(ref.state_dict())
    our_opt = Adam(ours.parameters(), lr=1e-2)
    our_opt.load_state_dict(ref_opt.state_dict())  # a checkpoint of the torch.optim version
    _steps(ours, our_opt, 4, seed=2)
    _steps(ref, ref_opt, 4, seed=2)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    back = torch.optim.Adam(_net().parameters(), lr=1e-2)
    back.load_state_dict(our_opt.state_dict())  # and ours loads into torch.optim.Adam
    assert back.state_dict()["state"][0]["step"].item() == 7.0


def test_a_state_for_another_model_is_refused_by_name():
    opt = Adam(_net().parameters())
    other = torch.optim.Adam(torch.nn.Linear(2, 2).parameters()).state_dict()
    with pytest.raises(ValueError, match="parameter groups of sizes \\[2\\]; this model has one group of 4"):
        opt.load_state_dict(other)


def test_training_with_it_does_not_import_torch_dynamo():
    code = (
        "import sys, torch\n"
        "from shared.adam import Adam\n"
        "net = torch.nn.Linear(3, 2); opt = Adam(net.parameters())\n"
        "for _ in range(2):\n"
        "    opt.zero_grad(); net(torch.ones(4, 3)).sum().backward(); opt.step()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
