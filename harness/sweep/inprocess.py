"""A sweep's jobs run inside the launching process (`hydra/launcher=batched`): grouped, batched where they can be.

Jobs whose trials share `harness.batched.spec.group_key` (task, model, optimizer class, batch size, step budget,
eval cadence, scheduler kind, device) train together through `harness.batched.engine.train_group`, one MLflow child
run per trial, recorded as the one-at-a-time path records it. Every other job (L-BFGS, custom optimizers, tasks
without a batched form, a group of one) runs through the single-run path, `run_in_sweep`, one after another.
Grid points already done are skipped before grouping. No job's failure stops the others.

Knows nothing of Hydra: the launcher hands over plain `Config`s and hooks that call Hydra's per-job callbacks.
"""

import dataclasses
import functools
import importlib.util
import inspect
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
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


@dataclass(frozen=True)
class BatchOptions:
    """How the launcher batches (hydra.launcher.*)."""

    batch: bool = True  # false: every job trains on its own
    workers: int | None = None  # processes training groups side by side (None: one per usable core; 1: none)
    max_trials: int | None = None  # at most this many trials in one batched program
    memory_budget_mb: float | None = (
        None  # MiB one batched program may hold beyond the data (None: the engine's)
    )


class Hooks(Protocol):
    """What the launcher does around each job (Hydra's on_job_start / on_job_end callbacks)."""

    project_dir: str
    state: SweepState | None  # what the sweep callback decided before any job (None: no callback configured)

    def open_sweep(self) -> None:
        """The sweep's parent run, when the callback left opening it to the launcher: called before any job's run is
        created (idempotent); `state` holds it afterwards."""

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


def run_jobs(jobs: Sequence[InProcessJob], hooks: Hooks, options: BatchOptions | None = None) -> list[object]:
    """Run every job; returns, in job order, what the task function would have returned (or the exception)."""
    options = options or BatchOptions()
    values = _skip_done(jobs, hooks)
    jobs_to_run = [job for job in jobs if job.index not in values]
    singles, groups = _partition(jobs_to_run, hooks) if options.batch else (jobs_to_run, [])
    target = _worker_target(groups, options)
    pieces = _pieces(groups, options, target) if groups else []
    workers = min(target, len(pieces))
    if workers > 1:
        values.update(_train_in_workers(pieces, singles, hooks, workers))
    else:
        order = sorted(
            [(j.index, j) for j in singles] + [(p.jobs[0].index, p) for p in pieces], key=itemgetter(0)
        )
        for _, item in order:
            if isinstance(item, _Piece):
                values.update(_train_here(item, hooks))
            else:
                values[item.index] = _run_single(item, hooks)
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
    hooks.open_sweep()
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


# --- batched groups ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """Trials that train as one program: one group key, at most what the memory budget (and max_trials) allows."""

    jobs: tuple[InProcessJob, ...]
    plans: tuple[Plan, ...]
    specs: tuple  # TrialSpec per trial

    @functools.cached_property
    def cost(self) -> float:
        """Work, roughly, to order pieces for the workers: trials x steps x parameters x (samples per step + what a
        step costs beyond its samples, about 64 samples' worth on digits_mlp)."""
        from harness.batched.spec import batched_form

        spec = self.specs[0]
        params = batched_form(spec.task).param_count()
        return len(self.specs) * spec.total_steps * max(1, params) * (max(1, spec.batch_size) + 64)

    def halves(self) -> "tuple[_Piece, _Piece]":
        mid = len(self.jobs) // 2
        cut = lambda part: _Piece(self.jobs[part], self.plans[part], self.specs[part])  # noqa: E731
        return cut(slice(None, mid)), cut(slice(mid, None))


def _cost(piece: _Piece) -> float:
    return piece.cost


