"""The sweep's parent run in MLflow: created (or continued, to resume) before any job, ended with the outcome counts.

Reads the store through harness.tracking.queries, as the report does; writes with harness.tracking.schema's names.
On a SQLite store that harness.tracking.group can write, the parent run is created or continued (`_open_direct`) and
ended (`_finish_direct`) with sqlite3 alone, the same rows: a batched sweep's launcher then never imports MLflow (2 s
of CPU while its workers train).
"""

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from harness.context import ParentRun
from harness.sweep import grid
from harness.sweep.state import SweepState
from harness.tracking import locks, queries, record, schema, store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


def open_parent(config: DictConfig, base: SweepState, rerun_all: bool) -> SweepState:
    """Continue the latest parent run of the same sweep (unless `rerun_all`), or create one; returns the state
    with the parent and, when continuing, the grid points already done. With sqlite3 alone where
    harness.tracking.group can write the store (`_open_direct`), else through MLflow."""
    direct = _open_direct(config, base, rerun_all)
    if direct is not None:
        return direct
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
    client: "MlflowClient", experiment_id: str, run_id: str, experiment: str
) -> dict[str, float | None]:
    from mlflow.entities import RunStatus

    runs = queries.children(client, experiment_id, run_id)
    stale = mark_stale_runs_killed(client, runs)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    return _completed(runs, run_id, experiment, stale)


def _completed(runs: list, run_id: str, experiment: str, stale: int) -> dict[str, float | None]:
    """The grid points already done (config hash -> final val loss) of a continued parent run; says so in a line."""
    outcomes = [queries.child_outcome(r) for r in queries.latest_per_grid_point(runs).values()]
    completed = {o.config_hash: o.final_val_loss for o in outcomes if o.outcome in schema.DONE_OUTCOMES}
    print(
        f"[sweep] continuing parent run {run_id} in experiment {experiment!r}: "
        f"{len(completed)} grid points already done, {stale} stale run(s) marked KILLED",
        file=sys.stderr,
    )
    return completed


def _create(
    client: "MlflowClient", experiment_id: str, config: DictConfig, key: str, total: int | None
) -> str:
    from mlflow.entities import Param

    name, tags, params, texts = _parent_record(config, key, total)
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    # What varied over which values, in one request: the parent's row in the runs table is not blank.
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    for artifact_file, text in texts.items():
        client.log_text(run_id, text, artifact_file)
    return run_id


def _parent_record(config: DictConfig, key: str, total: int | None) -> tuple[str, dict, dict, dict]:
    """The parent run's name, tags, params and artifacts (file -> text)."""
    name = grid.sweep_name(config, total)
    tags = {
        schema.ROLE: schema.ROLE_SWEEP,
        schema.RUN_NAME: name,
        schema.SWEEP_KEY: key,
        schema.SWEEP_OVERRIDES: record.redact(" ".join(grid.sweep_arguments(config))),
        schema.GRID_SIZE: str(total) if total is not None else "unknown",
        schema.LAUNCHER: str(config.hydra.launcher.get("_target_", "")),
    }
    params = grid.parent_params(config, total)
    jobs = grid.expand_grid(config)
    texts = {}
    if jobs is not None:
        redacted = [[record.redact(override) for override in job] for job in jobs]
        texts[schema.GRID_ARTIFACT] = json.dumps(redacted, indent=1)
    return name, tags, params, texts


def _open_direct(config: DictConfig, base: SweepState, rerun_all: bool) -> SweepState | None:
    """`open_parent` with sqlite3 (the same rows); None where harness.tracking.group cannot write the store (a
    server, no file yet, another schema, a deleted experiment): then MLflow does it."""
    from harness.report.source import SqliteSource  # the report's SQL reader of a sweep's runs
    from harness.tracking import group

    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    db = store.sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    # Empty, not SQLite, half-migrated: the one-line StoreError MLflow's path gives.
    store.check_sqlite_file(db)
    connection = group.connect(uri)
    if connection is None:
        return None
    experiment = grid.experiment_name(config)
    experiment_id = group.ensure_experiment(
        connection, experiment, store.experiment_location(uri, experiment)
    )
    if experiment_id is None:
        connection.close()
        return None
    store.last_location = str(db.resolve())
    key = grid.sweep_key(config, experiment)
    locks.claim_sweep(uri, key, Path.cwd())  # a second launch of a running sweep refuses here
    found = None if rerun_all else _latest_parent(connection, experiment_id, key)
    completed: dict[str, float | None] = {}
    if found is not None:
        runs = SqliteSource(uri, db).children(experiment_id, found)
        stale = [r.info.run_id for r in runs if r.info.status == schema.RUNNING]
        now = int(time.time() * 1000)
        with group.transaction(connection) as writer:  # as mark_stale_runs_killed, then update_run(RUNNING)
            group.set_tags(writer, [(k, v, run_id) for run_id in stale for k, v in _STALE_TAGS.items()])
            group.set_status(writer, [(schema.KILLED, now, run_id) for run_id in stale])
            group.set_status(writer, [(schema.RUNNING, None, found)])
        completed = _completed(runs, found, experiment, len(stale))  # stale runs were not done either way
        run_id = found
    else:
        name, tags, params, texts = _parent_record(config, key, base.total_jobs)
        [tracker] = group.RunGroup(connection, experiment_id).create(
            [group.NewRun(name, tags, params, texts)]
        )
        run_id = tracker.run_id
        print(
            f"[sweep] parent run {run_id} in experiment {experiment!r} ({record.redact(uri)})",
            file=sys.stderr,
        )
    connection.close()
    parent = ParentRun(uri=uri, experiment_id=experiment_id, run_id=run_id)
    return SweepState(base.total_jobs, base.started_at, base.progress_file, parent, completed)


