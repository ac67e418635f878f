"""The sweep's parent run in MLflow: created (or continued, to resume) before any job, ended with the outcome counts.

Reads the store through harness.tracking.queries, as the report does; writes with harness.tracking.schema's names.
"""

import json
import sys
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, Run, RunStatus, RunTag
from omegaconf import DictConfig

from harness.context import ParentRun
from harness.sweep import grid
from harness.sweep.state import SweepState
from harness.tracking import locks, queries, record, schema, store


def open_parent(config: DictConfig, base: SweepState, rerun_all: bool) -> SweepState:
    """Continue the latest parent run of the same sweep (unless `rerun_all`), or create one; returns the state
    with the parent and, when continuing, the grid points already done."""
    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    client = store.client(uri)
    experiment = grid.experiment_name(config)
    experiment_id = store.ensure_experiment(client, experiment)
    key = grid.sweep_key(config, experiment)
    # A second launch of a running sweep refuses here (harness.tracking.locks).
    locks.claim_sweep(uri, key, Path.cwd())
    found = None if rerun_all else queries.find_parent(client, experiment_id, key)
    completed: dict[str, float | None] = {}
    if found is not None:
        run_id = found.info.run_id
        completed = _resume(client, experiment_id, run_id, experiment)
    else:
        run_id = _create(client, experiment_id, config, key, base.total_jobs)
        print(
            f"[sweep] parent run {run_id} in experiment {experiment!r} ({record.redact(uri)})",
            file=sys.stderr,
        )
    parent = ParentRun(uri=uri, experiment_id=experiment_id, run_id=run_id)
    return SweepState(base.total_jobs, base.started_at, base.progress_file, parent, completed)


def _resume(
    client: MlflowClient, experiment_id: str, run_id: str, experiment: str
) -> dict[str, float | None]:
    runs = queries.children(client, experiment_id, run_id)
    stale = mark_stale_runs_killed(client, runs)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    outcomes = [queries.child_outcome(r) for r in queries.latest_per_grid_point(runs).values()]
    completed = {o.config_hash: o.final_val_loss for o in outcomes if o.outcome in schema.DONE_OUTCOMES}
    print(
        f"[sweep] continuing parent run {run_id} in experiment {experiment!r}: "
        f"{len(completed)} grid points already done, {stale} stale run(s) marked KILLED",
        file=sys.stderr,
    )
    return completed


def _create(client: MlflowClient, experiment_id: str, config: DictConfig, key: str, total: int | None) -> str:
    name = grid.sweep_name(config, total)
    tags = {
        schema.ROLE: schema.ROLE_SWEEP,
        schema.RUN_NAME: name,
        schema.SWEEP_KEY: key,
        schema.SWEEP_OVERRIDES: record.redact(" ".join(grid.sweep_arguments(config))),
        schema.GRID_SIZE: str(total) if total is not None else "unknown",
        schema.LAUNCHER: str(config.hydra.launcher.get("_target_", "")),
    }
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    # What varied over which values, in one request: the parent's row in the runs table is not blank.
    params = grid.parent_params(config, total)
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    jobs = grid.expand_grid(config)
    if jobs is not None:
        redacted = [[record.redact(override) for override in job] for job in jobs]
        client.log_text(run_id, json.dumps(redacted, indent=1), schema.GRID_ARTIFACT)
    return run_id


def mark_stale_runs_killed(client: MlflowClient, runs: list[Run]) -> int:
    """Children still RUNNING when a sweep starts were left by a killed sweep: end them KILLED."""
    stale = [r for r in runs if r.info.status == schema.RUNNING]
    for run in stale:
        tags = [
            RunTag(schema.STATUS, schema.KILLED_OUTCOME),
            RunTag(schema.ERROR, "stale: its sweep stopped before the run ended"),
        ]
        client.log_batch(run.info.run_id, tags=tags)
        client.set_terminated(run.info.run_id, schema.KILLED)
    return len(stale)


def finish(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, int]:
    """Count the outcomes (latest run per grid point), tag the parent with them and its headline, end it FINISHED."""
    latest = queries.latest_per_grid_point(queries.children(client, experiment_id, parent_run_id))
    outcomes = [queries.child_outcome(r) for r in latest.values()]
    counts = schema.count_outcomes(o.outcome for o in outcomes)
    tags = [RunTag(schema.job_count_tag(k), str(counts[k])) for k in (*schema.OUTCOMES, "total")]
    client.log_batch(parent_run_id, tags=tags)
    log_headline(client, parent_run_id, counts, outcomes, latest)
    client.set_terminated(parent_run_id, schema.FINISHED, end_time=int(time.time() * 1000))
    return counts


def log_headline(
    client: MlflowClient,
    parent_run_id: str,
    counts: dict[str, int],
    outcomes: list[schema.ChildOutcome],
    runs: dict[str, Run],
) -> None:
    """The counts (metrics jobs/*) and the best completed run (best/val_loss, its id and optimizer as tags) on the
    parent: the runs table shows a sweep's result without opening it."""
    best = record.best_of((o.run_id, o.final_val_loss) for o in outcomes if o.outcome == schema.COMPLETED)
    by_id = {r.info.run_id: r for r in runs.values()}
    headline = record.SweepHeadline(
        counts=counts,
        best_val_loss=best[1] if best else None,
        best_optimizer=by_id[best[0]].data.tags.get(schema.OPTIMIZER) if best else None,
        best_run_id=best[0] if best else None,
    )
    record.log_sweep_headline(client, parent_run_id, headline)


def close_parent(parent: ParentRun) -> str:
    """End the parent run after the sweep; one line with the counts."""
    counts = finish(store.client(parent.uri), parent.experiment_id, parent.run_id)
    summary = ", ".join(f"{counts[o]} {o}" for o in schema.OUTCOMES if counts[o])
    return f"[sweep] parent run {parent.run_id}: {counts['total']} grid points: {summary or 'none'}"
