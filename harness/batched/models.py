"""Model families that batch: K trials' parameters stacked along a leading trial dimension.

A task names its family in `Task.batched_form` (harness.tasks.base: data, the tasks never import this package);
`form_for` builds the form of that name, which checks the declaration against what the task really does, so a task
that overrides `loss` or `evaluate` falls back.
- FunctionForm: function tasks; x is (K, d), the objective runs per trial under torch.func.vmap.
- StackedNetForm: nn.Linear or nn.Sequential of Linear and elementwise activations with a built-in criterion,
  trained by a hand-written backward that calls the kernels the single run's autograd calls (the weight gradient as
  g^T x, as F.linear's backward computes it).
- VmapForm: any buffer-free module through torch.func.functional_call under vmap (digits_cnn); not bitwise.
"""

import math
import random
from collections.abc import Callable, Hashable

import numpy as np
import torch
from torch import Tensor, nn

from harness.batched.losses import BATCHED_CRITERIA
from harness.tasks.base import Batch, FunctionTask, Task


def init_models(task: Task, seeds: list[int], device: torch.device) -> list[nn.Module]:
    """Each trial's freshly initialised model, seeded as the single-run path seeds it (harness.job)."""
    models = []
    for seed in seeds:
        random.seed(seed)
        np.random.seed(seed)
        # torch.manual_seed's CPU part: its lazy CUDA/XPU/MTIA seeding formats a stack trace each call (BENCHMARKS.md
        # §3), and models are initialised on the CPU generator (then moved).
        torch.default_generator.manual_seed(seed)
        models.append(task.make_model().to(device))
    return models


class BatchedModel:
    """K trials of one model family: stacked parameters, per-trial losses, gradients and evaluation."""

    params: list[
        Tensor
    ]  # each of the model's parameters stacked along a leading trial dimension, in its order

    @property
    def update_tensors(self) -> list[Tensor]:
        """The tensors the optimizer updates in place, matching `losses_and_grads`'s gradients."""
        return self.params

    def losses(self, batch: Batch) -> Tensor:
        """(K,) mean training losses over a per-trial batch (tensors with a leading K dimension), differentiable."""
        raise NotImplementedError

    def losses_and_grads(self, batch: Batch) -> tuple[Tensor, list[Tensor]]:
        """(K,) training losses and, per update tensor, d(sum of the losses)/d(tensor): the trials are independent,
        so trial k's slice is the gradient of its own loss."""
        losses = self.losses(batch)
        grads = torch.autograd.grad(losses.sum(), self.params)
        return losses.detach(), list(grads)

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
# A trial's parameter blocks start on 64-byte boundaries, as a fresh CPU allocation does: MKL's GEMM results depend
# on the operands' alignment, and each trial must round as its own single run does.
ALIGN_BYTES = 64


