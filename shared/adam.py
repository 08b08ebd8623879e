"""Adam for the attack trials: ``torch.optim.Adam``'s own update, without ``torch._dynamo``.

``torch.optim.Optimizer`` wraps ``__init__``'s ``add_param_group``, ``zero_grad`` and the state
dict methods in ``torch._disable_dynamo``, and every ``step`` calls ``torch._dynamo.graph_break``:
the first of them imports ``torch._dynamo`` (with ``sympy`` and ``torch.distributed`` under
it), 1.3–3 s on 2 cores, which every fresh Tune worker paid inside its first trial
(docs/costs.md). This class keeps what a trial needs (step, zero_grad, a state dict in
``torch.optim.Adam``'s format, so checkpoints load in either) and calls the functional
``torch.optim.adam.adam`` that ``torch.optim.Adam.step`` calls, with the same arguments: the
same kernels, bit for bit (``tests/test_adam.py`` checks it against ``torch.optim.Adam``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam

# torch.optim.Adam's defaults for the options this class does not offer (its state dict keeps them)
_FIXED = {
    "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
    "fused": None, "decoupled_weight_decay": False,
}  # fmt: skip


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)``: one parameter group, no AMSGrad."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        if not lr >= 0.0 or not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"Adam: lr={lr}, eps={eps}, weight_decay={weight_decay} must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: betas={betas} must each be in [0, 1)")
        self.group: dict[str, Any] = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
        }
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().requires_grad_(False).zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient (as ``torch.optim.Adam.step``)."""
        params, grads, avgs, sqs, steps = [], [], [], [], []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            s = self.state.get(i)
            if s is None:  # as torch.optim.Adam._init_group (not capturable, not fused)
                s = self.state[i] = {
                    "step": torch.tensor(0.0, dtype=torch.get_default_dtype()),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            params.append(p)
            grads.append(p.grad)
            avgs.append(s["exp_avg"])
            sqs.append(s["exp_avg_sq"])
            steps.append(s["step"])
        if not params:
            return
        g = self.group
        adam(
            params, grads, avgs, sqs, [], steps,
            foreach=None, capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
            has_complex=any(torch.is_complex(p) for p in params), decoupled_weight_decay=False, amsgrad=False,
            beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"], weight_decay=g["weight_decay"], eps=g["eps"],
            maximize=False,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam.state_dict()``'s layout (``torch.optim.Adam`` can load it)."""
        group = {**self.group, **_FIXED, "params": list(range(len(self.params)))}
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.Adam`` over the same parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(
                f"optimizer state has parameter groups of sizes {sizes}; this model has one group of "
                f"{len(self.params)} parameters (was the checkpoint written for another model?)"
            )
        unsupported = {k: groups[0][k] for k in ("amsgrad", "maximize") if groups[0].get(k)}
        if unsupported:
            raise ValueError(f"optimizer state uses {unsupported}: this Adam supports neither")
        index = {pid: i for i, pid in enumerate(groups[0]["params"])}
        self.group = {k: groups[0][k] for k in ("lr", "eps", "weight_decay")} | {
            "betas": tuple(groups[0]["betas"])
        }
        self.state = {}
        for pid, s in state_dict["state"].items():
            p = self.params[index[pid]]
            self.state[index[pid]] = {
                "step": torch.as_tensor(s["step"], dtype=torch.get_default_dtype()).clone(),
                "exp_avg": s["exp_avg"].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": s["exp_avg_sq"].to(device=p.device, dtype=p.dtype).clone(),
            }