def _pieces(groups: list, options: BatchOptions, workers: int) -> list[_Piece]:
    """Groups cut to what one program may hold, then the largest halved until every worker has a piece;
    largest first (the longest work starts first, so the workers finish together)."""
    engine, spec_module = _engine()
    pieces = []
    budget = options.memory_budget_mb or engine.DEFAULT_MEMORY_BUDGET_MB
    for members in groups:
        jobs, plans = zip(*members)
        specs = tuple(spec_module.spec_from_plan(p) for p in plans)
        size = engine.max_group_size(specs[0], budget)
        if options.max_trials is not None:
            size = max(1, min(size, options.max_trials))
        for start in range(0, len(jobs), size):
            part = slice(start, start + size)
            pieces.append(_Piece(jobs[part], plans[part], specs[part]))
    pieces.sort(key=_cost, reverse=True)
    if workers <= 1:
        return pieces
    while len(pieces) < workers and len(pieces[0].jobs) >= 4:
        pieces = sorted([*pieces[1:], *pieces[0].halves()], key=_cost, reverse=True)
    # The last pieces handed out decide how long one worker trains while the others wait: halved, the wait halves.
    tail = [
        half for piece in pieces[-workers:] for half in (piece.halves() if len(piece.jobs) >= 8 else [piece])
    ]
    return pieces[:-workers] + sorted(tail, key=_cost, reverse=True)


