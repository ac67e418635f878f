"""A sweep's jobs run inside the launching process (`hydra/launcher=batched`): grouped, batched where they can be.

Jobs whose trials share `harness.batched.spec.group_key` (task, model, optimizer class, batch size, step budget,
eval cadence, scheduler kind, device) train together through `harness.batched.engine.train_group`, one MLflow child
run per trial, recorded as the one-at-a-time path records it. Every other job (L-BFGS, custom optimizers, tasks
without a batched form, a group of one) runs through the single-run path, `run_in_sweep`, one after another.
Grid points already done are skipped before grouping. No job's failure stops the others.

Knows nothing of Hydra: the launcher hands over plain `Config`s and hooks that call Hydra's per-job callbacks.
"""

import dataclasses
import importlib.util
import inspect
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from harness.config import Config, config_hash
from harness.context import JobContext
from harness.errors import ConfigError
from harness.job_run import end_run, open_run, record_result, run_name
from harness.plan import Plan, make_plan
from harness.sweep import progress
from harness.sweep.run import objective, run_in_sweep
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
    state: SweepState | None  # what the sweep callback decided before any job (None: no callback configured)

    def on_job_start(self, job: InProcessJob) -> None: ...

    def on_job_end(self, job: InProcessJob, value: object) -> None: ...


def is_harness_task(task_function) -> bool:
    """True for the harness's own entry point (harness.train.main), whose jobs this module knows how to run.

    By its source file: under `python -m harness.train` the function's module is `__main__`. Decorators that wrap
    it (harness.entry.task) are looked through.
    """
    code = getattr(inspect.unwrap(task_function), "__code__", None)
    spec = importlib.util.find_spec("harness.train")
    return (
        code is not None and spec is not None and code.co_filename == spec.origin and code.co_name == "main"
    )


def run_jobs(jobs: Sequence[InProcessJob], hooks: Hooks, batch: bool = True) -> list[object]:
    """Run every job; returns, in job order, what the task function would have returned (or the exception)."""
    values = _skip_done(jobs, hooks)
    jobs_to_run = [job for job in jobs if job.index not in values]
    singles, groups = _partition(jobs_to_run, hooks) if batch else (jobs_to_run, [])
    order = sorted([(j.index, [j], None) for j in singles] + [(g[0][0].index, *zip(*g)) for g in groups])
    for _, members, plans in order:
        if plans is None:
            values[members[0].index] = _run_single(members[0], hooks)
        else:
            values.update(_run_group(list(members), list(plans), hooks))
    return [values[j.index] for j in jobs]


def _skip_done(jobs: Sequence[InProcessJob], hooks: Hooks) -> dict[int, object]:
    """The grid points already done (resume), skipped as run_in_sweep skips them, in one progress write."""
    completed = hooks.state.completed if hooks.state is not None else {}
    hashes = {job.index: config_hash(job.config) for job in jobs} if completed else {}
    done = [job for job in jobs if hashes.get(job.index) in completed]
    values = {}
    for job in done:
        hooks.on_job_start(job)
        values[job.index] = objective(completed[hashes[job.index]])
        hooks.on_job_end(job, values[job.index])
    progress.report_many(hooks.state, [(progress.SKIPPED, list(job.overrides), "") for job in done])
    return values


def context(job: InProcessJob, hooks: Hooks) -> JobContext:
    """The job's context as harness.train builds it from Hydra's runtime, plus the sweep's parent run."""
    parent = hooks.state.parent if hooks.state is not None else None
    return JobContext(
        project_dir=Path(hooks.project_dir), overrides=job.overrides, job_index=job.index, parent=parent
    )


def _run_single(job: InProcessJob, hooks: Hooks) -> object:
    hooks.on_job_start(job)
    try:
        value = run_in_sweep(job.config, context(job, hooks), hooks.state)
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


def _partition(jobs: Sequence[InProcessJob], hooks: Hooks):
    """(jobs to run alone, groups of (job, plan) pairs to train together). Done grid points go alone: they skip."""
    modules = _engine()
    if modules is None:
        return list(jobs), []
    _, spec_module = modules
    singles, keyed, keys = [], {}, {}
    for job in jobs:
        try:
            p = make_plan(job.config, context(job, hooks))
            key = _group_key(spec_module, spec_module.spec_from_plan(p), keys)
        except ConfigError:
            key = None  # refused: the single path records it as a failed run
        except Exception as exc:  # noqa: BLE001 - whatever the engine cannot classify trains alone, never stops the sweep
            log.warning(
                "job %d trains alone: the batched engine could not group it (%s: %s)",
                job.index,
                type(exc).__name__,
                exc,
            )
            key = None
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


