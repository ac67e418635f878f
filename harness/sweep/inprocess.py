"""A sweep's jobs run inside the launching process (`hydra/launcher=batched`): grouped, batched where they can be.

Jobs whose trials share `harness.batched.spec.group_key` (task, model, optimizer class, batch size, step budget,
eval cadence, scheduler kind, device) train together through `harness.batched.engine.train_group`, one MLflow child
run per trial, recorded as the one-at-a-time path records it. Every other job (L-BFGS, custom optimizers, tasks
without a batched form, a group of one) runs through the single-run path, `run_in_sweep`, one after another.
Grid points already done are skipped before grouping. No job's failure stops the others.

Knows nothing of Hydra: the launcher hands over plain `Config`s and hooks that call Hydra's per-job callbacks.
"""

import importlib.util
import logging
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from harness.config import Config, config_hash, optimizer_hparams
from harness.errors import ConfigError
from harness.job import JobContext, Plan, effective_lr, end_run, open_tracker, plan, record_result
from harness.loop import RunResult
from harness.sweep import progress
from harness.sweep import state as sweep_state
from harness.sweep.run import objective, run_in_sweep, with_sweep_ids
from harness.sweep.state import SweepState
from harness.tracking import FAILED, KILLED, schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InProcessJob:
    index: int  # the job's number in the sweep (hydra.job.num)
    overrides: tuple[str, ...]  # as the sweeper generated them
    config: Config
    structural: tuple[str, ...] = ()  # its config-group choices (the launcher's composition key)


class Hooks(Protocol):
    """What the launcher does around each job (Hydra's on_job_start / on_job_end callbacks)."""

    project_dir: str

    def sweep_state(self) -> SweepState | None:
        """The sweep's state (parent run, completed grid points), known before any job starts."""

    def on_job_start(self, job: InProcessJob) -> None: ...

    def on_job_end(self, job: InProcessJob, value: object) -> None: ...


def is_harness_task(task_function) -> bool:
    """True for the harness's own entry point (harness.train.main), whose jobs this module knows how to run.

    By its source file: under `python -m harness.train` the function's module is `__main__`.
    """
    code = getattr(task_function, "__code__", None)
    spec = importlib.util.find_spec("harness.train")
    return (
        code is not None and spec is not None and code.co_filename == spec.origin and code.co_name == "main"
    )


def run_jobs(jobs: Sequence[InProcessJob], hooks: Hooks, batch: bool = True) -> list[object]:
    """Run every job; returns, in job order, what the task function would have returned (or the exception)."""
    values: dict[int, object] = {}
    state = _state(hooks, jobs)
    singles, groups = _partition(jobs, state, hooks.project_dir) if batch else (list(jobs), [])
    order = sorted([(j.index, [j], None) for j in singles] + [(g[0][0].index, *zip(*g)) for g in groups])
    for _, members, plans in order:
        if plans is None:
            values[members[0].index] = _run_single(members[0], hooks)
        else:
            values.update(_run_group(list(members), list(plans), hooks))
    return [values[j.index] for j in jobs]


def _state(hooks: Hooks, jobs: Sequence[InProcessJob]) -> SweepState:
    """The sweep's state, as the sweep callback will activate it for each job (a stand-in without the callback)."""
    return hooks.sweep_state() or SweepState(None, time.time(), os.devnull)


def context(job: InProcessJob, project_dir: str) -> JobContext:
    return JobContext(
        project_dir=Path(project_dir), overrides=job.overrides, job_index=job.index, parallel_jobs=1
    )


def _run_single(job: InProcessJob, hooks: Hooks) -> object:
    hooks.on_job_start(job)
    state = sweep_state.current() or SweepState(None, time.time(), os.devnull)
    try:
        value = run_in_sweep(job.config, context(job, hooks.project_dir), state)
    except Exception as exc:  # noqa: BLE001 - as Hydra's run_job: the failure becomes the job's return
        value = exc
    hooks.on_job_end(job, value)
    return value


