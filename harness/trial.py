"""One trial's bookkeeping, shared by the single-run loop (harness.loop) and each trial of a batched group
(harness.batched.engine): the divergence rule and its message, time and steps to target, the evaluation-point record,
the best validation loss and the RunResult.

Both trainers hand a Trial what they measured, as host values (Python floats): each chunk of per-step columns, and
each evaluation. What follows from those values is derived here and nowhere else, so the two trainers write the same
record: `grad_norm` from the squared norm a step records, `train/suboptimality`, and the evaluation point's `epoch`,
`samples_seen` and `lr`. The series themselves are harness.loop's per-step contract (its module docstring).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.tasks.base import Target
from harness.tracking import schema
from harness.tracking.schema import COMPLETED, DIVERGED, PRUNED

# A step records its squared gradient norm (a sum: no root per step on the device); Trial.steps_done roots it into
# `grad_norm`.
GRAD_SQ = "grad_norm_squared"
STEP_KEYS = (schema.TRAIN_LOSS, GRAD_SQ)  # what every step of either trainer computes, in this order
# |initial loss| below this counts as this, so that a zero initial loss does not make every step diverge.
LOSS_FLOOR = 1e-12


@dataclass
class RunResult:
    """What one training run achieved."""

    status: str  # completed | diverged | pruned
    steps: int  # optimizer steps taken (for a diverged run: before the step whose loss diverged)
    wall_s: float
    final_train_loss: float
    final_val: dict[str, float] = field(default_factory=dict)
    best_val_loss: float = math.nan
    time_to_target_s: float | None = None
    steps_to_target: int | None = None
    divergence: str | None = None  # why it was stopped as diverged
    diverged_at: int | None = None  # the step whose loss diverged: the last step in the record
    rung: int | None = None  # a pruned run: the rung (1, 2, ...) that stopped it after `steps` steps

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


class Trial:
    """The bookkeeping of one trial, fed its record chunk by chunk; makes its RunResult.

    A trainer calls `steps_done` with each chunk of per-step columns and `evaluated` with each evaluation, in the
    order it likes within a chunk: a target counts at the earliest step it was reached (a target's metric is either
    a per-step series or an evaluation-point one, never both, so two sources never tie).

    Args:
        steps_per_epoch, batch_size: for the evaluation points' `epoch` and `samples_seen`.
        divergence_factor: a loss above factor x |initial loss|, or NaN, diverges (see `limit`).
        f_star: the task's optimum, for `train/suboptimality`; None: not recorded.
        target: the task's target, for time and steps to target; None: none.
    """

    def __init__(
        self,
        steps_per_epoch: int,
        batch_size: int,
        divergence_factor: float,
        f_star: float | None = None,
        target: Target | None = None,
    ):
        self.steps_per_epoch, self.batch_size, self.factor = steps_per_epoch, batch_size, divergence_factor
        self.f_star, self.target = f_star, target
        self.status = COMPLETED
        self.steps = 0  # updates done; a diverged trial: the step whose loss diverged
        self.initial = self.last_loss = self.best_val = math.nan
        self.val: dict[str, float] = {}  # the last evaluation's metrics, without the `val/` prefix
        self.divergence: str | None = None
        self.diverged_at: int | None = None
        self.target_s: float | None = None
        self.target_step: int | None = None
        self.rung: int | None = None
        self.seen_s = 0.0  # the trainer's clock at the latest step or evaluation recorded

    # --- divergence ---------------------------------------------------------------------------------------------

    def limit(self, initial: float) -> float:
        """The divergence limit for an initial loss: a loss diverges when `not loss <= limit` (NaN fails every
        comparison). A non-finite initial loss makes it -inf: the trial diverges at once."""
        return self.factor * max(abs(initial), LOSS_FLOOR) if math.isfinite(initial) else -math.inf

    @staticmethod
    def limits(factors: float | Tensor, initial: Tensor) -> Tensor:
        """`limit` on the device, elementwise, in the dtype of `initial` (for trainers that keep losses there)."""
        return torch.where(torch.isfinite(initial), factors * initial.abs().clamp_min(LOSS_FLOOR), -math.inf)

    def _diverge(self, step: int, why: str) -> None:
        self.status, self.diverged_at, self.steps, self.divergence = DIVERGED, step, step, why

    def prune(self, rung: int) -> None:
        """Stopped by successive halving at rung `rung` after the steps recorded so far (harness.batched.halving)."""
        self.status, self.rung = PRUNED, rung

    # --- what the trainer recorded ------------------------------------------------------------------------------

    def steps_done(self, first: int, columns: dict[str, list], diverged: bool = False) -> dict[str, list]:
        """Take a chunk of steps first, first + 1, ... as recorded (STEP_KEYS, `time/wall_s`, maybe `lr`: lists of
        host values) and return its columns as logged: `grad_norm` for the squared norm, `train/suboptimality`
        added. `diverged`: the last step's loss diverged (the record is cut there; nothing after it)."""
        losses = columns[schema.TRAIN_LOSS]
        if not losses:
            return columns
        columns[schema.GRAD_NORM] = [math.sqrt(v) for v in columns.pop(GRAD_SQ)]
        if self.f_star is not None:
            f_star = self.f_star
            columns[schema.TRAIN_SUBOPTIMALITY] = [v - f_star for v in losses]
        if first == 0:
            self.initial = losses[0]
        self.last_loss = losses[-1]
        self.seen_s = max(self.seen_s, columns[schema.WALL_S][-1])
        self._watch_steps(first, columns)
        if diverged:
            step = first + len(losses) - 1
            self._diverge(step, f"loss {self.last_loss:.4g} at step {step} (initial {self.initial:.4g})")
        else:
            self.steps = first + len(losses)
        return columns

    def evaluated(self, k: int, values: Mapping[str, float], lr: float | None, at: float) -> dict[str, float]:
        """The record of the evaluation after k updates, whose task metrics are `values` (the clock `at`).

        `val/<metric>`, `epoch` (epochs of data behind the parameters), `samples_seen` and, when `lr` is given (no
        scheduler; with one, lr is a per-step series), `lr`. A validation loss that is not finite after an update
        ends the trial as diverged at k.
        """
        record = {f"{schema.VAL_PREFIX}{key}": value for key, value in values.items()}
        record[schema.EPOCH] = k / self.steps_per_epoch
        record[schema.SAMPLES_SEEN] = float(k * self.batch_size)
        if lr is not None:
            record[schema.LR] = lr
        self.val = dict(values)
        self.seen_s = max(self.seen_s, at)
        target = self.target
        if target is not None and target.metric in record and target.reached(record[target.metric]):
            self._reached(k, at)
        loss = record[schema.VAL_LOSS]
        if not math.isfinite(loss) and k > 0:  # the last update blew up the parameters
            self._diverge(k, f"val/loss {loss} after {k} steps")
        else:
            self.best_val = loss if math.isnan(self.best_val) else min(self.best_val, loss)
        return record

    def _watch_steps(self, first: int, columns: dict[str, list]) -> None:
        target = self.target
        if target is None or target.metric not in columns:
            return
        if self.target_step is not None and self.target_step <= first:
            return
        for i, value in enumerate(columns[target.metric]):
            if target.reached(value):
                self._reached(first + i, columns[schema.WALL_S][i])
                return

    def _reached(self, step: int, at: float) -> None:
        if self.target_step is None or step < self.target_step:
            self.target_s, self.target_step = at, step

    def result(self, wall_s: float) -> RunResult:
        return RunResult(
            status=self.status,
            steps=self.steps,
            wall_s=wall_s,
            final_train_loss=self.last_loss,
            # a pruned run's last evaluation is at its rung: not a final result
            final_val=dict(self.val) if self.status == COMPLETED else {},
            best_val_loss=self.best_val,
            time_to_target_s=self.target_s,
            steps_to_target=self.target_step,
            divergence=self.divergence,
            diverged_at=self.diverged_at,
            rung=self.rung,
        )