def _aligned_empty(like: Tensor, k: int, *shape: int) -> Tensor:
    """An uninitialised (k, *shape) tensor whose trial blocks each start on a 64-byte boundary, as a fresh single-run
    tensor would (a plain (k, *shape) tensor puts trial 1 of a (k, 100, 10) block 32 bytes off), with a gap after each
    block. The gap keeps elementwise kernels from fusing the trials into one run: they then loop over each trial's
    block as over the single run's tensor, with the same split between the vectorised body and the scalar tail, which
    round tanh and sigmoid differently."""
    step = max(1, ALIGN_BYTES // like.element_size())
    size = math.prod(shape)
    block = like.new_empty(k, (size // step + 1) * step)
    return block[:, :size].view(k, *shape)


def _aligned(x: Tensor) -> Tensor:
    """x itself when each trial's block is contiguous and aligned (or one block shared, stride 0), else an aligned
    copy."""
    if (
        x[0].is_contiguous()
        and x.stride(0) * x.element_size() % ALIGN_BYTES == 0
        and x.data_ptr() % ALIGN_BYTES == 0
    ):
        return x
    return _aligned_empty(x, x.shape[0], *x.shape[1:]).copy_(x)


def _linear_mode(batch: int, out_features: int, in_features: int, device: torch.device) -> str:
    """Which kernels run the layer's forward and input gradient for K trials.

    - "mm" (CPU, BLAS-sized layers): per trial the very addmm/mm the single run calls, so trial k is bitwise the
      single run's F.linear: a batched GEMM rounds some elements differently, depending on the data (seen on
      digits_mlp's last layer).
    - "small" (CPU, tiny layers under NAIVE_BMM_MACS, and layers with one output feature): one call for all trials,
      which ATen runs in its own bmm loop. That loop is bitwise for one input feature (forward) and one output
      feature (input gradient): a single product per element, no sum. With one output feature and several inputs
      the single run's BLAS takes a gemv path and differs by an ulp (a per-trial addmv matched most but not all
      steps, and was slower: BENCHMARKS.md).
    - "bmm" (every layer on a GPU): one launch beats K, and nothing there is bitwise against the single run anyway.

    The weight gradient on CPU is per trial in every mode (`_LinearStep.backward`).
    """
    if device.type != "cpu":
        return "bmm"
    if batch * out_features * in_features >= NAIVE_BMM_MACS and out_features > 1:
        return "mm"
    return "small"


def _linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, views: "_Views | None" = None
) -> None:
    """out = x W^T + b per trial (forward of F.linear; `views` caches the per-trial views of the "mm" mode)."""
    if _linear_mode(x.shape[1], weight.shape[1], weight.shape[2], x.device) != "mm":
        if bias is None:
            torch.bmm(x, weight.transpose(1, 2), out=out)
        else:
            torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2), out=out)
        return
    views = views or _Views(weight, bias, out)
    x = views.aligned(x)
    if bias is None:
        for xi, wi, oi in zip(views.xs, views.w_t, views.outs):
            torch.mm(xi, wi, out=oi)
    else:
        for bi, xi, wi, oi in zip(views.b, views.xs, views.w_t, views.outs):
            torch.addmm(bi, xi, wi, out=oi)


class _Views:
    """Per-trial views of one layer's tensors, made once: a K-way unbind per call cost more than the small GEMMs."""

    def __init__(self, weight: Tensor, bias: Tensor | None, out: Tensor):
        self.w_t, self.w = weight.transpose(1, 2).unbind(0), weight.unbind(0)
        self.b = bias.unbind(0) if bias is not None else None
        self.outs = out.unbind(0)
        self.x = self.x_source = self.g = self.g_source = None

    def aligned(self, x: Tensor) -> Tensor:
        """x, or an aligned copy of it, and its per-trial views in `xs` (made again only for another tensor: a batch is
        new each step, the input of a later layer is the previous layer's buffer)."""
        if x is not self.x and x is not self.x_source:
            self.x_source, self.x = x, _aligned(x)
            self.xs = self.x.unbind(0)
        return self.x

    def of_g(self, g: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        if g is not self.g and g is not self.g_source:
            self.g_source, self.g = g, _aligned(g)
            self.gs, self.g_ts = self.g.unbind(0), self.g.transpose(1, 2).unbind(0)
        return self.gs, self.g_ts


class _LinearStep:
    """One stacked linear layer of a training step: forward into its own output buffer, backward into the model's
    gradient block, as F.linear's backward computes it: dW = g^T x, dx = g W, db = g summed over samples."""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        grad_w: Tensor,
        grad_b: Tensor | None,
        batch: int,
        need_grad_x: bool,
    ):
        k, out_features, in_features = weight.shape
        self.weight, self.bias, self.grad_w, self.grad_b = weight, bias, grad_w, grad_b
        self.out = _aligned_empty(weight, k, batch, out_features)
        self.grad_x = _aligned_empty(weight, k, batch, in_features) if need_grad_x else None
        self.mode = _linear_mode(batch, out_features, in_features, weight.device)
        self.views = _Views(weight, bias, self.out) if self.mode != "bmm" else None
        if self.views is not None:
            self.grad_ws = grad_w.unbind(0)
            self.grad_xs = self.grad_x.unbind(0) if need_grad_x and self.mode == "mm" else None
        self.x: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.x = x if self.views is None else self.views.aligned(x)
        _linear(self.x, self.weight, self.bias, self.out, self.views if self.mode == "mm" else None)
        return self.out

    def backward(self, g: Tensor) -> Tensor | None:
        """Fills grad_w and grad_b from the output gradient g; returns the input gradient (None for the first layer).

        On CPU the weight gradient is per trial the single run's own mm in every mode: it sums over the batch, and
        ATen's bmm loop sums in plain multiply-then-add order while MKL's GEMM sums with fused multiply-adds on
        AVX2/AVX-512 (and without them on its SSE path), so only the same BLAS call rounds as the single run does.
        """
        x = self.x
        if self.grad_b is not None:
            torch.sum(g, 1, out=self.grad_b)
        if self.views is None:
            torch.bmm(g.transpose(1, 2), x, out=self.grad_w)
            if self.grad_x is not None:
                torch.bmm(g, self.weight, out=self.grad_x)
            return self.grad_x
        gs, g_ts = self.views.of_g(g)
        for gi, xi, oi in zip(g_ts, self.views.xs, self.grad_ws):
            torch.mm(gi, xi, out=oi)
        if self.grad_x is not None:
            if self.grad_xs is None:  # "small": one product per element (one output feature or a tiny layer)
                torch.bmm(g, self.weight, out=self.grad_x)
            else:
                for gi, wi, oi in zip(gs, self.views.w, self.grad_xs):
                    torch.mm(gi, wi, out=oi)
        return self.grad_x