def _worker_target(groups: list, options: BatchOptions) -> int:
    """Processes for the groups: one per usable core (per trial's torch threads); one (this process) on a GPU, where
    one process drives the device, or where fork is not available."""
    from harness.sweep import workers

    if not groups or not workers.available():
        return 1
    plans = [p for members in groups for _, p in members]
    if any(p.device.type != "cpu" for p in plans):
        return 1
    if options.workers is not None:
        return max(1, options.workers)
    return max(1, workers.usable_cores() // max(1, max(p.threads for p in plans)))


class _GroupRun:
    """One piece's life in the launcher: runs created, metrics written as they come, runs ended."""

    def __init__(self, piece: _Piece, hooks: Hooks):
        self.piece, self.hooks = piece, hooks
        self.trackers: list = []
        self.group = None

    def start(self) -> dict[int, object] | None:
        """Hydra's on_job_start per trial, then the runs; when they cannot start, every trial failed: their values."""
        jobs, plans = self.piece.jobs, self.piece.plans
        self.hooks.open_sweep()  # (after the first pieces went to the workers: they train while it opens)
        for job in jobs:
            self.hooks.on_job_start(job)
        engine_tags = {schema.ENGINE: schema.ENGINE_BATCHED, schema.BATCH_TRIALS: str(len(jobs))}
        try:
            self.group = _run_group_record(plans, self.hooks)
            if self.group is not None:
                new_runs = [_new_run(job, p, self.hooks, engine_tags) for job, p in zip(jobs, plans)]
                self.trackers = self.group.create(new_runs)
                self.group.flush()
            else:
                for job, p in zip(jobs, plans):
                    self.trackers.append(open_run(p, context(job, self.hooks), engine_tags))
        except Exception as exc:  # noqa: BLE001 - the store refused: every trial is a failed job, the sweep goes on
            return self.fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return None

    def log_columns(self, trial: int, steps: list[int], columns: dict) -> None:
        self.trackers[trial].log_columns(steps, columns)

    def finish(self, results: list) -> dict[int, object]:
        """Final metrics and status of each trial, the runs ended (one transaction on SQLite), Hydra told."""
        plans, jobs = self.piece.plans, self.piece.jobs
        for tracker, result, p in zip(self.trackers, results, plans):
            record_result(tracker, result, run_name(p.cfg, p.task.name, p.batch_size))
        self._flush()
        state = self.hooks.state
        if state is not None:
            progress.report_many(state, [(r.status, list(j.overrides), "") for j, r in zip(jobs, results)])
        values = {}
        for job, result in zip(jobs, results):
            values[job.index] = objective(result.final_val.get("loss"))
            self.hooks.on_job_end(job, values[job.index])
        return values

    def fail(self, error: str, details: str | None) -> dict[int, object]:
        """The whole piece failed: every trial is a failed job (its steps so far kept), the sweep goes on."""
        log.error("batched group of %d trials failed: %s", len(self.piece.jobs), error)
        for tracker in self.trackers:
            end_run(tracker, FAILED, error, details)
        self._flush()
        if self.hooks.state is not None:
            progress.report_many(
                self.hooks.state,
                [(schema.FAILED_OUTCOME, list(job.overrides), error) for job in self.piece.jobs],
            )
        values = {}
        for job in self.piece.jobs:
            values[job.index] = None
            self.hooks.on_job_end(job, None)
        return values

    def kill(self, reason: str) -> None:
        """Interrupted: every run ends KILLED with the steps it recorded."""
        for tracker in self.trackers:
            end_run(tracker, KILLED, reason)
        self._flush()

    def _flush(self) -> None:
        if self.group is not None:
            self.group.flush()


def _train_here(piece: _Piece, hooks: Hooks) -> dict[int, object]:
    """Train a piece in this process."""
    engine, _ = _engine()
    run = _GroupRun(piece, hooks)
    failed = run.start()
    if failed is not None:
        return failed
    torch.set_num_threads(piece.plans[0].threads)
    try:
        results = engine.train_group(list(piece.specs), run.trackers, max_trials=len(piece.specs))
    except KeyboardInterrupt:
        run.kill("interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 - as Hydra's run_job: the failure becomes the job's return
        log.debug("batched group failed", exc_info=True)
        return run.fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return run.finish(results)


def _train_in_workers(pieces: list[_Piece], singles: list[InProcessJob], hooks: Hooks, n: int) -> dict:
    """Pieces in n worker processes, largest first; jobs that train alone run here meanwhile.

    The pool hands a worker its next piece as soon as it reports the last one done (harness.sweep.workers); this
    process creates a piece's runs when it hears the piece was handed out, and records and ends them as its columns
    and results arrive, behind the workers (creating and ending a piece's runs take a few hundred ms on SQLite).
    """
    from harness.sweep import workers

    values: dict[int, object] = {}
    running: dict[int, _GroupRun] = {}
    remaining = set(range(len(pieces)))
    singles = list(singles)
    threads = pieces[0].plans[0].threads
    log.info(f"Training {len(pieces)} batched groups in {n} worker processes")
    specs = [list(p.specs) for p in pieces]
    with workers.Pool(specs, n, threads, order=range(len(pieces))) as pool:
        try:
            while remaining:
                events = pool.events(timeout=0 if singles else None)
                for event in events:
                    if isinstance(event, workers.Assigned):
                        run = _GroupRun(pieces[event.piece], hooks)
                        failed = run.start()
                        if failed is None:
                            running[event.piece] = run
                        else:
                            values.update(failed)
                        continue
                    run = running.get(event.piece)
                    if not isinstance(event, workers.Columns):
                        remaining.discard(event.piece)
                    if run is None:  # its runs could not be created: the trials are already failed jobs
                        continue
                    if isinstance(event, workers.Columns):
                        run.log_columns(event.trial, event.steps, event.columns)
                    elif isinstance(event, workers.Done):
                        values.update(running.pop(event.piece).finish(event.results))
                    else:
                        values.update(running.pop(event.piece).fail(event.error, event.details))
                if not pool.alive():  # every worker died: what none was handed trains here
                    for index in pool.take_pending():
                        values.update(_train_here(pieces[index], hooks))
                        remaining.discard(index)
                if not events and singles:
                    job = singles.pop(0)
                    values[job.index] = _run_single(job, hooks)
        except KeyboardInterrupt:
            for run in running.values():
                run.kill("interrupted (KeyboardInterrupt)")
            raise
    for job in singles:
        values[job.index] = _run_single(job, hooks)
    return values


def _run_group_record(plans, hooks: Hooks):
    """A RunGroup on the sweep's SQLite store, or None: then one MlflowTracker per trial (any other store)."""
    parent = hooks.state.parent if hooks.state is not None else None
    if parent is None or not plans[0].cfg.tracking.enabled:
        return None
    from harness.tracking.group import RunGroup

    return RunGroup.open(parent.uri, parent.experiment_id)


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
    datasets = [record.training_input(dataset)] if dataset is not None else []
    return NewRun(run_name(p.cfg, p.task.name, p.batch_size), tags, params, texts, datasets)


__all__ = ["InProcessJob", "is_harness_task", "run_jobs"]
