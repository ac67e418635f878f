"""A job inside a sweep: skip it if its grid point is done, and never let its failure stop the sweep.

What the job logs stays off the terminal (harness.sweep.output.quiet_console; in its Hydra job log file still) unless
`hydra.callbacks.sweep.job_lines=true` or in debug mode: the sweep says each failure in one line of its own (harness.sweep.progress).
Callable without Hydra (an in-process launcher): `run_in_sweep(cfg, JobContext(...), state)`.
"""

import dataclasses
import logging
import math

from harness import failures
from harness.config import Config, config_hash
from harness.context import JobContext
from harness.errors import ConfigError
from harness.job import run_job
from harness.job_run import record_refused_job
from harness.plan import Plan
from harness.sweep import output, progress
from harness.sweep.state import SweepState
from harness.tracking import schema

log = logging.getLogger(__name__)


def run_in_sweep(
    cfg: Config, ctx: JobContext, state: SweepState | None, plan: Plan | None = None
) -> float | None:
    """Run one grid point; returns the final validation loss (the objective for HPO sweepers) or None.

    `state` None (no sweep callback configured): the job runs and records as a single run would, nothing skipped.
    `plan`: the job's plan when the caller made it already (the batched launcher, grouping), not made again.
    """
    if state is not None and state.parent is not None:
        ctx = dataclasses.replace(ctx, parent=state.parent)
    overrides = list(ctx.overrides)
    if state is not None and state.completed:
        key = plan.config_hash if plan is not None else config_hash(cfg)
        if key in state.completed:
            progress.report(state, progress.SKIPPED, overrides)
            return objective(state.completed[key])
    with output.quiet_console(quiet_jobs(state)):
        value, status, error = _run(cfg, ctx, plan)
    if state is not None:
        progress.report(state, status, overrides, error)
    return objective(value)


def quiet_jobs(state: SweepState | None) -> bool:
    """Whether a job's own lines stay off the terminal: in a sweep, unless job_lines or debug mode (HARNESS_DEBUG=1,
    HYDRA_FULL_ERROR=1: a failed job's traceback is what it is for)."""
    return state is not None and not state.job_lines and not failures.debug()


def _run(cfg: Config, ctx: JobContext, plan: Plan | None) -> tuple[float | None, str, str]:
    """(final val loss, outcome, error): failures are recorded, never raised."""
    try:
        result = run_job(cfg, ctx, plan)
    except ConfigError as exc:
        log.error("job refused: %s", exc)
        if cfg.tracking.enabled:
            try:
                record_refused_job(cfg, ctx, str(exc))
            except Exception as record_error:  # noqa: BLE001 - e.g. the tracking server is gone: still no crash
                log.error("could not record the refused job in MLflow: %s", record_error)
        return None, schema.FAILED_OUTCOME, str(exc)
    except Exception as exc:  # noqa: BLE001 - a failing job is recorded (run FAILED) and the sweep goes on
        if failures.stops_sweep(exc):
            raise  # the store or the disk failed: every later job would fail the same way (harness.failures)
        log.error("job failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        return None, schema.FAILED_OUTCOME, f"{type(exc).__name__}: {exc}"
    return result.final_val.get("loss"), result.status, ""


def objective(loss: "float | schema.Pruned | None") -> "float | schema.Pruned | None":
    """What an HPO sweeper minimises: the loss, or None (a failed trial) when it is missing or not finite; a pruned
    trial's schema.Pruned as it is (the race reads where it stopped).

    None, never NaN: hydra-optuna-sweeper 1.3 records None as a failed trial but crashes on NaN (optuna 2.10).
    """
    if isinstance(loss, schema.Pruned):
        return loss
    return loss if loss is not None and math.isfinite(loss) else None
