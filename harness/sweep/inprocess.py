"""A sweep's jobs run inside the launching process (`hydra/launcher=batched`): grouped, batched where they can be.

The jobs and the order of work: grid points already done are skipped first; groups and pieces are decided by
harness.sweep.pieces; a piece trains through `harness.batched.engine.train_group` (here, or in the forked workers of
harness.sweep.workers, whose events this module follows) and its runs live in harness.sweep.group_run, one child run
per trial, recorded as the one-at-a-time path records it. Every other job (L-BFGS, custom optimizers, tasks without a
batched form, a group of one) runs through the single-run path, `run_in_sweep`, with the plan made when grouping.
No job's failure stops the others.

Knows nothing of Hydra: the launcher hands over plain `Config`s and hooks that call Hydra's per-job callbacks.
"""

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

from harness.batched import engine
from harness.batched.halving import Halving
from harness.config import Config, config_hash
from harness.context import JobContext
from harness.plan import Plan
from harness.sweep import pieces, progress
from harness.sweep.group_run import GroupRun, record_event
from harness.sweep.run import objective, run_in_sweep
from harness.sweep.state import SweepState

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
    halving: Halving | None = None  # successive halving inside each piece (None: off)
    # Where the pieces train instead of local workers: an object with `pool(pieces, threads, halving)` giving
    # harness.sweep.workers.Pool's events, and `describe(n)` (hydra_plugins/harness_batched/packed.py; None: here)
    cluster: object | None = None


class Hooks(Protocol):
    """What the launcher does around each job (Hydra's on_job_start / on_job_end callbacks)."""

    project_dir: str
    state: SweepState | None  # what the sweep callback decided before any job (None: no callback configured)

    def open_sweep(self) -> None:
        """The sweep's parent run, when the callback left opening it to the launcher: called before any job's run is
        created (idempotent); `state` holds it afterwards."""

    def announce(self, details: str) -> None:
        """The sweep's start line, with how its jobs will train (`details`); once, before any job trains."""

    def on_job_start(self, job: InProcessJob) -> None: ...

    def on_job_end(self, job: InProcessJob, value: object) -> None: ...

    def detach(self, line: str) -> None:
        """hydra.launcher.wait=false: the pieces were left on the cluster; `line` says so at the sweep's end, which
        leaves the parent run RUNNING."""


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
    values, skipped = _skip_done(jobs, hooks)
    jobs_to_run = [job for job in jobs if job.index not in values]
    if options.batch:
        singles, groups = pieces.partition(jobs_to_run, lambda job: context(job, hooks))
    else:
        singles, groups = [(job, None) for job in jobs_to_run], []
    target = 1 if options.cluster is not None else pieces.worker_target(groups, options)
    cut = pieces.cut(groups, options, target) if groups else []
    workers = min(target, len(cut))
    hooks.announce(_plan_text(options, groups, cut, singles, workers))
    progress.report_many(hooks.state, skipped)  # after the start line, which says how many
    if options.cluster is not None and cut:
        # The parent first: a launch refused there (pieces of a detached sweep still out) submits nothing, and
        # cluster pieces gain nothing from starting before it, they queue.
        hooks.open_sweep()
        pool = options.cluster.pool([list(p.specs) for p in cut], cut[0].plans[0].threads, options.halving)
        if options.cluster.wait:
            values.update(_train_in_workers(cut, singles, hooks, pool))
        else:
            values.update(_detach(cut, singles, hooks, pool))
    elif workers > 1:
        from harness.sweep import workers as forked

        specs = [list(p.specs) for p in cut]
        pool = forked.Pool(specs, workers, cut[0].plans[0].threads, range(len(cut)), options.halving)
        values.update(_train_in_workers(cut, singles, hooks, pool, options.halving))
    else:
        order = sorted(
            [(j.index, (j, p)) for j, p in singles] + [(p.jobs[0].index, p) for p in cut], key=itemgetter(0)
        )
        for _, item in order:
            if isinstance(item, pieces.Piece):
                values.update(_train_here(item, hooks, options.halving))
            else:
                values[item[0].index] = _run_single(*item, hooks)
    return [values[j.index] for j in jobs]


def _plan_text(options: BatchOptions, groups: list, cut: list, singles: list, workers: int) -> str:
    """How the jobs will train, for the sweep's start line: `8 batched groups in 12 pieces on 2 worker processes, 3
    jobs alone`."""
    if not groups and not singles:
        return "nothing left to run"
    parts = []
    if groups:
        where = f"on {workers} worker processes" if workers > 1 else "in this process"
        if options.cluster is not None:
            where = options.cluster.describe(len(cut))
        parts.append(f"{_count(len(groups), 'batched group')} in {_count(len(cut), 'piece')} {where}")
    if singles:
        alone = f"{_count(len(singles), 'job')} alone"
        parts.append(alone if options.batch else f"{alone} (hydra.launcher.batch=false)")
    return ", ".join(parts)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _skip_done(jobs: Sequence[InProcessJob], hooks: Hooks) -> tuple[dict[int, object], list[tuple]]:
    """The grid points already done (resume), skipped as run_in_sweep skips them: their values, and their progress
    entries (written in one go)."""
    completed = hooks.state.completed if hooks.state is not None else {}
    hashes = {job.index: config_hash(job.config) for job in jobs} if completed else {}
    done = [job for job in jobs if hashes.get(job.index) in completed]
    values = {}
    for job in done:
        hooks.on_job_start(job)
        values[job.index] = objective(completed[hashes[job.index]])
        hooks.on_job_end(job, values[job.index])
    return values, [(progress.SKIPPED, list(job.overrides), "") for job in done]


