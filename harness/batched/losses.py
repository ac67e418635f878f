"""Per-trial mean losses of K stacked outputs, reduced and differentiated as ATen's CPU kernels do for one trial.

A (K,)-vector of losses whose trial k is bitwise the loss `criterion(outputs[k], targets[k])` of the single run, and
whose backward writes the gradient ATen's own backward formula writes (not autograd's chain of sum/div/pow, which
rounds differently).
"""

import torch
from torch import Tensor
from torch.nn import functional as F


def _row_mean(values: Tensor) -> Tensor:
    """Per-trial mean of (K, ...) values: a row sum reduces in the order a full `.mean()` of one row does."""
    flat = values.reshape(values.shape[0], -1)
    return flat.sum(1) / flat.shape[1]


def _per_trial(grad_out: Tensor, like: Tensor) -> Tensor:
    return grad_out.view(-1, *([1] * (like.dim() - 1)))


class MSELoss(torch.autograd.Function):
    """F.mse_loss(reduction='mean') per trial; backward = (2/n) * (input - target) * grad, as mse_loss_backward."""

    @staticmethod
    def forward(ctx, outputs: Tensor, targets: Tensor) -> Tensor:
        diff = outputs - targets
        ctx.save_for_backward(diff)
        return _row_mean(diff * diff)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (diff,) = ctx.saved_tensors
        norm = 2.0 / (diff.numel() // diff.shape[0])
        return torch.mul(diff, norm).mul_(_per_trial(grad_out, diff)), None


class BCEWithLogitsLoss(torch.autograd.Function):
    """F.binary_cross_entropy_with_logits(reduction='mean') per trial; backward as ATen's: (sigmoid(x) - y) * g / n."""

    @staticmethod
    def forward(ctx, outputs: Tensor, targets: Tensor) -> Tensor:
        ctx.save_for_backward(outputs, targets)
        return _row_mean(F.binary_cross_entropy_with_logits(outputs, targets, reduction="none"))

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        outputs, targets = ctx.saved_tensors
        n = outputs.numel() // outputs.shape[0]
        grad = (outputs.sigmoid() - targets).mul_(_per_trial(grad_out, outputs))
        return grad.div_(n), None


class NLLLoss(torch.autograd.Function):
    """F.nll_loss(log_probs, targets, reduction='mean') per trial.

    Forward: nll_loss itself per trial. Its CPU kernel sums the picked values in a cascade of 8 partial sums, an order
    no reduction over a (K, B) tensor reproduces; written out as K-vector ops it cost ≈0.5 ms a step, K calls of the
    kernel cost ≈5 µs each.
    """

    @staticmethod
    def forward(ctx, log_probs: Tensor, targets: Tensor) -> Tensor:
        ctx.save_for_backward(targets)
        ctx.shape = log_probs.shape
        return torch.stack([F.nll_loss(lp, t) for lp, t in zip(log_probs.unbind(0), targets.unbind(0))])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (targets,) = ctx.saved_tensors
        k, size, _ = ctx.shape
        grad = grad_out.new_zeros(ctx.shape)
        value = (grad_out / size).neg()  # ATen: -(grad_output / total_weight), in the loss dtype
        grad.scatter_(-1, targets.unsqueeze(-1), value.view(k, 1, 1).expand(k, size, 1))
        return grad, None


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return MSELoss.apply(outputs, targets)


def bce_with_logits(outputs: Tensor, targets: Tensor) -> Tensor:
    return BCEWithLogitsLoss.apply(outputs, targets)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """F.cross_entropy = nll_loss(log_softmax): log_softmax and its backward are row-wise kernels, bitwise per row."""
    return NLLLoss.apply(torch.log_softmax(outputs, dim=-1), targets)


# The criteria a task may declare (Task.criterion) and their batched forms.
BATCHED_CRITERIA = {
    F.mse_loss: mse,
    F.binary_cross_entropy_with_logits: bce_with_logits,
    F.cross_entropy: cross_entropy,
}
