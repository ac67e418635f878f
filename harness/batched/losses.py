"""Per-trial mean losses of K stacked outputs, reduced and differentiated as ATen's CPU kernels do for one trial.

A (K,)-vector of losses whose trial k is bitwise the loss `criterion(outputs[k], targets[k])` of the single run, and
whose backward writes the gradient ATen's own backward formula writes (not autograd's chain of sum/div/pow, which
rounds differently).
"""

import torch
from torch import Tensor
from torch.nn import functional as F

NLL_LEVELS, NLL_LEVEL_POWER = 8, 4  # ATen's nll_loss cascade: 8 partial sums, flushed every 16**level samples


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


def _nll_runs(size: int) -> list[list[list[int]]]:
    """ATen's cascade summation in nll_loss_out_frame, as a plan: per level, the runs of items summed in order.

    Level 0 sums samples (subtracting them), level j+1 sums the partial sums level j flushes. Sample b is added to
    partial sum 0; then, for j while the low bits of b at level j are zero, partial j is added into partial j + 1 and
    reset. Each run is the list of item indices summed sequentially from 0; the last run of a level may be unflushed.
    """
    mask = (1 << NLL_LEVEL_POWER) - 1
    runs: list[list[list[int]]] = [[[]] for _ in range(NLL_LEVELS)]
    for b in range(size):
        runs[0][-1].append(b)
        for j in range(NLL_LEVELS - 1):
            if b & (mask << (j * NLL_LEVEL_POWER)):
                break
            runs[j + 1][-1].append(
                len(runs[j]) - 1
            )  # the run just closed at level j is an item of level j + 1
            runs[j].append([])
    return runs


_PLANS: dict[tuple[int, str], list[Tensor]] = {}


def _nll_plan(size: int, device: torch.device) -> list[Tensor]:
    """Per level, the runs as an index (R, W) into that level's items, padded with the index of a zero slot."""
    key = (size, str(device))
    if key not in _PLANS:
        plan = []
        for level in _nll_runs(size):
            n_items = sum(len(run) for run in level)
            if n_items == 0:
                break
            width = max(len(run) for run in level)
            plan.append(
                torch.tensor([run + [n_items] * (width - len(run)) for run in level], dtype=torch.long)
            )
        _PLANS[size] = plan
    return _PLANS[size]


def cascade_neg_sum(picked: Tensor) -> Tensor:
    """Per trial, -sum(picked[k]) added up in the order nll_loss's cascade adds it (see _nll_runs).

    Each run is summed sequentially from 0 (a zero pad at the end of a short run changes nothing); the closed runs of
    a level are the items of the next; the open (last) run of each level is a partial sum, and the result is
    0 + partial_0 + partial_1 + ... as std::accumulate does.
    """
    items = -picked  # level 0 subtracts each value: 0 - v - w == (0 + -v) + -w exactly
    total = picked.new_zeros(picked.shape[0])
    for index in _nll_plan(picked.shape[1], picked.device):
        slots = torch.cat([items, items.new_zeros(items.shape[0], 1)], dim=1)
        gathered = slots[:, index]  # (K, R, W)
        acc = picked.new_zeros(gathered.shape[:2])
        for w in range(gathered.shape[2]):
            acc = acc + gathered[:, :, w]
        total = total + acc[:, -1]
        items = acc[:, :-1]
    return total


class NLLLoss(torch.autograd.Function):
    """F.nll_loss(log_probs, targets, reduction='mean') per trial, with nll_loss's own summation order."""

    @staticmethod
    def forward(ctx, log_probs: Tensor, targets: Tensor) -> Tensor:
        ctx.save_for_backward(targets)
        ctx.shape = log_probs.shape
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return cascade_neg_sum(picked) / picked.shape[1]

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
