"""Per-trial mean losses of K stacked outputs, and their gradients, as ATen's CPU kernels compute them for one trial.

Trial k's loss is bitwise `criterion(outputs[k], targets[k])` of the single run, and the gradient is what ATen's own
backward formula writes for it (not autograd's chain of sum/div/pow, which rounds differently), for a loss seen
through `losses.sum()`: every trial's upstream gradient is exactly 1.0, so the formulas' `* grad_output` is left out
(x * 1.0 == x for every float).

A criterion is a pair: `losses(outputs, targets)` (evaluation) and `losses_and_grad(outputs, targets)` (training:
the (K,) losses and d(sum of losses)/d(outputs)).
"""

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F


def _row_mean(values: Tensor) -> Tensor:
    """Per-trial mean of (K, ...) values: a row sum reduces in the order a full `.mean()` of one row does."""
    flat = values.reshape(values.shape[0], -1)
    return flat.sum(1) / flat.shape[1]


def _per_trial_size(values: Tensor) -> int:
    return values.numel() // values.shape[0]


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    diff = outputs - targets
    return _row_mean(diff * diff)


def mse_and_grad(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """F.mse_loss(reduction='mean'); gradient (input - target) * (2 / n), as mse_loss_backward."""
    diff = outputs - targets
    losses = _row_mean(diff * diff)
    return losses, diff.mul_(2.0 / _per_trial_size(diff))


def bce_with_logits(outputs: Tensor, targets: Tensor) -> Tensor:
    return _row_mean(F.binary_cross_entropy_with_logits(outputs, targets, reduction="none"))


def bce_with_logits_and_grad(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """F.binary_cross_entropy_with_logits(reduction='mean'); gradient (sigmoid(x) - y) / n, as ATen's backward."""
    losses = bce_with_logits(outputs, targets)
    return losses, (outputs.sigmoid() - targets).div_(_per_trial_size(outputs))


def _nll(log_probs: Tensor, targets: Tensor) -> Tensor:
    """F.nll_loss per trial. Its CPU kernel sums the picked values in a cascade of 8 partial sums, an order no
    reduction over a (K, B) tensor reproduces; written out as K-vector ops it cost more than K calls of the kernel
    (BENCHMARKS.md §3)."""
    return torch.stack([F.nll_loss(lp, t) for lp, t in zip(log_probs.unbind(0), targets.unbind(0))])


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """F.cross_entropy = nll_loss(log_softmax): log_softmax is a row-wise kernel, bitwise per row."""
    return _nll(torch.log_softmax(outputs, dim=-1), targets)


def cross_entropy_and_grad(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient: nll_loss_backward writes -(1 / n) at each target (computed in the loss dtype, as ATen does), then
    log_softmax's backward kernel."""
    log_probs = torch.log_softmax(outputs, dim=-1)
    losses = _nll(log_probs, targets)
    k, size, _ = log_probs.shape
    value = log_probs.new_ones(k, 1, 1).div_(size).neg_()
    grad = torch.zeros_like(log_probs).scatter_(-1, targets.unsqueeze(-1), value.expand(k, size, 1))
    return losses, torch._log_softmax_backward_data(grad, log_probs, -1, log_probs.dtype)


class Criterion(NamedTuple):
    losses: object  # (outputs, targets) -> (K,) losses
    losses_and_grad: object  # (outputs, targets) -> ((K,) losses, d(sum of losses)/d(outputs))


# The criteria a task may declare (Task.criterion) and their batched forms.
BATCHED_CRITERIA = {
    F.mse_loss: Criterion(mse, mse_and_grad),
    F.binary_cross_entropy_with_logits: Criterion(bce_with_logits, bce_with_logits_and_grad),
    F.cross_entropy: Criterion(cross_entropy, cross_entropy_and_grad),
}
