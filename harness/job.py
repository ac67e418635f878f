"""One training job: plan it, build its parts, open its MLflow run, train, record the outcome.

Everything that can refuse the config (the plan's checks, then torch's own checks when the optimizer is built on the
real model) runs before the MLflow run is created, so bad input leaves no run behind. Callable without Hydra:
`run_job(cfg, JobContext(...))`.
"""

import contextlib
import logging
import random
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from harness.config import Config
from harness.context import JobContext
from harness.data import make_loader
from harness.errors import ConfigError
from harness.job_run import end_run, open_run, record_result, summary_line
from harness.loop import LoopSettings, train
from harness.optim import create_scheduler
from harness.plan import Plan, make_plan
from harness.progress_bar import progress_for
from harness.tracking import FAILED, KILLED, Tracker
from harness.trial import RunResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """What a plan builds before its run is opened."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None


def run_job(cfg: Config, ctx: JobContext, plan: Plan | None = None) -> RunResult:
    """Plan, build, track and train one run. Exceptions propagate after the run is ended FAILED or KILLED.

    `plan`: the job's plan when the caller made it already (the batched launcher plans every job to group them);
    it is not made again.

    Raises:
        ConfigError: the config was refused; no MLflow run was created.
    """
    if plan is None:
        plan = make_plan(cfg, ctx)
    try:
        parts = build(plan)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - e.g. a user's task whose model does not build: still a FAILED run
        with recorded(open_run(plan, ctx)):
            raise
    tracker = open_run(plan, ctx)
    with recorded(tracker):
        result = train_plan(plan, parts, tracker)
        record_result(tracker, result, plan.run_name)
    # Through Hydra's job logger: on the terminal and in the job's <output dir>/train.log.
    log.info(summary_line(result, tracker, ctx))
    return result


def build(plan: Plan) -> Parts:
    """Seed, then build the model, the optimizer (torch's own checks refuse a config here) and the schedule."""
    torch.set_num_threads(plan.threads)
    _seed_everything(plan.seed)
    model = plan.task.make_model().to(plan.device)
    optimizer = plan.optimizer.create(model.parameters(), plan.lr, plan.hparams)
    scheduler = create_scheduler(optimizer, plan.schedule.name, plan.total_steps, plan.schedule_params)
    return Parts(model, optimizer, scheduler)


def train_plan(plan: Plan, parts: Parts, tracker: Tracker) -> RunResult:
    """The training loop over the plan's data, reporting to `tracker`."""
    train_data = tuple(t.to(plan.device) for t in plan.splits.train)
    val_data = tuple(t.to(plan.device) for t in plan.splits.val)
    loader = make_loader(train_data, plan.batch_size, plan.shuffle, plan.seed, plan.num_workers)
    settings = LoopSettings(
        total_steps=plan.total_steps,
        eval_every=plan.eval_every,
        divergence_factor=plan.divergence_factor,
        f_star=plan.task.f_star(plan.splits),
        target=plan.task.target(plan.splits),
        steps_per_epoch=plan.steps_per_epoch,
        batch_size=plan.batch_size,
    )
    progress = progress_for(plan.progress, plan.total_steps, plan.run_name)
    return train(
        plan.task,
        parts.model,
        parts.optimizer,
        loader,
        val_data,
        settings,
        tracker,
        parts.scheduler,
        plan.optimizer.needs_closure,
        progress,
    )


@contextlib.contextmanager
def recorded(tracker: Tracker) -> Iterator[None]:
    """End the run KILLED on Ctrl-C, FAILED (with the traceback) on an exception; re-raise either."""
    try:
        yield
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGINT/SIGTERM as harness.signals.Interrupted("SIGTERM")
        end_run(tracker, KILLED, f"interrupted ({type(exc).__name__}: {exc})".replace(": )", ")"))
        raise
    except Exception as exc:
        end_run(tracker, FAILED, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        raise


def _seed_everything(seed: int) -> None:
    """Reset every global RNG, so no state carries over between jobs sharing a process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


__all__ = ["ConfigError", "JobContext", "Plan", "build", "make_plan", "run_job", "train_plan"]
