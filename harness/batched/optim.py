"""Optimizer updates of K stacked trials, written op for op like torch.optim's single-tensor implementations.

torch.optim on CPU runs its single-tensor (foreach=False) code: `param.add_(grad, alpha=-lr)` for SGD,
`param.addcdiv_(exp_avg, denom, value=-step_size)` for Adam. Here every parameter has a leading trial dimension and
every hyperparameter is a (K, 1, ..., 1) tensor, and each torch op is replaced by one that rounds the same way per
element:
- `a.add_(b, alpha=s)` (a fused multiply-add per element) -> `a.addcmul_(b, s_k)`;
- `a.addcmul_(b, c, value=s)` (rounds s*b, then fused with c) -> `a.addcmul_(b * s_k, c)`;
- `a.addcdiv_(b, c, value=s)` (rounds s*b, divides, adds) -> `a.addcdiv_(b * s_k, c)`;
- scalars derived from hyperparameters (bias corrections, step sizes, 1 - lr * wd) are computed in float64 on the
  host exactly as torch.optim computes them in Python, then rounded to the parameter dtype as ATen rounds a scalar.
tests/test_batched.py checks the result bitwise against torch.optim per trial.

Which update a trial needs is read from a real torch optimizer built by the registry (harness.optim), so this module
knows optimizer classes, not names.
"""

import json
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.optim import get_optimizer_info