# Activations: forward in place on a linear layer's output buffer, backward in place on the gradient (with the
# kernels autograd runs for torch.relu/tanh/sigmoid: they read the activation's result).
_IN_PLACE = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_, nn.Identity: lambda x: x}
_BACKWARD = {
    nn.ReLU: lambda g, y: torch.ops.aten.threshold_backward.grad_input(g, y, 0, grad_input=g),
    nn.Tanh: lambda g, y: torch.ops.aten.tanh_backward.grad_input(g, y, grad_input=g),
    nn.Sigmoid: lambda g, y: torch.ops.aten.sigmoid_backward.grad_input(g, y, grad_input=g),
    nn.Identity: lambda g, y: g,
}


def _activation(kind: type, x: Tensor) -> Tensor:
    """The activation into a new per-trial-gapped buffer (see _aligned_empty); relu is clamp_min(x, 0) in ATen."""
    if kind is nn.Identity:
        return x
    return _OUT_OF_PLACE[kind](x, out=_aligned_empty(x, x.shape[0], *x.shape[1:]))


_OUT_OF_PLACE = {
    nn.ReLU: lambda x, out: torch.clamp_min(x, 0, out=out),
    nn.Tanh: torch.tanh,
    nn.Sigmoid: torch.sigmoid,
}


