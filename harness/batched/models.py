"""Model families that batch: K trials' parameters stacked along a leading trial dimension.

A task declares its family through `Task.batched_form()` (harness.tasks.base); `form_for` asks it and checks the
declaration against what the task really does, so a task that overrides `loss` or `evaluate` falls back.
- FunctionForm: function tasks; x is (K, d), the objective runs per trial under torch.func.vmap.
- StackedNetForm: nn.Linear or nn.Sequential of Linear and elementwise activations with a built-in criterion; the
  linear layer is a custom autograd Function whose backward computes the weight gradient as g^T x, as F.linear's.
- VmapForm: any buffer-free module through torch.func.functional_call under vmap (digits_cnn); not bitwise.
"""

import random
from collections.abc import Callable, Hashable

import numpy as np
import torch
from torch import Tensor, nn

from harness.batched.losses import BATCHED_CRITERIA
from harness.tasks.base import Batch, FunctionTask, Task

ACTIVATIONS: dict[type, Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
    nn.Sigmoid: torch.sigmoid,
    nn.Identity: lambda x: x,
}


def init_models(task: Task, seeds: list[int], device: torch.device) -> list[nn.Module]:
    """Each trial's freshly initialised model, seeded as the single-run path seeds it (harness.job)."""
    models = []
    for seed in seeds:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        models.append(task.make_model().to(device))
    return models


class BatchedModel:
    """K trials of one model family: stacked leaf parameters, per-trial losses and evaluation."""

    params: list[Tensor]

    def losses(self, batch: Batch) -> Tensor:
        """(K,) mean training losses over a per-trial batch (tensors with a leading K dimension)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, val: Batch) -> dict[str, Tensor]:
        """(K,) tensors per metric (`loss`, `accuracy`) over the shared validation split."""
        raise NotImplementedError

    def select(self, keep: Tensor) -> None:
        """Keep only the trials at `keep` (new leaf tensors)."""
        self.params = [p.detach().index_select(0, keep).requires_grad_() for p in self.params]

    def trial_state(self, k: int) -> list[Tensor]:
        """Trial k's parameters, in the order of its model's `parameters()`."""
        return [p.detach()[k] for p in self.params]


class BatchedForm:
    """How a task's model family batches. `key` tells apart structures that cannot share a group."""

    key: Hashable = None

    def build(self, task: Task, seeds: list[int], device: torch.device) -> BatchedModel:
        raise NotImplementedError

    def param_count(self) -> int:
        return 0

    def sample_bytes(self, task: Task, sample: Tensor) -> int:
        """Activation bytes per trial and training sample (for the memory budget): every module output of one
        model on one sample, kept for backward and met by its gradient, so twice."""
        model = _probe_model(task)
        if model is None:
            return 0
        sizes: list[int] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() * out.element_size()))
            for m in model.modules()
            if not list(m.children())
        ]
        try:
            with torch.no_grad():
                model(sample.to(next(model.parameters()).dtype) if sample.is_floating_point() else sample)
        except (RuntimeError, TypeError, ValueError):
            return 0
        finally:
            for hook in hooks:
                hook.remove()
        return 2 * sum(sizes)


def _overrides(task: Task, base: type, *names: str) -> bool:
    return any(getattr(type(task), name) is not getattr(base, name) for name in names)


# --- Function tasks -------------------------------------------------------------------------------------------------


class FunctionModel(BatchedModel):
    def __init__(self, task: FunctionTask, x: Tensor):
        self.objective = torch.func.vmap(task.objective)
        self.params = [x.requires_grad_()]

    def losses(self, batch: Batch) -> Tensor:
        return self.objective(self.params[0])

    @torch.no_grad()
    def evaluate(self, val: Batch) -> dict[str, Tensor]:
        return {"loss": self.objective(self.params[0])}


class FunctionForm(BatchedForm):
    def __init__(self, task: FunctionTask):
        self.key = ("function", len(task.start))
        self.dim = len(task.start)

    def build(self, task: Task, seeds: list[int], device: torch.device) -> BatchedModel:
        (x,) = (p.detach() for p in init_models(task, seeds[:1], device)[0].parameters())
        return FunctionModel(task, x.unsqueeze(0).repeat(len(seeds), 1))

    def param_count(self) -> int:
        return self.dim


def function_form(task: FunctionTask) -> BatchedForm | None:
    """Function tasks batch when they define only `objective` (their loss/evaluate/model are the base ones)."""
    if _overrides(task, FunctionTask, "loss", "evaluate", "make_model"):
        return None
    try:
        x = torch.tensor([task.start, task.start], dtype=task.dtype)
        value = torch.func.vmap(task.objective)(x)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None  # an objective vmap cannot run (data-dependent control flow, .item(), ...)
    return FunctionForm(task) if value.shape == (2,) else None