def _resolved_group(name: str, lr: float, hparams: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
    """The class and the param group (every default filled in) that the registry builds for these settings."""
    dummy = torch.nn.Parameter(torch.zeros(1))
    opt = get_optimizer_info(name).create([dummy], lr, hparams)
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    return type(opt), group


def optimizer_family(name: str, hparams: Mapping[str, Any], lr: float = 1e-3) -> Hashable | None:
    """What must be shared by trials whose updates run as one: the update's class and the branches it takes.

    None when no batched update exists for it (any class but SGD, Adam, AdamW, RMSprop, Adagrad; maximize;
    differentiable; Adagrad's fused kernel).
    Cached: grouping asks once per trial, and each answer builds a torch optimizer to read its param group.
    """
    key = (name, json.dumps(dict(hparams), sort_keys=True, default=str), lr)
    if key not in _FAMILIES:
        _FAMILIES[key] = _family(name, hparams, lr)
    return _FAMILIES[key]


_FAMILIES: dict[tuple, Hashable | None] = {}


def _family(name: str, hparams: Mapping[str, Any], lr: float) -> Hashable | None:
    try:
        cls, group = _resolved_group(name, lr, hparams)
    except (ValueError, TypeError, RuntimeError, KeyError):
        return None
    if group.get("maximize") or group.get("differentiable"):
        return None
    if cls is torch.optim.SGD:
        return ("sgd", group["momentum"] != 0, bool(group["nesterov"]), group["weight_decay"] != 0)
    if cls in (torch.optim.Adam, torch.optim.AdamW):
        return (
            "adam",
            bool(group.get("decoupled_weight_decay", cls is torch.optim.AdamW)),
            bool(group["amsgrad"]),
            group["weight_decay"] != 0,
        )
    if cls is torch.optim.RMSprop:
        return ("rmsprop", group["momentum"] > 0, bool(group["centered"]), group["weight_decay"] != 0)
    if cls is torch.optim.Adagrad and not group.get("fused"):
        return ("adagrad", group["weight_decay"] != 0)
    return None


def _bcast(values: Tensor, like: Tensor) -> Tensor:
    """A (K,) tensor viewed as (K, 1, ..., 1) against a stacked parameter."""
    return values.view(values.shape[0], *([1] * (like.dim() - 1)))


def _maybe_bcast(value: float | Tensor, like: Tensor) -> float | Tensor:
    return _bcast(value, like) if isinstance(value, Tensor) else value


class BatchedOptimizer:
    """Stacked parameters and per-trial hyperparameters; `step` updates all live trials at once."""

    def __init__(self, params: list[Tensor], groups: list[dict[str, Any]]):
        self.params = params
        self.dtype, self.device = params[0].dtype, params[0].device
        self.groups = groups  # one resolved param group per trial, in trial order (kept in step with select)

    def _hyper(self, fn) -> Tensor:
        """(K,) tensor of fn(group) per trial, computed in float64 and rounded to the parameter dtype."""
        values = np.array([fn(g) for g in self.groups], dtype=np.float64)
        return torch.from_numpy(values).to(device=self.device, dtype=self.dtype)

    def _shared_or_hyper(self, fn) -> float | Tensor:
        """A value all trials share stays a Python float (the very scalar op torch.optim runs), else (K,) per trial."""
        values = {fn(g) for g in self.groups}
        return values.pop() if len(values) == 1 else self._hyper(fn)

    def coefficients(self, first_step: int, lrs: np.ndarray) -> dict[str, Tensor]:
        """Per-step scalars for steps first_step.. (0-based), lrs (C, K) float64: (C, K) tensors on the device.
        Here -lr, what an update that scales by the lr alone needs (SGD, RMSprop)."""
        return {"neg_lr": _to_device(-lrs, self.dtype, self.device)}

    def step(self, coeffs: dict[str, Tensor], row: int, live: Tensor, grads: list[Tensor]) -> None:
        """Apply update `row` of `coeffs` with `grads` (one per tensor in `params`); trials with live == 0 keep their
        parameters (finite gradients)."""
        raise NotImplementedError

    def select(self, keep: Tensor, keep_list: list[int]) -> None:
        """Keep only the trials at `keep` (compaction after divergence); `params` must be replaced by the caller."""
        self.groups = [self.groups[i] for i in keep_list]


def _to_device(table: np.ndarray, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(table)).to(device=device, dtype=dtype)


class BatchedSGD(BatchedOptimizer):
    """torch.optim.SGD's _single_tensor_sgd (momentum, dampening, nesterov, weight decay), K trials at once."""

    def __init__(self, params: list[Tensor], groups: list[dict[str, Any]]):
        super().__init__(params, groups)
        first = groups[0]
        self.use_momentum, self.nesterov = first["momentum"] != 0, bool(first["nesterov"])
        self.use_wd = first["weight_decay"] != 0
        self._make_hypers()
        self.bufs: list[Tensor | None] = [None] * len(params)

    def _make_hypers(self) -> None:
        self.momentum = self._hyper(lambda g: g["momentum"])
        self.damp = self._hyper(lambda g: 1 - g["dampening"])
        self.wd = self._hyper(lambda g: g["weight_decay"])

    def step(self, coeffs: dict[str, Tensor], row: int, live: Tensor, grads: list[Tensor]) -> None:
        neg_lr = coeffs["neg_lr"][row] * live
        for i, (p, grad) in enumerate(zip(self.params, grads)):
            if self.use_wd:
                grad = torch.addcmul(grad, p, _bcast(self.wd, p))
            if self.use_momentum:
                buf = self.bufs[i]
                if buf is None:
                    buf = self.bufs[i] = grad.detach().clone()
                else:
                    buf.mul_(_bcast(self.momentum, p)).addcmul_(grad, _bcast(self.damp, p))
                grad = torch.addcmul(grad, buf, _bcast(self.momentum, p)) if self.nesterov else buf
            p.data.addcmul_(grad, _bcast(neg_lr, p))

    def select(self, keep: Tensor, keep_list: list[int]) -> None:
        super().select(keep, keep_list)
        self._make_hypers()
        self.bufs = [None if b is None else b.index_select(0, keep) for b in self.bufs]


class BatchedAdam(BatchedOptimizer):
    """torch.optim.Adam / AdamW's _single_tensor_adam (amsgrad, L2 or decoupled weight decay), K trials at once.

    The temporaries of the update live in preallocated workspaces: allocating them each step was a large share of a
    digits_mlp group step (BENCHMARKS.md).
    """

    def __init__(self, params: list[Tensor], groups: list[dict[str, Any]]):
        super().__init__(params, groups)
        first = groups[0]
        self.decoupled = bool(first.get("decoupled_weight_decay", False))
        self.amsgrad, self.use_wd = bool(first["amsgrad"]), first["weight_decay"] != 0
        self._make_hypers()
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.max_sq = [torch.zeros_like(p) for p in params] if self.amsgrad else []
        self._workspaces()

    def _workspaces(self) -> None:
        self.ws_denom = [torch.empty_like(p) for p in self.params]
        self.ws_num = [torch.empty_like(p) for p in self.params]

    def _make_hypers(self) -> None:
        # A value all trials share stays a Python float: the very scalar op torch.optim runs, and one pass fewer
        # (addcmul_ with value=) than the per-trial form.
        self.one_minus_beta1 = self._shared_or_hyper(lambda g: 1 - g["betas"][0])
        self.beta2 = self._shared_or_hyper(lambda g: g["betas"][1])
        self.one_minus_beta2 = self._shared_or_hyper(lambda g: 1 - g["betas"][1])
        self.eps = self._shared_or_hyper(lambda g: g["eps"])
        self.wd = self._hyper(lambda g: g["weight_decay"])

    def coefficients(self, first_step: int, lrs: np.ndarray) -> dict[str, Tensor]:
        steps = range(first_step + 1, first_step + 1 + lrs.shape[0])  # torch.optim counts from 1
        beta1 = [g["betas"][0] for g in self.groups]
        beta2 = [g["betas"][1] for g in self.groups]
        bc1 = _powers_table(beta1, steps, lambda b, s: 1 - b**s)
        bc2_sqrt = _powers_table(beta2, steps, lambda b, s: (1 - b**s) ** 0.5)
        coeffs = {
            "neg_step_size": _to_device(-(lrs / bc1), self.dtype, self.device),
            "bc2_sqrt": _to_device(bc2_sqrt, self.dtype, self.device),
        }
        if self.use_wd and self.decoupled:
            wd = np.array([g["weight_decay"] for g in self.groups], dtype=np.float64)
            coeffs["decay"] = _to_device(1 - lrs * wd, self.dtype, self.device)
        return coeffs

    def step(self, coeffs: dict[str, Tensor], row: int, live: Tensor, grads: list[Tensor]) -> None:
        neg_step_size = coeffs["neg_step_size"][row] * live
        bc2_sqrt = coeffs["bc2_sqrt"][row]
        decay = torch.where(live > 0, coeffs["decay"][row], 1.0) if "decay" in coeffs else None
        for i, (p, grad) in enumerate(zip(self.params, grads)):
            param = p.data
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            denom, num = self.ws_denom[i], self.ws_num[i]
            if self.use_wd:
                if self.decoupled:
                    param.mul_(_bcast(decay, p))
                else:
                    grad = torch.addcmul(grad, param, _bcast(self.wd, p), out=num)
            exp_avg.lerp_(grad, _maybe_bcast(self.one_minus_beta1, p))
            exp_avg_sq.mul_(_maybe_bcast(self.beta2, p))
            if not isinstance(self.one_minus_beta2, Tensor):
                exp_avg_sq.addcmul_(grad, grad, value=self.one_minus_beta2)
            else:
                torch.mul(grad, _bcast(self.one_minus_beta2, p), out=denom)
                exp_avg_sq.addcmul_(denom, grad)
            if self.amsgrad:
                torch.maximum(self.max_sq[i], exp_avg_sq, out=self.max_sq[i])
            torch.sqrt(self.max_sq[i] if self.amsgrad else exp_avg_sq, out=denom)
            denom.div_(_bcast(bc2_sqrt, p)).add_(_maybe_bcast(self.eps, p))
            torch.mul(exp_avg, _bcast(neg_step_size, p), out=num)
            param.addcdiv_(num, denom)

    def select(self, keep: Tensor, keep_list: list[int]) -> None:
        super().select(keep, keep_list)
        self._make_hypers()
        self.exp_avg = [t.index_select(0, keep) for t in self.exp_avg]
        self.exp_avg_sq = [t.index_select(0, keep) for t in self.exp_avg_sq]
        self.max_sq = [t.index_select(0, keep) for t in self.max_sq]
        self.ws_denom = [
            t.index_select(0, keep) for t in self.ws_denom
        ]  # contents are scratch: shape matters
        self.ws_num = [t.index_select(0, keep) for t in self.ws_num]


class BatchedRMSprop(BatchedOptimizer):
    """torch.optim.RMSprop's _single_tensor_rmsprop (alpha, eps, weight decay, momentum, centered), K trials at once."""

    def __init__(self, params: list[Tensor], groups: list[dict[str, Any]]):
        super().__init__(params, groups)
        first = groups[0]
        self.use_momentum, self.centered = first["momentum"] > 0, bool(first["centered"])
        self.use_wd = first["weight_decay"] != 0
        self._make_hypers()
        self.square_avg = [torch.zeros_like(p) for p in params]
        self.grad_avg = [torch.zeros_like(p) for p in params] if self.centered else []
        self.bufs = [torch.zeros_like(p) for p in params] if self.use_momentum else []
        self._workspaces()

    def _workspaces(self) -> None:
        # avg is a new tensor per step in torch.optim; num holds grad + wd * param, then (without momentum, once
        # grad is read for the last time) -lr * grad: at most 7 copies of the parameters with every branch on.
        self.ws_avg = [torch.empty_like(p) for p in self.params]
        need_num = self.use_wd or not self.use_momentum
        self.ws_num = [torch.empty_like(p) for p in self.params] if need_num else []

    def _make_hypers(self) -> None:
        self.alpha = self._shared_or_hyper(lambda g: g["alpha"])
        self.one_minus_alpha = self._shared_or_hyper(lambda g: 1 - g["alpha"])
        self.eps = self._shared_or_hyper(lambda g: g["eps"])
        self.momentum = self._shared_or_hyper(lambda g: g["momentum"])
        self.wd = self._hyper(lambda g: g["weight_decay"])

    def step(self, coeffs: dict[str, Tensor], row: int, live: Tensor, grads: list[Tensor]) -> None:
        neg_lr = coeffs["neg_lr"][row] * live
        for i, (p, grad) in enumerate(zip(self.params, grads)):
            param = p.data
            square_avg, avg = self.square_avg[i], self.ws_avg[i]
            if self.use_wd:
                grad = torch.addcmul(grad, param, _bcast(self.wd, p), out=self.ws_num[i])
            square_avg.mul_(_maybe_bcast(self.alpha, p))
            _addcmul_value(square_avg, grad, grad, self.one_minus_alpha, avg)  # avg: scratch until below
            if self.centered:
                grad_avg = self.grad_avg[i]
                grad_avg.lerp_(grad, _maybe_bcast(self.one_minus_alpha, p))
                torch.addcmul(square_avg, grad_avg, grad_avg, value=-1, out=avg).sqrt_()
            else:
                torch.sqrt(square_avg, out=avg)
            avg.add_(_maybe_bcast(self.eps, p))
            if self.use_momentum:
                buf = self.bufs[i]
                buf.mul_(_maybe_bcast(self.momentum, p)).addcdiv_(grad, avg)
                param.addcmul_(buf, _bcast(neg_lr, p))
            else:
                num = torch.mul(grad, _bcast(neg_lr, p), out=self.ws_num[i])
                param.addcdiv_(num, avg)

    def select(self, keep: Tensor, keep_list: list[int]) -> None:
        super().select(keep, keep_list)
        self._make_hypers()
        self.square_avg = [t.index_select(0, keep) for t in self.square_avg]
        self.grad_avg = [t.index_select(0, keep) for t in self.grad_avg]
        self.bufs = [t.index_select(0, keep) for t in self.bufs]
        # Workspaces by selection: the caller replaces `params` after this returns; contents are scratch.
        self.ws_avg = [t.index_select(0, keep) for t in self.ws_avg]
        self.ws_num = [t.index_select(0, keep) for t in self.ws_num]


class BatchedAdagrad(BatchedOptimizer):
    """torch.optim.Adagrad's dense _single_tensor_adagrad (lr decay, weight decay, initial accumulator), K trials."""

    def __init__(self, params: list[Tensor], groups: list[dict[str, Any]]):
        super().__init__(params, groups)
        self.use_wd = groups[0]["weight_decay"] != 0
        self._make_hypers()
        init = self._hyper(lambda g: g["initial_accumulator_value"])  # full_like rounds it as this does
        self.state_sum = [torch.zeros_like(p).add_(_bcast(init, p)) for p in params]
        self._workspaces()

    def _workspaces(self) -> None:
        self.ws_std = [torch.empty_like(p) for p in self.params]
        self.ws_num = [torch.empty_like(p) for p in self.params]

    def _make_hypers(self) -> None:
        self.eps = self._shared_or_hyper(lambda g: g["eps"])
        self.wd = self._hyper(lambda g: g["weight_decay"])

    def coefficients(self, first_step: int, lrs: np.ndarray) -> dict[str, Tensor]:
        # clr = lr / (1 + (step - 1) * lr_decay) in Python floats, step counted from 1 as a float.
        done = np.arange(first_step, first_step + lrs.shape[0], dtype=np.float64)[:, None]
        lr_decay = np.array([g["lr_decay"] for g in self.groups], dtype=np.float64)[None, :]
        return {"neg_clr": _to_device(-(lrs / (1 + done * lr_decay)), self.dtype, self.device)}

    def step(self, coeffs: dict[str, Tensor], row: int, live: Tensor, grads: list[Tensor]) -> None:
        neg_clr = coeffs["neg_clr"][row] * live
        for i, (p, grad) in enumerate(zip(self.params, grads)):
            param = p.data
            std, num = self.ws_std[i], self.ws_num[i]
            if self.use_wd:
                grad = torch.addcmul(grad, param, _bcast(self.wd, p), out=num)
            self.state_sum[i].addcmul_(grad, grad, value=1)
            torch.sqrt(self.state_sum[i], out=std).add_(_maybe_bcast(self.eps, p))
            torch.mul(grad, _bcast(neg_clr, p), out=num)
            param.addcdiv_(num, std)

    def select(self, keep: Tensor, keep_list: list[int]) -> None:
        super().select(keep, keep_list)
        self._make_hypers()
        self.state_sum = [t.index_select(0, keep) for t in self.state_sum]
        self.ws_std = [t.index_select(0, keep) for t in self.ws_std]  # as BatchedRMSprop.select
        self.ws_num = [t.index_select(0, keep) for t in self.ws_num]


def _addcmul_value(target: Tensor, a: Tensor, b: Tensor, value: float | Tensor, scratch: Tensor) -> None:
    """target.addcmul_(a, b, value=value), value per trial: value * a rounded first, as ATen rounds it."""
    if isinstance(value, Tensor):
        torch.mul(a, _bcast(value, a), out=scratch)
        target.addcmul_(scratch, b)
    else:
        target.addcmul_(a, b, value=value)


def _powers_table(betas: list[float], steps: range, fn) -> np.ndarray:
    """(C, K) of fn(beta, float(step)) in Python floats, as torch.optim computes them (once per distinct beta)."""
    columns = {}
    for beta in set(betas):
        columns[beta] = [fn(beta, float(s)) for s in steps]
    return np.array([columns[b] for b in betas], dtype=np.float64).T.reshape(len(steps), len(betas))


def build_optimizer(params: list[Tensor], specs: list) -> BatchedOptimizer:
    """The batched update for trials whose optimizer_family is the same (checked by group_key)."""
    resolved = [_resolved_group(s.optimizer, s.lr, s.hparams) for s in specs]
    cls = resolved[0][0]
    groups = [group for _, group in resolved]
    if cls is torch.optim.SGD:
        return BatchedSGD(params, groups)
    if cls is torch.optim.RMSprop:
        return BatchedRMSprop(params, groups)
    if cls is torch.optim.Adagrad:
        return BatchedAdagrad(params, groups)
    for group in groups:
        group.setdefault("decoupled_weight_decay", cls is torch.optim.AdamW)
    return BatchedAdam(params, groups)


__all__ = [
    "BatchedAdagrad",
    "BatchedAdam",
    "BatchedOptimizer",
    "BatchedRMSprop",
    "BatchedSGD",
    "build_optimizer",
    "optimizer_family",
]
