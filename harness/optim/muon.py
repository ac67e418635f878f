"""Muon for 2-D weight matrices with AdamW for every other parameter, as one torch Optimizer."""

from collections.abc import Iterable

import torch


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon only accepts 2-D matrices; biases, norms and plain vectors go to AdamW.

    The param_groups of both inner optimizers are exposed as this optimizer's own (the same dict objects), so an
    LR scheduler or zero_grad over `self.param_groups` reaches both.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        weight_decay: float,
        momentum: float,
        nesterov: bool,
        ns_steps: int,
        adamw_lr: float,
        adamw_betas: list[float],
        adamw_eps: float,
        adamw_weight_decay: float,
    ):
        params = [p for p in params if p.requires_grad]
        matrices = [p for p in params if p.ndim == 2]
        others = [p for p in params if p.ndim != 2]
        self.inner: list[torch.optim.Optimizer] = []
        if matrices:
            self.inner.append(
                torch.optim.Muon(
                    matrices,
                    lr=lr,
                    weight_decay=weight_decay,
                    momentum=momentum,
                    nesterov=nesterov,
                    ns_steps=ns_steps,
                )
            )
        if others:
            self.inner.append(
                torch.optim.AdamW(
                    others,
                    lr=adamw_lr,
                    betas=tuple(adamw_betas),
                    eps=adamw_eps,
                    weight_decay=adamw_weight_decay,
                )
            )
        super().__init__(params, defaults={"lr": lr})
        self.param_groups = [group for opt in self.inner for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - same contract as torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss
