"""A job inside a sweep: skip it if its grid point is done, and never let its failure stop the sweep."""

import dataclasses
import logging
import math

from harness import failures
from harness.config import Config, config_hash
from harness.errors import ConfigError
from harness.job import JobContext, record_refused_job, run_job
from harness.sweep import progress
from harness.sweep.state import SweepState

log = logging.getLogger(__name__)


def with_sweep_ids(cfg: Config, state: SweepState) -> Config:
    """Point the job at the sweep's store, experiment and parent run (created before any job started)."""
    if state.parent_run_id is None:
        return cfg
    tracking = dataclasses.replace(cfg.tracking, uri=state.uri)
    sweep = dataclasses.replace(
        cfg.sweep, experiment_id=state.experiment_id, parent_run_id=state.parent_run_id
    )
    return dataclasses.replace(cfg, tracking=tracking, sweep=sweep)


def run_in_sweep(cfg: Config, ctx: JobContext, state: SweepState) -> float | None:
    """Run one grid point; returns the final validation loss (the objective for HPO sweepers) or None."""
    cfg = with_sweep_ids(cfg, state)
    overrides = list(ctx.overrides)
    key = config_hash(cfg)
    if key in state.completed:
        progress.report(state, "skipped", overrides)
        return objective(state.completed[key])
    value, status, error = None, "failed", ""
    try:
        result = run_job(cfg, ctx)
        value, status = result.final_val.get("loss"), result.status
    except ConfigError as exc:
        error = str(exc)
        log.error("job refused: %s", error)
        if cfg.tracking.enabled:
            try:
                record_refused_job(cfg, ctx, error)
            except Exception as record_error:  # noqa: BLE001 - e.g. the tracking server is gone: still no crash
                log.error("could not record the refused job in MLflow: %s", record_error)
    except Exception as exc:  # noqa: BLE001 - a failing job is recorded (run FAILED) and the sweep goes on
        if failures.stops_sweep(exc):
            raise  # the store or the disk failed: every later job would fail the same way (harness.failures)
        error = f"{type(exc).__name__}: {exc}"
        log.error("job failed: %s", error, exc_info=True)
    progress.report(state, status, overrides, error)
    return objective(value)


def objective(loss: float | None) -> float | None:
    """What an HPO sweeper minimises: the loss, or None (a failed trial) when it is missing or not finite.

    None, never NaN: hydra-optuna-sweeper 1.3 records None as a failed trial but crashes on NaN (optuna 2.10).
    """
    return loss if loss is not None and math.isfinite(loss) else None
