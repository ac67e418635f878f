"""The training loop: zero_grad -> forward -> loss -> backward -> step, evaluation cadence, divergence, timing.

It imports neither Hydra nor MLflow: it reports to a tracker and returns a RunResult.

Step numbering (the MLflow step): optimizer steps are counted from 0. At step t the loop computes the loss at the
current parameters x_t (logged as `train/loss` at step t) and updates x_t -> x_{t+1}. Evaluations are logged at the
number of updates done: step 0 is the initial model, step k the model after k updates. So for a function task,
`train/loss` and `val/loss` at the same step describe the same parameters.

What is recorded (the per-step contract other parts rely on):
- every step t: `train/loss`, `grad_norm` (L2 norm of all gradients before update t), `time/wall_s` (seconds from
  the start of training to the end of update t); `train/suboptimality` (= loss - f*) when the task knows f*; `lr`
  (the lr update t used) only when a scheduler changes it.
- at evaluation points k (0, every eval_every, the end): `val/*`, and `epoch` (= k / steps_per_epoch, epochs of
  data behind the evaluated parameters), `samples_seen` (= k x batch size) and, without a scheduler, `lr`.
  Per step these follow from the step and the params resolved.steps_per_epoch and resolved.batch_size, so they are
  not written per step: for train step t, epoch = t // steps_per_epoch and samples seen after it = (t+1) x batch.
What follows from the measured values (grad_norm, suboptimality, the evaluation point's series), the divergence
rule, time to target and the RunResult are harness.trial's, shared with the batched engine.

How the values travel: per-step values go into preallocated per-chunk buffers (harness.tracking.columns) and reach
the tracker as one `log_columns` call per chunk of `chunk_steps` steps; a chunk also ends at every evaluation point,
so evaluations are written after the train steps before them. One step loop fills a chunk; a recorder keeps what
each step measured (harness.trial.STEP_KEYS), in one of two ways:
- host values (CPU): `loss.item()` costs no sync there, so divergence is checked every step, before the update.
- device values (CUDA/MPS; `device_values=True` forces it on CPU, for tests): loss and squared grad norm are copied
  into a device tensor; nothing in the step waits for the device. Divergence is checked on the device once per chunk,
  the chunk crosses to the host in one copy, the record is cut at the diverged step (no metric after it), and the
  run stops there, as it would have on the host path (the steps run after it in that chunk are discarded).
  `time/wall_s` is then the host's clock when the step was issued; the device catches up at each chunk's copy.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.tasks.base import Batch, Target, Task
from harness.tracking import schema
from harness.tracking.base import Tracker
from harness.tracking.columns import StepBuffer, first_true, timestamps_ms, write_chunk
from harness.tracking.schema import COMPLETED, DIVERGED
from harness.trial import STEP_KEYS, RunResult, Trial


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    eval_every: int
    divergence_factor: float = 1e4
    f_star: float | None = None
    target: Target | None = None
    steps_per_epoch: int = 1
    batch_size: int = 1
    chunk_steps: int = 256  # steps per columnar write (and per divergence check with device values)
    # Per-step values stay on the device and divergence is checked per chunk (no host sync per step).
    # None: on for CUDA and MPS; True on CPU runs the same code path (tests).
    device_values: bool | None = None
    flush_every_s: float = (
        10.0  # a chunk also ends after this long, so that the UI shows slow runs progressing
    )


class Progress:
    """What the loop tells a progress display; the default shows nothing."""

    def update(self, steps: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


class Gradients:
    """Zeroes the gradients and measures their global L2 norm.

    After the first backward, when every parameter got a dense gradient of one dtype and device, the gradients are
    made views of one flat buffer: zeroing is then one fill and the norm one dot product (backward accumulates into
    the views; 0 + g is g exactly, so trajectories do not change). Binding waits for the first backward because a
    parameter that gets no gradient must keep `grad=None` (an optimizer skips it; a zero gradient would move it).
    If something replaces a gradient (an optimizer's own zero_grad), the views are bound again from the new values.
    """

    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer):
        self.params, self.optimizer = params, optimizer
        self.flat: Tensor | None = None
        self.views: list[Tensor] = []
        self.bindable = True

    def zero(self) -> None:
        if self.flat is not None:
            self.flat.zero_()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        if self.flat is None:
            if self.bindable:
                self._bind()
        else:
            # A plain loop: a generator here would cost more than the check.
            for p, v in zip(self.params, self.views):
                if p.grad is not v:
                    self._rebind()
                    return

    def sq_norm(self) -> Tensor:
        """The squared global norm as a 0-d tensor (no host sync)."""
        if self.flat is not None:
            return self.flat.dot(self.flat)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros(())
        return torch.stack(torch._foreach_norm(grads)).square().sum()

    def _bind(self) -> None:
        grads = [p.grad for p in self.params]
        self.bindable = bool(grads) and all(
            g is not None
            and g.layout == torch.strided
            and g.dtype == grads[0].dtype
            and g.device == grads[0].device
            for g in grads
        )
        if not self.bindable:
            return
        self.flat = torch.empty(sum(g.numel() for g in grads), dtype=grads[0].dtype, device=grads[0].device)
        self.views = [v.view_as(p) for v, p in zip(self.flat.split([g.numel() for g in grads]), self.params)]
        self._rebind()

    def _rebind(self) -> None:
        for p, v in zip(self.params, self.views):
            if p.grad is not v:
                if p.grad is None:
                    v.zero_()
                else:
                    v.copy_(p.grad)
                p.grad = v


def _endless(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Batches epoch after epoch (the caller stops at its step budget)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data loader yielded no batch")


def _uses_device_values(settings: LoopSettings, params: list[nn.Parameter]) -> bool:
    if settings.device_values is not None:
        return settings.device_values
    return bool(params) and params[0].device.type in ("cuda", "mps")


class _HostValues:
    """A chunk's per-step values as Python floats (CPU: `.item()` costs no sync there, and a list store is cheaper
    than writing a tensor element): divergence is checked every step, before the update."""

    def __init__(self, buffer: StepBuffer, trial: Trial, progress: Progress):
        self.buffer, self.trial, self.progress = buffer, trial, progress
        self.columns = [buffer.host[key] for key in STEP_KEYS]
        self.losses = buffer.host[schema.TRAIN_LOSS]
        self.limit: float | None = None
        self.first = 0  # the chunk's first step

    def record(self, i: int, values: tuple[Tensor, ...]) -> bool:
        """Step i of the chunk (STEP_KEYS' values); False when its loss diverged: it must not be updated."""
        for column, value in zip(self.columns, values):
            column[i] = value.item()
        loss = self.losses[i]
        if self.limit is None:
            self.limit = self.trial.limit(loss)
        if not loss <= self.limit:  # NaN fails every comparison
            return False
        self.progress.update(self.first + i + 1, loss)
        return True

    def take(self, n: int) -> tuple[dict[str, list], bool]:
        """The chunk's first n steps as columns, and whether the last of them diverged."""
        columns = {key: values[:n] for key, values in self.buffer.host.items()}
        losses = columns[schema.TRAIN_LOSS]
        return columns, bool(losses) and not losses[-1] <= self.limit


class _DeviceValues:
    """A chunk's per-step values copied into device memory: nothing in a step waits for the device. Divergence is
    found on the device when the chunk is taken, in its one device-to-host copy."""

    def __init__(self, buffer: StepBuffer, trial: Trial, progress: Progress):
        self.buffer, self.trial, self.progress = buffer, trial, progress
        self.slots = [buffer.slots(key) for key in STEP_KEYS]
        self.limit: Tensor | None = None
        self.first = 0

    def record(self, i: int, values: tuple[Tensor, ...]) -> bool:
        for slots, value in zip(self.slots, values):
            slots[i].copy_(value.detach())  # the buffer must not join the loss's autograd graph
        return True

    def take(self, n: int) -> tuple[dict[str, list], bool]:
        """The chunk's first n steps as columns, cut at the first diverged step, and whether one diverged."""
        if n == 0:
            return self.buffer.take(0)[0], False
        loss = self.buffer.column(schema.TRAIN_LOSS)[:n]
        if self.limit is None:  # the first chunk starts at step 0
            self.limit = Trial.limits(self.trial.factor, loss[0])
        columns, [[bad]] = self.buffer.take(n, extra=[first_true(~(loss <= self.limit))])
        if bad < n:  # nothing after the diverged step
            columns = {key: values[: int(bad) + 1] for key, values in columns.items()}
        losses = columns[schema.TRAIN_LOSS]
        self.progress.update(self.first + len(losses), losses[-1])
        return columns, bad < n


class _Run:
    """The state of one training run between chunks; its bookkeeping is `trial`'s."""

    def __init__(
        self, task, model, optimizer, loader, val, settings, tracker, scheduler, needs_closure, progress
    ):
        self.task, self.model, self.optimizer, self.val = task, model, optimizer, val
        self.settings, self.tracker, self.scheduler = settings, tracker, scheduler
        self.needs_closure, self.progress = needs_closure, progress
        params = [p for p in model.parameters() if p.requires_grad]
        self.grads = Gradients(params, optimizer)
        self.batches = _endless(loader)
        self.trial = Trial(
            settings.steps_per_epoch,
            settings.batch_size,
            settings.divergence_factor,
            settings.f_star,
            settings.target,
        )
        host_keys = [schema.WALL_S] + ([schema.LR] if scheduler is not None else [])
        if _uses_device_values(settings, params):
            device = params[0].device if params else "cpu"
            dtype = params[0].dtype if params else torch.float32
            self.buffer = StepBuffer(STEP_KEYS, host_keys, settings.chunk_steps, device, dtype)
            self.values: _HostValues | _DeviceValues = _DeviceValues(self.buffer, self.trial, progress)
        else:
            self.buffer = StepBuffer((), [*STEP_KEYS, *host_keys], settings.chunk_steps)
            self.values = _HostValues(self.buffer, self.trial, progress)
        self._done = 0  # updates done in the current chunk
        self.start = time.perf_counter()
        self.start_ms = time.time() * 1000.0

    # --- one step -----------------------------------------------------------------------------------------------

    def _forward_backward(self, batch: Batch) -> Tensor:
        self.grads.zero()
        loss = self.task.loss(self.model, batch)
        loss.backward()
        self.grads.after_backward()
        return loss

    def _update(self, batch: Batch) -> None:
        if self.needs_closure:
            self.optimizer.step(self._closure(batch))
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _closure(self, batch: Batch):
        """For optimizers that re-evaluate the loss inside step (L-BFGS line search)."""

        def closure() -> Tensor:
            return self._forward_backward(batch)

        return closure

    # --- one chunk ----------------------------------------------------------------------------------------------

    def run_chunk(self, n: int) -> None:
        """Run up to n steps and write them as one chunk; a diverged step ends the trial there."""
        first = self.values.first = self.trial.steps
        self._done = 0
        try:
            recorded = self._steps(n)
        except BaseException:
            # Ctrl-C or an error inside a step: the steps already done are still recorded.
            self._write(first, *self.values.take(self._done))
            raise
        self._write(first, *self.values.take(recorded))

    def _steps(self, n: int) -> int:
        """Up to n steps (fewer when the chunk's time is up or a loss diverged); returns how many were recorded."""
        record, group, start = self.values.record, self.optimizer.param_groups[0], self.start
        walls, lrs = self.buffer.host[schema.WALL_S], self.buffer.host.get(schema.LR)
        deadline = time.perf_counter() + self.settings.flush_every_s
        for i in range(n):
            batch = next(self.batches)
            loss = self._forward_backward(batch)
            if lrs is not None:
                lrs[i] = group["lr"]
            if not record(i, (loss, self.grads.sq_norm())):  # in the order of STEP_KEYS
                walls[i] = time.perf_counter() - start
                return i + 1
            self._update(batch)
            walls[i] = now = time.perf_counter() - start
            self._done = i + 1
            if now + start > deadline:
                return i + 1
        return n

    def _write(self, first: int, columns: dict[str, list], diverged: bool) -> None:
        """One chunk's columns, as the trial completes them, to the tracker with per-step timestamps."""
        columns = self.trial.steps_done(first, columns, diverged)
        if columns[schema.TRAIN_LOSS]:
            write_chunk(self.tracker, first, columns, timestamps_ms(self.start_ms, columns[schema.WALL_S]))

    def evaluate(self) -> None:
        """Validation metrics and the evaluation-point series at step = updates done."""
        self.model.eval()
        values = self.task.evaluate(self.model, self.val)
        self.model.train()
        # With a scheduler, lr is a per-step series.
        lr = self.optimizer.param_groups[0]["lr"] if self.scheduler is None else None
        k = self.trial.steps
        metrics = self.trial.evaluated(k, values, lr, time.perf_counter() - self.start)
        self.tracker.log_metrics(metrics, step=k)


def train(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Batch],
    val: Batch,
    settings: LoopSettings,
    tracker: Tracker,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    needs_closure: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train until `settings.total_steps` optimizer steps or divergence."""
    run = _Run(
        task,
        model,
        optimizer,
        loader,
        val,
        settings,
        tracker,
        scheduler,
        needs_closure,
        progress or Progress(),
    )
    trial = run.trial
    model.train()
    try:
        run.evaluate()
        while trial.status == COMPLETED and trial.steps < settings.total_steps:
            next_eval = min(
                (trial.steps // settings.eval_every + 1) * settings.eval_every, settings.total_steps
            )
            run.run_chunk(min(settings.chunk_steps, next_eval - trial.steps))
            if trial.status == COMPLETED and trial.steps == next_eval:
                run.evaluate()
    finally:
        run.progress.close()
    return trial.result(time.perf_counter() - run.start)


__all__ = ["COMPLETED", "DIVERGED", "Gradients", "LoopSettings", "Progress", "RunResult", "train"]