# --- Stacks of linear layers --------------------------------------------------------------------------------------


EVAL_SLICE = 8  # trials evaluated at once
NAIVE_BMM_MACS = 400  # below this many multiply-adds per trial, ATen's bmm runs its own loop (no BLAS call)


def _linear_mode(x: Tensor, weight: Tensor) -> str:
    """Which kernels run the layer for K trials.

    - "mm" (CPU, BLAS-sized layers): per trial the very addmm/mm the single run calls, so trial k is bitwise the
      single run's F.linear: a batched GEMM rounds some elements differently, depending on the data (seen on
      digits_mlp's last layer).
    - "bmm" (tiny layers, under NAIVE_BMM_MACS, and every layer on a GPU): one call for all trials. ATen's own bmm loop
      is bitwise for one input feature; with one output feature and several inputs the single run's BLAS takes a gemv
      path and differs by an ulp (a per-trial addmv matched most but not all steps and halved linreg_10d's
      throughput). On a GPU one launch beats K, and nothing there is bitwise against the single run anyway.
    """
    n, (out_features, in_features) = x.shape[1], weight.shape[1:]
    if x.device.type == "cpu" and n * out_features * in_features >= NAIVE_BMM_MACS and out_features > 1:
        return "mm"
    return "bmm"


class StackedLinear(torch.autograd.Function):
    """y_k = x_k W_k^T + b_k for K trials; backward as F.linear's: dW = g^T x, dx = g W, db = sum over samples."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.mode = bias is not None, _linear_mode(x, weight)
        if ctx.mode == "bmm":
            if bias is None:
                return torch.bmm(x, weight.transpose(1, 2))
            return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        out = x.new_empty(x.shape[0], x.shape[1], weight.shape[1])
        # unbind makes the K views in one call: per-trial indexing from Python cost more than small GEMMs.
        xs, ws, outs = x.unbind(0), weight.transpose(1, 2).unbind(0), out.unbind(0)
        if bias is None:
            for xi, wi, oi in zip(xs, ws, outs):
                torch.mm(xi, wi, out=oi)
        else:
            for bi, xi, wi, oi in zip(bias.unbind(0), xs, ws, outs):
                torch.addmm(bi, xi, wi, out=oi)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_b = grad.sum(1) if ctx.has_bias else None
        need_x = ctx.needs_input_grad[0]
        if ctx.mode == "bmm":
            grad_x = torch.bmm(grad, weight) if need_x else None
            return grad_x, torch.bmm(grad.transpose(1, 2), x), grad_b
        grad_w = torch.empty_like(weight)
        for gi, xi, oi in zip(grad.transpose(1, 2).unbind(0), x.unbind(0), grad_w.unbind(0)):
            torch.mm(gi, xi, out=oi)
        if not need_x:
            return None, grad_w, grad_b
        grad_x = torch.empty_like(x)
        for gi, wi, oi in zip(grad.unbind(0), weight.unbind(0), grad_x.unbind(0)):
            torch.mm(gi, wi, out=oi)
        return grad_x, grad_w, grad_b


class StackedNet(BatchedModel):
    def __init__(self, task: Task, layers: list, params: list[Tensor]):
        self.task, self.layers, self.params = task, layers, params
        self.criterion = BATCHED_CRITERIA[task.criterion]

    def forward(self, x: Tensor) -> Tensor:
        params = iter(self.params)
        for kind, has_bias in self.layers:
            if kind == "linear":
                weight = next(params)
                x = StackedLinear.apply(x, weight, next(params) if has_bias else None)
            else:
                x = ACTIVATIONS[kind](x)
        return x

    def losses(self, batch: Batch) -> Tensor:
        inputs, targets = batch
        return self.criterion(self.forward(inputs), targets)

    @torch.no_grad()
    def evaluate(self, val: Batch) -> dict[str, Tensor]:
        """Over slices of EVAL_SLICE trials: the validation activations are held for a slice, not for all K."""
        k = self.params[0].shape[0]
        parts = [
            self._evaluate_slice(val, start, min(start + EVAL_SLICE, k)) for start in range(0, k, EVAL_SLICE)
        ]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _evaluate_slice(self, val: Batch, start: int, stop: int) -> dict[str, Tensor]:
        inputs, targets = val
        full = self.params
        self.params = [p[start:stop] for p in full]
        try:
            outputs = self.forward(inputs.unsqueeze(0).expand(stop - start, *inputs.shape))
        finally:
            self.params = full
        stacked_targets = targets.unsqueeze(0).expand(stop - start, *targets.shape)
        metrics = {"loss": self.criterion(outputs, stacked_targets)}
        if self.task.classification:
            correct = [self.task.correct(out, targets) for out in outputs]
            metrics["accuracy"] = torch.stack([c.float().mean() for c in correct])
        return metrics


def _layers(model: nn.Module) -> list | None:
    """[(kind, has_bias)] for a Linear or a Sequential of Linear and known activations; None otherwise."""
    modules = list(model) if isinstance(model, nn.Sequential) else [model]
    layers = []
    for module in modules:
        if type(module) is nn.Linear:
            layers.append(("linear", module.bias is not None))
        elif type(module) in ACTIVATIONS:
            layers.append((type(module), False))
        else:
            return None
    return layers


class StackedNetForm(BatchedForm):
    def __init__(self, layers: list, shapes: tuple, n_params: int):
        self.layers, self.key, self.n_params = layers, ("stacked", tuple(layers), shapes), n_params

    def build(self, task: Task, seeds: list[int], device: torch.device) -> BatchedModel:
        models = init_models(task, seeds, device)
        per_model = [list(m.parameters()) for m in models]
        params = [
            torch.stack([ps[i].detach() for ps in per_model]).requires_grad_()
            for i in range(len(per_model[0]))
        ]
        return StackedNet(task, self.layers, params)

    def param_count(self) -> int:
        return self.n_params


def stacked_net_form(task: Task) -> BatchedForm | None:
    """Tasks with the base loss/evaluate, a built-in criterion and a Linear/Sequential-of-Linear model."""
    if _overrides(task, Task, "loss", "evaluate") or task.criterion not in BATCHED_CRITERIA:
        return None
    model = _probe_model(task)
    layers = _layers(model) if model is not None else None
    if not layers or any(b.requires_grad is False for b in model.parameters()) or list(model.buffers()):
        return None
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    return StackedNetForm(layers, shapes, sum(p.numel() for p in model.parameters()))


def _probe_model(task: Task) -> nn.Module | None:
    """One model built without disturbing the global RNG (to read its structure); None if it cannot be built
    (the trial then falls back, and the single path reports the error)."""
    with torch.random.fork_rng(devices=[]):
        try:
            return task.make_model()
        except (RuntimeError, TypeError, ValueError, NotImplementedError):
            return None


# --- Anything else through vmap -------------------------------------------------------------------------------------


class VmapModel(BatchedModel):
    def __init__(self, task: Task, template: nn.Module, names: list[str], params: list[Tensor]):
        self.task, self.template, self.names, self.params = task, template, names, params

        def loss(weights: tuple, inputs: Tensor, targets: Tensor) -> Tensor:
            state = dict(zip(self.names, weights))
            return task.criterion(torch.func.functional_call(template, state, (inputs,)), targets)

        def outputs(weights: tuple, inputs: Tensor) -> Tensor:
            return torch.func.functional_call(template, dict(zip(self.names, weights)), (inputs,))

        self._loss = torch.func.vmap(loss)
        self._outputs = torch.func.vmap(outputs, in_dims=(0, None))

    def losses(self, batch: Batch) -> Tensor:
        inputs, targets = batch
        return self._loss(tuple(self.params), inputs, targets)

    @torch.no_grad()
    def evaluate(self, val: Batch) -> dict[str, Tensor]:
        inputs, targets = val
        self.template.eval()
        outputs = self._outputs(tuple(self.params), inputs)
        self.template.train()
        k = outputs.shape[0]
        metrics = {"loss": torch.stack([self.task.criterion(outputs[i], targets) for i in range(k)])}
        if self.task.classification:
            metrics["accuracy"] = torch.stack(
                [self.task.correct(outputs[i], targets).float().mean() for i in range(k)]
            )
        return metrics


class VmapForm(BatchedForm):
    """Per-trial functional calls of the task's own module under vmap: the same maths, other kernels (≤1e-6)."""

    def __init__(self, task: Task, model: nn.Module):
        self.key = ("vmap", tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))
        self.n_params = sum(p.numel() for p in model.parameters())

    def build(self, task: Task, seeds: list[int], device: torch.device) -> BatchedModel:
        models = init_models(task, seeds, device)
        names = [n for n, _ in models[0].named_parameters()]
        params = [
            torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
            for n in names
        ]
        template = models[0]
        return VmapModel(task, template, names, params)

    def param_count(self) -> int:
        return self.n_params


def vmap_form(task: Task) -> BatchedForm | None:
    """For tasks whose model is buffer-free (no batch norm) and whose loss/evaluate are the base ones."""
    if _overrides(task, Task, "loss", "evaluate"):
        return None
    model = _probe_model(task)
    if model is None or list(model.buffers()):
        return None
    return VmapForm(task, model)


def form_for(task: Task) -> BatchedForm | None:
    """The task's declared batched form (Task.batched_form), or None: the trial falls back to the single path."""
    return task.batched_form()
