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

How the values travel: per-step values go into preallocated per-chunk buffers (harness.tracking.columns) and reach
the tracker as one `log_columns` call per chunk of `chunk_steps` steps; a chunk also ends at every evaluation point,
so evaluations are written after the train steps before them. Two ways to fill a chunk:
- host values (CPU): `loss.item()` costs no sync there, so divergence is checked every step, before the update.
- device values (CUDA/MPS; `device_values=True` forces it on CPU, for tests): loss and squared grad norm are copied
  into a device tensor; nothing in the step waits for the device. Divergence is checked on the device once per chunk,
  the chunk crosses to the host in one copy, the record is cut at the diverged step (no metric after it), and the
  run stops there, as it would have on the host path (the steps run after it in that chunk are discarded).
  `time/wall_s` is then the host's clock when the step was issued; the device catches up at each chunk's copy.
"""

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.tasks.base import Batch, Target, Task
from harness.tracking import schema
from harness.tracking.base import Tracker
from harness.tracking.columns import StepBuffer, first_true, timestamps_ms, write_chunk
from harness.tracking.schema import COMPLETED, DIVERGED

LOSS_KEYS = (schema.TRAIN_LOSS, schema.GRAD_NORM)  # per-step values the device computes


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


@dataclass
class RunResult:
    """What one training run achieved."""

    status: str  # completed | diverged
    steps: int  # optimizer steps taken (for a diverged run: before the step whose loss diverged)
    wall_s: float
    final_train_loss: float
    final_val: dict[str, float] = field(default_factory=dict)
    best_val_loss: float = math.nan
    time_to_target_s: float | None = None
    steps_to_target: int | None = None
    divergence: str | None = None  # why it was stopped as diverged
    diverged_at: int | None = None  # the step whose loss diverged: the last step in the record

    def final_metrics(self) -> dict[str, float]:
        """The `final/*`, `best/*` and summary metrics logged once at the end."""
        metrics = {
            schema.FINAL_TRAIN_LOSS: self.final_train_loss,
            schema.STEPS: float(self.steps),
            schema.TOTAL_S: self.wall_s,
        }
        metrics.update({f"{schema.FINAL_VAL_PREFIX}{key}": value for key, value in self.final_val.items()})
        if not math.isnan(self.best_val_loss):
            metrics[schema.BEST_VAL_LOSS] = self.best_val_loss
        if self.time_to_target_s is not None:
            metrics[schema.TIME_TO_TARGET_S] = self.time_to_target_s
            metrics[schema.STEPS_TO_TARGET] = float(self.steps_to_target)
        return metrics


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


def _evaluate(task: Task, model: nn.Module, val: Batch) -> dict[str, float]:
    model.eval()
    metrics = {f"{schema.VAL_PREFIX}{key}": value for key, value in task.evaluate(model, val).items()}
    model.train()
    return metrics


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


class _Run:
    """The state of one training run between chunks."""

    def __init__(
        self, task, model, optimizer, loader, val, settings, tracker, scheduler, needs_closure, progress
    ):
        self.task, self.model, self.optimizer, self.val = task, model, optimizer, val
        self.settings, self.tracker, self.scheduler = settings, tracker, scheduler
        self.needs_closure, self.progress = needs_closure, progress
        params = [p for p in model.parameters() if p.requires_grad]
        self.grads = Gradients(params, optimizer)
        self.batches = _endless(loader)
        self.on_device = _uses_device_values(settings, params)
        dtype = params[0].dtype if params else torch.float32
        host_keys = [schema.WALL_S] + ([schema.LR] if scheduler is not None else [])
        if self.on_device:
            device = params[0].device if params else "cpu"
            self.buffer = StepBuffer(LOSS_KEYS, host_keys, settings.chunk_steps, device, dtype)
        else:
            self.buffer = StepBuffer((), [*LOSS_KEYS, *host_keys], settings.chunk_steps)
        self.steps = 0
        self.limit: float | Tensor | None = None  # divergence_factor x |initial loss|
        self.initial = math.nan
        self.last_loss = math.nan
        self.status, self.divergence, self.diverged_at = COMPLETED, None, None
        self.best_val = math.nan
        self.val_metrics: dict[str, float] = {}
        self.target_s: float | None = None
        self.target_step: int | None = None
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
        """Run up to n steps, write them as one chunk; stop early (and mark the run) on divergence."""
        first, self._done = self.steps, 0
        try:
            if self.on_device:
                columns, bad = self._take_device(self._device_steps(n))
            else:
                done, bad = self._host_steps(n)
                columns = {
                    key: values[: done + (bad is not None)] for key, values in self.buffer.host.items()
                }
        except BaseException:
            # Ctrl-C or an error inside a step: the steps already done are still recorded.
            self._write(first, self._columns_done())
            raise
        if bad is not None:  # nothing after the diverged step
            columns = {key: values[: bad + 1] for key, values in columns.items()}
        self._write(first, columns)
        losses = columns[schema.TRAIN_LOSS]
        if bad is not None:
            self._diverge(first + bad, losses[bad])
        else:
            self.steps, self.last_loss = first + len(losses), losses[-1]

    def _host_steps(self, n: int) -> tuple[int, int | None]:
        """Steps with values as Python floats; returns (updates done, chunk index of the diverged step or None)."""
        host, group, progress = self.buffer.host, self.optimizer.param_groups[0], self.progress
        losses, norms, walls = host[schema.TRAIN_LOSS], host[schema.GRAD_NORM], host[schema.WALL_S]
        lrs, start, first = host.get(schema.LR), self.start, self.steps
        deadline = time.perf_counter() + self.settings.flush_every_s
        for i in range(n):
            batch = next(self.batches)
            loss = self._forward_backward(batch)
            losses[i] = value = loss.item()
            norms[i] = math.sqrt(self.grads.sq_norm().item())
            if self.limit is None:
                self._set_limit(value)
            if lrs is not None:
                lrs[i] = group["lr"]
            if not value <= self.limit:  # NaN fails every comparison
                walls[i] = time.perf_counter() - start
                return i, i
            self._update(batch)
            walls[i] = now = time.perf_counter() - start
            self._done = i + 1
            progress.update(first + i + 1, value)
            if now + start > deadline:
                return i + 1, None
        return n, None

    def _device_steps(self, n: int) -> int:
        """Steps with loss and squared grad norm copied into device memory: no host sync inside."""
        buffer, group, start = self.buffer, self.optimizer.param_groups[0], self.start
        losses, norms = buffer.slots(schema.TRAIN_LOSS), buffer.slots(schema.GRAD_NORM)
        walls, lrs = buffer.host[schema.WALL_S], buffer.host.get(schema.LR)
        deadline = time.perf_counter() + self.settings.flush_every_s
        for i in range(n):
            batch = next(self.batches)
            loss = self._forward_backward(batch)
            losses[i].copy_(loss.detach())
            norms[i].copy_(self.grads.sq_norm())
            if lrs is not None:
                lrs[i] = group["lr"]
            self._update(batch)
            walls[i] = now = time.perf_counter() - start
            self._done = i + 1
            if now + start > deadline:
                return i + 1
        return n

    def _take_device(self, done: int) -> tuple[dict[str, list], int | None]:
        """The chunk's values on the host, and the index of its first diverged step (found on the device)."""
        loss = self.buffer.column(schema.TRAIN_LOSS)[:done]
        if self.limit is None:  # the first chunk starts at step 0
            self.limit = self.settings.divergence_factor * loss[0].abs().clamp_min(1e-12)
        bad = ~torch.isfinite(loss) | (loss > self.limit)
        columns, [[first_bad]] = self.buffer.take(done, extra=[first_true(bad)])
        columns[schema.GRAD_NORM] = [math.sqrt(v) for v in columns[schema.GRAD_NORM]]
        if self.steps == 0:
            self.initial = columns[schema.TRAIN_LOSS][0]
        self.progress.update(self.steps + done, columns[schema.TRAIN_LOSS][-1])
        return columns, (int(first_bad) if first_bad < done else None)

    def _columns_done(self) -> dict[str, list]:
        """The completed steps of an interrupted chunk."""
        if not self.on_device:
            return {key: values[: self._done] for key, values in self.buffer.host.items()}
        columns, _ = self.buffer.take(self._done)
        columns[schema.GRAD_NORM] = [math.sqrt(v) for v in columns[schema.GRAD_NORM]]
        return columns

    def _set_limit(self, initial: float) -> None:
        self.initial = initial
        finite = math.isfinite(initial)
        # A non-finite first loss diverges at once: no value is <= -inf.
        self.limit = self.settings.divergence_factor * max(abs(initial), 1e-12) if finite else -math.inf

    def _diverge(self, step: int, loss: float) -> None:
        self.status, self.diverged_at, self.steps, self.last_loss = DIVERGED, step, step, loss
        self.divergence = f"loss {loss:.4g} at step {step} (initial {self.initial:.4g})"

    # --- recording ----------------------------------------------------------------------------------------------

    def _write(self, first: int, columns: dict[str, list]) -> None:
        """One chunk's columns (suboptimality derived here) to the tracker, with per-step timestamps; notes when a
        target on a per-step metric was first reached."""
        if not columns.get(schema.TRAIN_LOSS):
            return
        if self.settings.f_star is not None:
            f_star = self.settings.f_star
            columns[schema.TRAIN_SUBOPTIMALITY] = [v - f_star for v in columns[schema.TRAIN_LOSS]]
        self._watch_target(first, columns)
        write_chunk(self.tracker, first, columns, timestamps_ms(self.start_ms, columns[schema.WALL_S]))

    def _watch_target(self, first: int, columns: dict[str, list]) -> None:
        target = self.settings.target
        if target is None or self.target_step is not None or target.metric not in columns:
            return
        for i, value in enumerate(columns[target.metric]):
            if target.reached(value):
                self.target_s, self.target_step = columns[schema.WALL_S][i], first + i
                return

    def evaluate(self) -> None:
        """Validation metrics and the evaluation-point series at step = updates done."""
        metrics = _evaluate(self.task, self.model, self.val)
        k, s = self.steps, self.settings
        metrics[schema.EPOCH] = k / s.steps_per_epoch
        metrics[schema.SAMPLES_SEEN] = float(k * s.batch_size)
        if self.scheduler is None:  # with a scheduler, lr is a per-step series
            metrics[schema.LR] = self.optimizer.param_groups[0]["lr"]
        self.tracker.log_metrics(metrics, step=k)
        self.val_metrics = {key: v for key, v in metrics.items() if key.startswith(schema.VAL_PREFIX)}
        target = s.target
        if target is not None and self.target_step is None and target.metric in metrics:
            if target.reached(metrics[target.metric]):
                self.target_s, self.target_step = time.perf_counter() - self.start, k
        loss = metrics[schema.VAL_LOSS]
        if not math.isfinite(loss) and k > 0:  # the last update blew up the parameters
            self.status, self.divergence, self.diverged_at = DIVERGED, f"val/loss {loss} after {k} steps", k
        else:
            self.best_val = loss if math.isnan(self.best_val) else min(self.best_val, loss)

    def result(self) -> RunResult:
        final_val = (
            {}
            if self.status == DIVERGED
            else {k.removeprefix(schema.VAL_PREFIX): v for k, v in self.val_metrics.items()}
        )
        return RunResult(
            status=self.status,
            steps=self.steps,
            wall_s=time.perf_counter() - self.start,
            final_train_loss=self.last_loss,
            final_val=final_val,
            best_val_loss=self.best_val,
            time_to_target_s=self.target_s,
            steps_to_target=self.target_step,
            divergence=self.divergence,
            diverged_at=self.diverged_at,
        )


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
    model.train()
    try:
        run.evaluate()
        while run.status == COMPLETED and run.steps < settings.total_steps:
            next_eval = min(
                (run.steps // settings.eval_every + 1) * settings.eval_every, settings.total_steps
            )
            run.run_chunk(min(settings.chunk_steps, next_eval - run.steps))
            if run.status == COMPLETED and run.steps == next_eval:
                run.evaluate()
    finally:
        run.progress.close()
    return run.result()
