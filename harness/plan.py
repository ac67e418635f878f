"""Resolve a job's config once into a Plan: everything that can refuse the config, and every derived number.

The job builds from the plan and the MLflow record is written from it, so the effective lr, the step budget, the
eval cadence, the thread count, the run name and the config hash are each computed here and nowhere else; nothing
below the plan reads the config.
"""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import (
    MAX_STEPS,
    Config,
    TrackingConfig,
    config_hash,
    effective_lr,
    optimizer_hparams,
    scheduler_params,
    validate,
)
from harness.context import JobContext
from harness.data import resolve_batch_size
from harness.devices import resolve_device, usable_cores
from harness.errors import ConfigError
from harness.optim import OptimInfo, ScheduleInfo, get_optimizer_info, get_schedule_info
from harness.tasks import Splits, Task, create_task
from harness.tracking import record

EVALUATIONS_PER_RUN = 20  # default cadence when trainer.eval_every is null


@dataclass(frozen=True)
class Plan:
    """One job, resolved: validated, nothing built but the task and its data, nothing tracked yet."""

    run_name: str  # the MLflow run's name (see `run_name`)
    config: dict[str, Any]  # the config as plain data (dataclasses.asdict): params and config.yaml
    tracking: TrackingConfig  # where and whether the run is tracked
    progress: bool  # tracking.progress: a progress bar on a terminal
    seed: int
    shuffle: bool  # data.shuffle
    num_workers: int  # data.num_workers
    divergence_factor: float  # trainer.divergence_factor
    optimizer_name: str  # optimizer.name, as the registry knows it
    device_spec: str  # `device` as typed (auto, cuda:1, ...); `device` is what it resolved to
    task: Task
    splits: Splits
    device: torch.device
    optimizer: OptimInfo
    hparams: dict[str, Any]  # the optimizer's hyperparameters besides lr
    lr: float  # optimizer.lr x optimizer.lr_scale
    schedule: ScheduleInfo
    schedule_params: dict[str, Any]
    batch_size: int  # "full" and oversize batches resolved to a number
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    threads: int  # torch CPU threads: `threads`, else cores / parallel jobs capped by the task
    config_hash: str


def make_plan(cfg: Config, ctx: JobContext) -> Plan:
    """Validate the config and resolve everything that can still reject it. Raises ConfigError."""
    validate(cfg)
    device = resolve_device(cfg.device, ctx.job_index)
    task = create_task(cfg.task.name, cfg.task.module, cfg.task.kwargs)
    splits = _load_splits(task)
    size = splits.train[0].shape[0]
    batch_size = resolve_batch_size(cfg.data.batch_size, size)
    steps_per_epoch = -(-size // batch_size)
    total_steps = _total_steps(cfg, task, steps_per_epoch)
    return Plan(
        run_name=run_name(cfg, task.name, batch_size),
        config=dataclasses.asdict(cfg),
        tracking=cfg.tracking,
        progress=cfg.tracking.progress,
        seed=cfg.seed,
        shuffle=cfg.data.shuffle,
        num_workers=cfg.data.num_workers,
        divergence_factor=cfg.trainer.divergence_factor,
        optimizer_name=cfg.optimizer.name,
        device_spec=cfg.device,
        task=task,
        splits=splits,
        device=device,
        optimizer=get_optimizer_info(cfg.optimizer.name),
        hparams=optimizer_hparams(cfg),
        lr=effective_lr(cfg),
        schedule=get_schedule_info(cfg.scheduler.name),
        schedule_params=scheduler_params(cfg),
        batch_size=batch_size,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        eval_every=cfg.trainer.eval_every or max(1, -(-total_steps // EVALUATIONS_PER_RUN)),
        threads=cfg.threads or _default_threads(task, ctx),
        config_hash=config_hash(cfg),
    )


def run_name(cfg: Config, task_name: str, batch_size: int | str) -> str:
    """tracking.run_name, else `<optimizer> lr=... bs=<batch size> seed=... (<task>)` (credentials redacted).

    `batch_size` is the one used; a refused config, which has no plan, names its run with the configured one.
    """
    if cfg.tracking.run_name:
        return record.redact(cfg.tracking.run_name)
    return record.job_run_name(task_name, cfg.optimizer.name, effective_lr(cfg), batch_size, cfg.seed)


def _total_steps(cfg: Config, task: Task, steps_per_epoch: int) -> int:
    """trainer.epochs and trainer.max_steps, whichever ends first; neither: the task's default budget."""
    epochs, max_steps = cfg.trainer.epochs, cfg.trainer.max_steps
    if epochs is None and max_steps is None:
        epochs, max_steps = task.default_budget.epochs, task.default_budget.max_steps
    limits = [n for n in (max_steps, None if epochs is None else epochs * steps_per_epoch) if n is not None]
    total = min(limits)
    if total > MAX_STEPS:  # only epochs x steps per epoch can pass it: each key alone is in range
        raise ConfigError(
            "trainer.epochs",
            epochs,
            f"at most {MAX_STEPS // steps_per_epoch:,} epochs of {steps_per_epoch} steps (a budget of at most "
            f"{MAX_STEPS:,} steps)",
        )
    return total


def _default_threads(task: Task, ctx: JobContext) -> int:
    threads = max(1, usable_cores() // ctx.parallel_jobs)  # no oversubscription across parallel jobs
    return threads if task.max_threads is None else min(threads, task.max_threads)


_SPLITS: dict[tuple[str, str], Splits] = {}


def _load_splits(task: Task) -> Splits:
    """Tasks' data is deterministic and never written to, so jobs in one process share it."""
    key = (type(task).__qualname__, json.dumps(vars(task), sort_keys=True, default=str))
    if key not in _SPLITS:
        _SPLITS[key] = task.make_data()
    return _SPLITS[key]