def _latest_parent(connection, experiment_id: str, key: str) -> str | None:
    """queries.find_parent in SQL: the latest started active parent run with this sweep key."""
    found = connection.execute(
        "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid JOIN tags k ON k.run_uuid = r.run_uuid "
        "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? AND k.key = ? "
        "AND k.value = ? ORDER BY r.start_time DESC, r.run_uuid LIMIT 1",
        (int(experiment_id), schema.ROLE, schema.ROLE_SWEEP, schema.SWEEP_KEY, key),
    ).fetchone()
    return found[0] if found else None


_STALE_TAGS = {
    schema.STATUS: schema.KILLED_OUTCOME,
    schema.ERROR: "stale: its sweep stopped before the run ended",
}


def mark_stale_runs_killed(client: "MlflowClient", runs: "list[Run]") -> int:
    """Children still RUNNING when a sweep starts were left by a killed sweep: end them KILLED."""
    from mlflow.entities import RunTag

    stale = [r for r in runs if r.info.status == schema.RUNNING]
    for run in stale:
        tags = [RunTag(k, v) for k, v in _STALE_TAGS.items()]
        client.log_batch(run.info.run_id, tags=tags)
        client.set_terminated(run.info.run_id, schema.KILLED)
    return len(stale)


def finish(client: "MlflowClient", experiment_id: str, parent_run_id: str) -> dict[str, int]:
    """Count the outcomes (latest run per grid point), tag the parent with them and its headline, end it FINISHED."""
    from mlflow.entities import RunTag

    latest = queries.latest_per_grid_point(queries.children(client, experiment_id, parent_run_id))
    counts, headline = _outcome(latest)
    tags = [RunTag(schema.job_count_tag(k), str(counts[k])) for k in (*schema.OUTCOMES, "total")]
    client.log_batch(parent_run_id, tags=tags)
    record.log_sweep_headline(client, parent_run_id, headline)
    client.set_terminated(parent_run_id, schema.FINISHED, end_time=int(time.time() * 1000))
    return counts


def _outcome(latest: "dict[str, Run]") -> tuple[dict[str, int], record.SweepHeadline]:
    """The outcome counts of the latest run per grid point, and the headline they make."""
    outcomes = [queries.child_outcome(r) for r in latest.values()]
    counts = schema.count_outcomes(o.outcome for o in outcomes)
    return counts, _headline(counts, outcomes, latest)


def _headline(
    counts: dict[str, int], outcomes: list[schema.ChildOutcome], runs: "dict[str, Run]"
) -> record.SweepHeadline:
    best = record.best_of((o.run_id, o.final_val_loss) for o in outcomes if o.outcome == schema.COMPLETED)
    by_id = {r.info.run_id: r for r in runs.values()}
    return record.SweepHeadline(
        counts=counts,
        best_val_loss=best[1] if best else None,
        best_optimizer=by_id[best[0]].data.tags.get(schema.OPTIMIZER) if best else None,
        best_run_id=best[0] if best else None,
    )


def _finish_direct(parent: ParentRun) -> dict[str, int] | None:
    """`finish` with sqlite3 (the same rows: tags replaced, metrics as log_batch stores them, the run ended); None
    where harness.tracking.group cannot write the store."""
    from harness.report.source import SqliteSource  # the report's SQL reader of a sweep's children
    from harness.tracking import group, sinks

    connection = group.connect(parent.uri)
    if connection is None:
        return None
    db = store.sqlite_path(parent.uri)
    try:
        children = SqliteSource(parent.uri, db).children(parent.experiment_id, parent.run_id)
        latest = queries.latest_per_grid_point(children)
        counts, headline = _outcome(latest)
        metrics, tags = record.headline_record(headline)
        tags = {**{schema.job_count_tag(k): str(counts[k]) for k in (*schema.OUTCOMES, "total")}, **tags}
        now = int(time.time() * 1000)
        sinks.SqliteColumnSink(str(db)).write(
            parent.run_id, [sinks.Columns([0], {k: [v] for k, v in metrics.items()}, [now])]
        )
        with group.transaction(connection) as writer:
            group.set_tags(writer, [(k, v[: group.MAX_TAG_LENGTH], parent.run_id) for k, v in tags.items()])
            group.set_status(writer, [(schema.FINISHED, int(time.time() * 1000), parent.run_id)])
    finally:
        connection.close()
    return counts


def close_parent(parent: ParentRun) -> str:
    """End the parent run after the sweep; one line with the counts."""
    counts = _finish_direct(parent)
    if counts is None:
        counts = finish(store.client(parent.uri), parent.experiment_id, parent.run_id)
    summary = ", ".join(f"{counts[o]} {o}" for o in schema.OUTCOMES if counts[o])
    return f"[sweep] parent run {parent.run_id}: {counts['total']} grid points: {summary or 'none'}"