def _group_key(spec_module, spec, cache: dict):
    """spec.group_key, once per distinct set of its inputs: it builds an optimizer to classify the update, which
    costs far more than the rest of a job's set-up. Its inputs: all of the spec but lr, seed and divergence factor."""
    hparams = tuple(sorted((k, repr(v)) for k, v in spec.hparams.items()))
    inputs = (
        spec_module.task_identity(spec.task), spec.optimizer, hparams, spec.batch_size, spec.shuffle,
        spec.total_steps, spec.steps_per_epoch, spec.eval_every, spec.scheduler, str(spec.device),
    )  # fmt: skip
    if inputs not in cache:
        cache[inputs] = spec_module.group_key(spec)
    return cache[inputs]


# --- a batched group -------------------------------------------------------------------------------------------------


def _run_group(jobs: list[InProcessJob], plans: list[Plan], hooks: Hooks) -> dict[int, object]:
    """Train K trials as one program; each trial is its own child run, ended as the single path ends it."""
    engine, spec_module = _engine()
    for job in jobs:
        hooks.on_job_start(job)
    state = hooks.state
    engine_tags = {schema.ENGINE: schema.ENGINE_BATCHED, schema.BATCH_TRIALS: str(len(jobs))}
    trackers, values, group = [], {}, None
    try:
        group = _run_group_record(jobs, plans, hooks, engine_tags)
        if group is not None:
            trackers = group.create([_new_run(job, p, hooks, engine_tags) for job, p in zip(jobs, plans)])
        else:
            for job, p in zip(jobs, plans):
                trackers.append(open_run(p, context(job, hooks), engine_tags))
        torch.set_num_threads(plans[0].threads)
        results = engine.train_group([spec_module.spec_from_plan(p) for p in plans], trackers)
    except KeyboardInterrupt:
        for tracker in trackers:
            end_run(tracker, KILLED, "interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 - the whole group failed: every trial is a failed job, the sweep goes on
        error, details = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        log.error("batched group of %d trials failed: %s", len(jobs), error, exc_info=True)
        for tracker in trackers:
            end_run(tracker, FAILED, error, details)
        if state is not None:
            progress.report_many(state, [(schema.FAILED_OUTCOME, list(job.overrides), error) for job in jobs])
        for job in jobs:
            values[job.index] = None
            hooks.on_job_end(job, None)
        return values
    finally:
        if group is not None:
            group.flush()  # the runs' metrics, tags and ends, in one transaction
    for tracker, result, p in zip(trackers, results, plans):
        record_result(tracker, result, run_name(p.cfg, p.task.name, p.batch_size))
    if group is not None:
        group.flush()
    if state is not None:
        progress.report_many(state, [(r.status, list(job.overrides), "") for job, r in zip(jobs, results)])
    for job, result in zip(jobs, results):
        values[job.index] = objective(result.final_val.get("loss"))
        hooks.on_job_end(job, values[job.index])
    return values


def _run_group_record(jobs, plans, hooks: Hooks, engine_tags):
    """A RunGroup on the sweep's SQLite store, or None: then one MlflowTracker per trial (any other store)."""
    parent = hooks.state.parent if hooks.state is not None else None
    if parent is None or not plans[0].cfg.tracking.enabled:
        return None
    from harness.tracking import store
    from harness.tracking.group import RunGroup

    return RunGroup.open(store.client(parent.uri), parent.experiment_id)


def _new_run(job: InProcessJob, p: Plan, hooks: Hooks, engine_tags: dict[str, str]):
    """The run harness.job_run.open_run would start for this trial, as a RunGroup row."""
    from harness.devices import device_description
    from harness.job_run import config_text, resolved_params, run_tags
    from harness.tracking import record
    from harness.tracking.group import NewRun

    ctx = context(job, hooks)
    tags = run_tags(p.cfg, ctx, p.task.name, p.config_hash, str(p.device), device_description(p.device))
    tags |= engine_tags | {schema.PARENT_RUN_ID: ctx.parent.run_id}
    config = dataclasses.asdict(p.cfg)
    params = record.job_params(config, resolved_params(p))
    texts = {schema.CONFIG_ARTIFACT: config_text(record.redact_config(config))}
    dataset = record.dataset_record(p.task, p.splits)
    datasets = [record.dataset_input(dataset)] if dataset is not None else []
    return NewRun(run_name(p.cfg, p.task.name, p.batch_size), tags, params, texts, datasets)


__all__ = ["InProcessJob", "is_harness_task", "run_jobs"]