# --- grouping ------------------------------------------------------------------------------------------------------


def _engine():
    """The batched engine, or None where it is not installed (then every job runs on its own)."""
    try:
        from harness.batched import engine, spec
    except ImportError:
        return None
    return engine, spec


def _partition(jobs, state: SweepState, project_dir: str):
    """(jobs to run alone, groups of (job, plan) pairs to train together). Done grid points go alone: they skip."""
    modules = _engine()
    if modules is None:
        return list(jobs), []
    _, spec_module = modules
    singles, keyed = [], {}
    for job in jobs:
        cfg = with_sweep_ids(job.config, state)
        if config_hash(cfg) in state.completed:
            singles.append(job)
            continue
        try:
            p = plan(cfg, context(job, project_dir))
            key = spec_module.group_key(trial_spec(cfg, p))
        except (ConfigError, NotImplementedError, ValueError):
            key = None  # refused configs are recorded by the single path; others have no batched form
        if key is None:
            singles.append(job)
        else:
            keyed.setdefault(key, []).append((job, p))
    groups = []
    for members in keyed.values():
        if len(members) == 1:
            singles.append(members[0][0])
        else:
            groups.append(members)
    return singles, groups


def trial_spec(cfg: Config, p: Plan):
    """The engine's description of one trial, from the validated config and its plan."""
    from harness.batched.spec import TrialSpec

    return TrialSpec(
        task=p.task,
        splits=p.splits,
        optimizer=cfg.optimizer.name,
        lr=effective_lr(cfg),
        hparams=optimizer_hparams(cfg),
        seed=cfg.seed,
        batch_size=p.batch_size,
        shuffle=cfg.data.shuffle,
        total_steps=p.total_steps,
        steps_per_epoch=p.steps_per_epoch,
        eval_every=p.eval_every,
        divergence_factor=cfg.trainer.divergence_factor,
        scheduler=cfg.scheduler,
        device=p.device,
    )


# --- a batched group -------------------------------------------------------------------------------------------------


def _run_group(jobs: list[InProcessJob], plans: list[Plan], hooks: Hooks) -> dict[int, object]:
    """Train K trials as one program; each trial is its own child run, ended as the single path ends it."""
    engine, _ = _engine()
    for job in jobs:
        hooks.on_job_start(job)
    state = sweep_state.current() or SweepState(None, time.time(), os.devnull)
    cfgs = [with_sweep_ids(job.config, state) for job in jobs]
    engine_tags = {schema.ENGINE: schema.ENGINE_BATCHED, schema.BATCH_TRIALS: str(len(jobs))}
    trackers, values = [], {}
    try:
        for job, cfg, p in zip(jobs, cfgs, plans):
            trackers.append(open_tracker(cfg, context(job, hooks.project_dir), p, engine_tags))
        torch.set_num_threads(cfgs[0].threads or plans[0].threads)
        results = engine.train_group([trial_spec(cfg, p) for cfg, p in zip(cfgs, plans)], trackers)
    except KeyboardInterrupt:
        for tracker in trackers:
            end_run(tracker, KILLED, "interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 - the whole group failed: every trial is a failed job, the sweep goes on
        error, details = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        log.error("batched group of %d trials failed: %s", len(jobs), error, exc_info=True)
        for tracker in trackers:
            end_run(tracker, FAILED, error, details)
        for job in jobs:
            progress.report(state, "failed", list(job.overrides), error)
            values[job.index] = None
            hooks.on_job_end(job, None)
        return values
    for job, tracker, result in zip(jobs, trackers, results):
        values[job.index] = _record(job, tracker, result, state)
        hooks.on_job_end(job, values[job.index])
    return values


def _record(job: InProcessJob, tracker, result: RunResult, state: SweepState) -> float | None:
    record_result(tracker, result)
    progress.report(state, result.status, list(job.overrides))
    return objective(result.final_val.get("loss"))


__all__ = ["InProcessJob", "is_harness_task", "run_jobs", "trial_spec"]
