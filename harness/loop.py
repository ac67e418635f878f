"""The training loop: zero_grad -> forward -> loss -> backward -> step, evaluation cadence, divergence, timing.

It imports neither Hydra nor MLflow: it reports to a tracker and returns a RunResult.

Step numbering (the MLflow step): optimizer steps are counted from 0. At step t the loop computes the loss at the
current parameters x_t (logged as `train/loss` at step t) and updates x_t -> x_{t+1}. Evaluations are logged at the
number of updates done: step 0 is the initial model, step k the model after k updates. So for a function task,
`train/loss` and `val/loss` at the same step describe the same parameters.
"""

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.tasks.base import Batch, Target, Task
from harness.tracking.base import Tracker
from harness.tracking.schema import COMPLETED, DIVERGED


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    eval_every: int
    divergence_factor: float = 1e4
    f_star: float | None = None
    target: Target | None = None
    steps_per_epoch: int = 1
    batch_size: int = 1


@dataclass
class RunResult:
    """What one training run achieved."""

    status: str  # completed | diverged
    steps: int  # optimizer steps taken
    wall_s: float
    final_train_loss: float
    final_val: dict[str, float] = field(default_factory=dict)
    best_val_loss: float = math.nan
    time_to_target_s: float | None = None
    steps_to_target: int | None = None
    divergence: str | None = None  # why it was stopped as diverged

    def final_metrics(self) -> dict[str, float]:
        """The `final/*`, `best/*` and summary metrics logged once at the end."""
        metrics = {
            "final/train_loss": self.final_train_loss,
            "steps": float(self.steps),
            "time/total_s": self.wall_s,
        }
        metrics.update({f"final/val_{key}": value for key, value in self.final_val.items()})
        if not math.isnan(self.best_val_loss):
            metrics["best/val_loss"] = self.best_val_loss
        if self.time_to_target_s is not None:
            metrics["time_to_target_s"] = self.time_to_target_s
            metrics["steps_to_target"] = float(self.steps_to_target)
        return metrics


class Progress:
    """What the loop tells a progress display; the default shows nothing."""

    def update(self, steps: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


def _grad_norm(params: list[nn.Parameter]) -> float:
    """Global L2 norm of the gradients: one fused per-tensor norm, then the norm of those.

    (torch.nn.utils.get_total_norm groups tensors by device and dtype first, which costs more than the norm itself
    for small models; a model's gradients share one device here.)
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item()


class _TargetWatch:
    """Remembers when the target metric first reached its level."""

    def __init__(self, target: Target | None, start: float):
        self.target, self.start = target, start
        self.time_s: float | None = None
        self.step: int | None = None

    def see(self, metrics: dict[str, float], step: int) -> None:
        if self.target is None or self.time_s is not None or self.target.metric not in metrics:
            return
        if self.target.reached(metrics[self.target.metric]):
            self.time_s, self.step = time.perf_counter() - self.start, step


def _evaluate(task: Task, model: nn.Module, val: Batch) -> dict[str, float]:
    model.eval()
    metrics = {f"val/{key}": value for key, value in task.evaluate(model, val).items()}
    model.train()
    return metrics


def _batches(loader: Iterable[Batch], total_steps: int) -> Iterable[tuple[int, Batch]]:
    """(epoch, batch) pairs, epoch after epoch, until total_steps batches."""
    step, epoch = 0, 0
    while True:
        for batch in loader:
            if step == total_steps:
                return
            yield epoch, batch
            step += 1
        epoch += 1


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
    progress = progress or Progress()
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    watch = _TargetWatch(settings.target, start)
    val_metrics = _evaluate(task, model, val)
    tracker.log_metrics(val_metrics, step=0)
    watch.see(val_metrics, 0)
    best_val = val_metrics["val/loss"]
    initial_loss: float | None = None
    loss_value, steps, status, divergence = math.nan, 0, COMPLETED, None
    model.train()

    for epoch, batch in _batches(loader, settings.total_steps):
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        grad_norm = _grad_norm(params)
        loss_value = loss.item()
        if initial_loss is None:
            initial_loss = loss_value
        if not math.isfinite(loss_value) or loss_value > settings.divergence_factor * max(
            abs(initial_loss), 1e-12
        ):
            status = DIVERGED
            divergence = f"loss {loss_value:.4g} at step {steps} (initial {initial_loss:.4g})"
        else:
            if needs_closure:
                optimizer.step(_closure(task, model, optimizer, batch))
            else:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
        metrics = {
            "train/loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm,
            "epoch": float(epoch),
            "samples_seen": float((steps + 1) * settings.batch_size),
            "time/wall_s": time.perf_counter() - start,
        }
        if settings.f_star is not None:
            metrics["train/suboptimality"] = loss_value - settings.f_star
        tracker.log_metrics(metrics, step=steps)
        watch.see(metrics, steps)
        if status == DIVERGED:
            break
        steps += 1
        progress.update(steps, loss_value)
        if steps % settings.eval_every == 0 or steps == settings.total_steps:
            val_metrics = _evaluate(task, model, val)
            tracker.log_metrics(val_metrics, step=steps)
            watch.see(val_metrics, steps)
            if not math.isfinite(val_metrics["val/loss"]):  # the last update blew up the parameters
                status, divergence = DIVERGED, f"val/loss {val_metrics['val/loss']} after {steps} steps"
                break
            best_val = min(best_val, val_metrics["val/loss"])

    progress.close()
    final_val = {} if status == DIVERGED else {k.removeprefix("val/"): v for k, v in val_metrics.items()}
    return RunResult(
        status=status,
        steps=steps,
        wall_s=time.perf_counter() - start,
        final_train_loss=loss_value,
        final_val=final_val,
        best_val_loss=best_val,
        time_to_target_s=watch.time_s,
        steps_to_target=watch.step,
        divergence=divergence,
    )


def _closure(task: Task, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
    """For optimizers that re-evaluate the loss inside step (L-BFGS line search)."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        return loss

    return closure