def context(job: InProcessJob, hooks: Hooks) -> JobContext:
    """The job's context as harness.train builds it from Hydra's runtime, plus the sweep's parent run."""
    parent = hooks.state.parent if hooks.state is not None else None
    return JobContext(
        project_dir=Path(hooks.project_dir), overrides=job.overrides, job_index=job.index, parent=parent
    )


def _run_single(job: InProcessJob, plan: Plan | None, hooks: Hooks) -> object:
    """A job that trains alone, through the single-run path (with the plan made when grouping, if any)."""
    hooks.open_sweep()
    hooks.on_job_start(job)
    try:
        value = run_in_sweep(job.config, context(job, hooks), hooks.state, plan)
    except Exception as exc:  # noqa: BLE001 - as Hydra's run_job: the failure becomes the job's return
        value = exc
    hooks.on_job_end(job, value)
    return value


def _group_run(piece: pieces.Piece, hooks: Hooks) -> GroupRun:
    return GroupRun(piece, hooks, lambda job: context(job, hooks))


def _train_here(piece: pieces.Piece, hooks: Hooks, halving: Halving | None = None) -> dict[int, object]:
    """Train a piece in this process."""
    run = _group_run(piece, hooks)
    failed = run.start()
    if failed is not None:
        return failed
    torch.set_num_threads(piece.plans[0].threads)
    try:
        results = engine.train_group(
            list(piece.specs), run.trackers, max_trials=len(piece.specs), halving=halving
        )
    except KeyboardInterrupt:
        run.kill("interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 - as Hydra's run_job: the failure becomes the job's return
        log.debug("batched group failed", exc_info=True)
        return run.fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return run.finish(results)


def _train_in_workers(
    cut: list[pieces.Piece], singles: list[tuple], hooks: Hooks, pool, halving: Halving | None = None
) -> dict:
    """Pieces in a pool's processes (forked workers, or cluster jobs), largest first; jobs that train alone run here
    meanwhile.

    The pool hands a worker its next piece as soon as it reports the last one done (harness.sweep.workers); this
    process creates a piece's runs when it hears the piece was handed out, and records and ends them as its columns
    and results arrive, behind the workers.
    """
    from harness.sweep import workers

    values: dict[int, object] = {}
    running: dict[int, GroupRun] = {}
    remaining = set(range(len(cut)))
    singles = list(singles)
    with pool:
        try:
            while remaining:
                events = pool.events(timeout=0 if singles else None)
                for event in events:
                    if not isinstance(event, (workers.Assigned, workers.Columns)):
                        remaining.discard(event.piece)
                    values.update(_follow(event, cut, running, hooks))
                if not pool.alive():  # every worker died: what none was handed trains here
                    for index in pool.take_pending():
                        values.update(_train_here(cut[index], hooks, halving))
                        remaining.discard(index)
                if not events and singles:
                    job, plan = singles.pop(0)
                    values[job.index] = _run_single(job, plan, hooks)
        except KeyboardInterrupt:
            for run in running.values():
                run.kill("interrupted (KeyboardInterrupt)")
            raise
    for job, plan in singles:
        values[job.index] = _run_single(job, plan, hooks)
    return values


def _follow(event, cut: list[pieces.Piece], running: dict[int, GroupRun], hooks: Hooks) -> dict[int, object]:
    """A pool's event: a piece handed out gets its runs (into `running`), the others are recorded in them. Returns
    the values of the jobs it ended (a piece whose runs could not be created: all of its jobs, failed)."""
    from harness.sweep import workers

    if not isinstance(event, workers.Assigned):
        return record_event(event, running)
    run = _group_run(cut[event.piece], hooks)
    failed = run.start()
    if failed is not None:
        return failed
    running[event.piece] = run
    return {}


def _detach(cut: list[pieces.Piece], singles: list[tuple], hooks: Hooks, pool) -> dict:
    """hydra.launcher.wait=false: the pieces' runs created as they are submitted, jobs that cannot batch trained
    here, then the pool left to whoever collects it (harness.sweep.detached). A detached job's value is not known
    yet: None."""
    from harness.sweep import detached

    values: dict[int, object] = {}
    running: dict[int, GroupRun] = {}
    with pool:  # an interrupt before the pool is left cancels its jobs (their runs end KILLED)
        try:
            for event in pool.events(timeout=0):
                values.update(_follow(event, cut, running, hooks))
            for job, plan in singles:
                values[job.index] = _run_single(job, plan, hooks)
            if running:
                detached.leave(hooks, pool, running)
        except KeyboardInterrupt:
            for run in running.values():
                run.kill("interrupted (KeyboardInterrupt)")
            raise
    for run in running.values():
        values.update({job.index: None for job in run.jobs})
    return values


__all__ = ["InProcessJob", "is_harness_task", "run_jobs"]
