"""A user's own optimizer, added as one registry entry from outside the harness (HARNESS_PLUGINS=user_optimizers)."""

import torch

from harness.optim import OptimInfo, register
from harness.optim.registry import weight_decay


class SignSGD(torch.optim.Optimizer):
    """x <- x - lr * sign(g + weight_decay * x): each coordinate moves by exactly lr."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer's contract
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(torch.sign(p.grad + group["weight_decay"] * p), alpha=group["lr"])


register(
    OptimInfo("signsgd", "sign of the gradient times lr", SignSGD, 0.5, {"weight_decay": weight_decay()})
)