class _FlatLayout:
    """Where each parameter of a trial lives in the trial's row of one (K, P) block, each on a 64-byte boundary."""

    def __init__(self, shapes: list[tuple[int, ...]], itemsize: int):
        step = max(1, ALIGN_BYTES // itemsize)
        self.shapes, self.offsets, width = shapes, [], 0
        for shape in shapes:
            self.offsets.append(width)
            width += -(-math.prod(shape) // step) * step
        self.width = width

    def views(self, flat: Tensor) -> list[Tensor]:
        k = flat.shape[0]
        return [
            flat[:, at : at + math.prod(shape)].view(k, *shape)
            for shape, at in zip(self.shapes, self.offsets)
        ]


class StackedNet(BatchedModel):
    """Linear layers and elementwise activations, trained by a hand-written forward and backward (no autograd):
    every buffer and per-trial view is made once per batch size, the gradients land in one (K, P) block that the
    optimizer updates in one pass per operation, and each kernel is the one the single run's autograd calls."""

    def __init__(self, task: Task, layers: list, flat: Tensor, layout: _FlatLayout):
        self.task, self.layers, self.layout = task, layers, layout
        self.criterion = BATCHED_CRITERIA[task.criterion]
        self._set_flat(flat)

    def _set_flat(self, flat: Tensor) -> None:
        self.flat = flat
        self.grad_flat = torch.zeros_like(flat)  # the padding between parameters stays zero
        self.params = self.layout.views(flat)
        self.grads = self.layout.views(self.grad_flat)
        self._steps: dict[int, list] = {}  # batch size -> the training step's layers

    @property
    def update_tensors(self) -> list[Tensor]:
        return [self.flat]

    def _train_layers(self, batch: int) -> list:
        """[_LinearStep | activation class] of a training step at this batch size (buffers made once)."""
        if batch not in self._steps:
            params, grads, steps, first = iter(self.params), iter(self.grads), [], True
            for kind, has_bias in self.layers:
                if kind == "linear":
                    weight, grad_w = next(params), next(grads)
                    bias, grad_b = (next(params), next(grads)) if has_bias else (None, None)
                    steps.append(_LinearStep(weight, bias, grad_w, grad_b, batch, need_grad_x=not first))
                    first = False
                else:
                    steps.append(kind)
            self._steps[batch] = steps
        return self._steps[batch]

    def losses_and_grads(self, batch: Batch) -> tuple[Tensor, list[Tensor]]:
        inputs, targets = batch
        x, results, after_linear = inputs, [], False
        steps = self._train_layers(inputs.shape[1])
        for step in steps:
            if isinstance(step, _LinearStep):
                x, after_linear = step.forward(x), True
            else:
                # In place only on a linear layer's own output buffer (no other activation's result lives there).
                x = _IN_PLACE[step](x) if after_linear else _activation(step, x)
                after_linear = False
            results.append(x)
        losses, g = self.criterion.losses_and_grad(x, targets)
        for index in range(len(steps) - 1, -1, -1):
            step = steps[index]
            if isinstance(step, _LinearStep):
                g = step.backward(g)
                if g is None:  # the first linear layer: nothing before it has parameters
                    break
            else:
                g = _BACKWARD[step](g, results[index])
        return losses, [self.grad_flat]

    def forward(self, x: Tensor) -> Tensor:
        """Outputs without gradients (evaluation)."""
        params = iter(self.params)
        for kind, has_bias in self.layers:
            if kind == "linear":
                weight = next(params)
                bias = next(params) if has_bias else None
                out = _aligned_empty(x, x.shape[0], x.shape[1], weight.shape[1])
                _linear(x, weight, bias, out)
                x = out
            else:
                x = _activation(kind, x)
        return x

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
        metrics = {"loss": self.criterion.losses(outputs, stacked_targets)}
        if self.task.classification:
            correct = [self.task.correct(out, targets) for out in outputs]
            metrics["accuracy"] = torch.stack([c.float().mean() for c in correct])
        return metrics

    def select(self, keep: Tensor) -> None:
        self._set_flat(self.flat.index_select(0, keep))


def _layers(model: nn.Module) -> list | None:
    """[(kind, has_bias)] for a Linear or a Sequential of Linear and known activations; None otherwise."""
    modules = list(model) if isinstance(model, nn.Sequential) else [model]
    layers = []
    for module in modules:
        if type(module) is nn.Linear:
            layers.append(("linear", module.bias is not None))
        elif type(module) in _IN_PLACE:  # an activation StackedNet runs forward and backward
            layers.append((type(module), False))
        else:
            return None
    return layers


class StackedNetForm(BatchedForm):
    def __init__(self, layers: list, shapes: tuple, n_params: int):
        self.layers, self.key, self.n_params = layers, ("stacked", tuple(layers), shapes), n_params

    def build(self, task: Task, seeds: list[int], device: torch.device) -> BatchedModel:
        models = init_models(task, seeds, device)
        first = list(models[0].parameters())
        layout = _FlatLayout([tuple(p.shape) for p in first], first[0].element_size())
        flat = first[0].new_zeros(len(models), layout.width)
        for views, model in zip(zip(*layout.views(flat)), models):
            for view, param in zip(views, model.parameters()):
                view.copy_(param.detach())
        return StackedNet(task, self.layers, flat, layout)

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


# The names a task may give as its `batched_form` (harness.tasks.base), each with the builder that checks the task.
FORMS: dict[str, Callable[[Task], BatchedForm | None]] = {
    "stacked_net": stacked_net_form,
    "function": function_form,
    "vmap": vmap_form,
}


def form_for(task: Task) -> BatchedForm | None:
    """The form the task names in `Task.batched_form`, or None: the trial falls back to the single path.

    Raises:
        ValueError: the task names no known form (a typo in a user's task must not quietly run one at a time).
    """
    name = task.batched_form
    if name is None:
        return None
    if not isinstance(name, str) or name not in FORMS:
        raise ValueError(
            f"task {task.name!r}: batched_form = {name!r} is not one of {sorted(FORMS)} or None (harness.tasks.base)"
        )
    return FORMS[name](task)
