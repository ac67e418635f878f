"""A trial's bookkeeping (harness.trial.Trial), which the single loop and the batched engine share: what it derives
from the measured values, the divergence rule and messages, time and steps to target, best_val, the RunResult."""

import math

import pytest
import torch

from harness.tasks.base import Target
from harness.tracking import schema
from harness.trial import GRAD_SQ, Trial


def chunk(losses, sq_norms=None, walls=None):
    n = len(losses)
    return {
        schema.TRAIN_LOSS: list(losses),
        GRAD_SQ: list(sq_norms or [4.0] * n),
        schema.WALL_S: list(walls or [0.1 * (i + 1) for i in range(n)]),
    }


def test_a_chunk_is_completed_with_the_derived_series_and_counted():
    trial = Trial(steps_per_epoch=4, batch_size=8, divergence_factor=1e4, f_star=1.0)
    columns = trial.steps_done(0, chunk([3.0, 2.0, 1.5], sq_norms=[9.0, 4.0, 2.25]))
    assert columns[schema.GRAD_NORM] == [3.0, 2.0, 1.5] and GRAD_SQ not in columns
    assert columns[schema.TRAIN_SUBOPTIMALITY] == [2.0, 1.0, 0.5]
    assert (trial.steps, trial.initial, trial.last_loss, trial.seen_s) == (3, 3.0, 1.5, pytest.approx(0.3))
    trial.steps_done(3, chunk([1.25]))
    assert (trial.steps, trial.initial, trial.last_loss) == (4, 3.0, 1.25)
    assert schema.TRAIN_SUBOPTIMALITY not in Trial(4, 8, 1e4).steps_done(0, chunk([1.0]))


def test_the_evaluation_point_record_and_best_val():
    trial = Trial(steps_per_epoch=4, batch_size=8, divergence_factor=1e4)
    record = trial.evaluated(6, {"loss": 0.5, "accuracy": 0.9}, lr=0.1, at=1.0)
    assert record == {"val/loss": 0.5, "val/accuracy": 0.9, "epoch": 1.5, "samples_seen": 48.0, "lr": 0.1}
    assert schema.LR not in trial.evaluated(8, {"loss": 0.7}, lr=None, at=2.0)  # a scheduler: lr per step
    result = trial.result(3.0)
    assert (result.best_val_loss, result.final_val, result.wall_s) == (0.5, {"loss": 0.7}, 3.0)


def test_divergence_limit_and_messages():
    trial = Trial(1, 1, divergence_factor=100.0)
    assert trial.limit(-2.0) == 200.0 and trial.limit(0.0) == 100.0 * 1e-12
    # A non-finite first loss diverges at once.
    assert trial.limit(math.inf) == trial.limit(math.nan) == -math.inf
    initial = torch.tensor([-2.0, 0.0, math.inf, math.nan], dtype=torch.float64)
    limits = Trial.limits(torch.full((4,), 100.0, dtype=torch.float64), initial)
    assert limits.tolist() == [trial.limit(v) for v in initial.tolist()]

    trial.steps_done(0, chunk([13.0, 52.0]))
    trial.steps_done(2, chunk([208.0, 2.13e5]), diverged=True)  # the record ends at the diverged step
    result = trial.result(1.0)
    assert (result.status, result.steps, result.diverged_at) == ("diverged", 3, 3)
    assert result.divergence == "loss 2.13e+05 at step 3 (initial 13)"
    assert result.final_train_loss == 2.13e5 and result.final_val == {}


def test_a_non_finite_validation_loss_diverges_after_an_update_not_before():
    trial = Trial(1, 1, 1e4)
    trial.evaluated(0, {"loss": math.inf}, lr=0.1, at=0.0)
    assert trial.status == "completed"
    trial.steps_done(0, chunk([1.0] * 5))
    trial.evaluated(5, {"loss": math.nan}, lr=0.1, at=1.0)
    result = trial.result(1.0)
    assert (result.status, result.steps, result.divergence) == ("diverged", 5, "val/loss nan after 5 steps")


@pytest.mark.parametrize("evaluation_first", [False, True])
def test_the_target_counts_at_its_earliest_step_whatever_the_order_it_is_seen_in(evaluation_first):
    """The engine hands a chunk's evaluations before its steps; the loop hands them in time order."""
    on_steps = Trial(1, 1, 1e4, target=Target(schema.TRAIN_LOSS, 1.0))
    on_val = Trial(1, 1, 1e4, target=Target("val/accuracy", 0.8, higher_is_better=True))
    for trial in (on_steps, on_val):
        see_evaluations = lambda trial=trial: [  # noqa: E731
            trial.evaluated(k, {"loss": 1.0, "accuracy": a}, 0.1, at=k / 10) for k, a in ((4, 0.9), (8, 0.95))
        ]
        if evaluation_first:
            see_evaluations()
        trial.steps_done(0, chunk([3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.1, 0.1], walls=[i / 10 for i in range(8)]))
        if not evaluation_first:
            see_evaluations()
    assert (on_steps.target_step, on_steps.target_s) == (2, 0.2)
    assert (on_val.target_step, on_val.target_s) == (4, 0.4)
    on_steps.steps_done(8, chunk([0.05]))  # reached again later: the first step stays
    assert on_steps.result(1.0).steps_to_target == 2
