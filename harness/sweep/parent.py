"""The sweep's parent run: created (or continued, to resume) before any job, ended with the outcome counts and the
sweep's answer (harness.sweep.answer: the headline numbers, by the report's definition, and the description).

Every operation goes through the tracking port (harness.tracking.port), so the same code serves a SQLite file (SQL,
no MLflow import: a batched sweep's launcher never pays for it) and a server. A parent run has one way to end,
`end_parent`: the end of a sweep, a signal (harness.shutdown) and an HPO study's failure budget (harness.sweep.hpo)
all call it.
"""

import dataclasses
import json
from pathlib import Path

from omegaconf import DictConfig

from harness.context import ParentRun
from harness.job_run import git_commit, user
from harness.sweep import answer, grid, output, progress
from harness.sweep.state import SweepState
from harness.tracking import locks, port, queries, record, schema, store, stores
from harness.tracking.port import Columns, NewRun, RunUpdate, Store


def open_parent(config: DictConfig, base: SweepState, rerun_all: bool) -> tuple[SweepState, bool]:
    """Continue the latest parent run of the same sweep (unless `rerun_all`), or create one; returns the state
    with the parent and, when continuing, the grid points already done, and whether it continues one."""
    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    found_store = stores.open_store(uri)
    experiment = grid.experiment_name(config)
    experiment_id = found_store.ensure_experiment(experiment)
    key = grid.sweep_key(config, experiment)
    # A second launch of a running sweep refuses here (harness.tracking.locks).
    locks.claim_sweep(uri, key, Path.cwd())
    found = found_store.find_parent(experiment_id, key)
    left = found.data.tags.get(schema.DETACHED) if found is not None else None
    if left:
        _collect(found_store, ParentRun(uri, experiment_id, found.info.run_id), left, rerun_all)
    if rerun_all:
        found = None
    completed: dict[str, float | schema.Pruned | None] = {}
    if found is not None:
        run_id = found.info.run_id
        completed = _resume(found_store, experiment_id, run_id, experiment, progress.sweep_dir(base))
    else:
        [info] = found_store.create_runs(experiment_id, [_parent_record(config, key, base.total_jobs)])
        run_id = info.run_id
    parent = ParentRun(uri=uri, experiment_id=experiment_id, run_id=run_id)
    return dataclasses.replace(base, parent=parent, completed=completed), found is not None


def _collect(found_store: Store, parent: ParentRun, left: str, rerun_all: bool) -> None:
    """The parent's pieces were left on the cluster (hydra.launcher.wait=false; `left`: its harness.detached tag):
    record what they trained first.
    Pieces still out stop the launch (StillOut); with rerun=all that is a refusal, since the fresh parent would leave
    them training into runs nobody records; all in, rerun=all ends the old parent with what they trained."""
    from harness.errors import ConfigError
    from harness.sweep import detached

    try:
        detached.collect(found_store, parent, left, str(Path.cwd()))
    except detached.StillOut:
        if not rerun_all:
            raise
        raise ConfigError(
            "hydra.callbacks.sweep.rerun",
            "all",
            f"once the pieces parent run {parent.run_id} left on the cluster are in (the same command without it "
            "records them; scancel cancels them)",
        ) from None
    if rerun_all:
        end_parent(found_store, parent)


_STALE_TAGS = {
    schema.STATUS: schema.KILLED_OUTCOME,
    schema.ERROR: "stale: its sweep stopped before the run ended",
}


def _resume(
    found_store: Store, experiment_id: str, run_id: str, experiment: str, sweep_dir: Path | None = None
) -> dict[str, float | schema.Pruned | None]:
    """Children still RUNNING when a sweep resumes were left by a killed sweep (this process holds the sweep's
    lock): they end KILLED, said in a line; the parent runs again. Returns the grid points already done (config hash
    -> final val loss, or where a pruned one stopped)."""
    runs = found_store.children(experiment_id, run_id)
    stale = [r.info.run_id for r in runs if r.info.status == schema.RUNNING]
    now = port.now_ms()
    kills = [RunUpdate(r, tags=_STALE_TAGS, status=schema.KILLED, end_time=now) for r in stale]
    found_store.write([*kills, RunUpdate(run_id, status=schema.RUNNING)])
    if stale:
        output.logger(__name__, sweep_dir).warning(
            f"[sweep] {len(stale)} run(s) in experiment {experiment!r} left RUNNING by a launch of this sweep that "
            "was killed: marked KILLED"
        )
    outcomes = [queries.child_outcome(r) for r in queries.latest_per_grid_point(runs).values()]
    return {
        o.config_hash: o.pruned or o.final_val_loss for o in outcomes if o.outcome in schema.DONE_OUTCOMES
    }


def _parent_record(config: DictConfig, key: str, total: int | None) -> NewRun:
    """The parent run as it is created: name, tags, params (what varied over which values), the grid artifact."""
    name = grid.sweep_name(config, total)
    tags = {
        **record.source_tags(user(), git_commit(str(Path.cwd()))),
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
    return NewRun(name, tags, params, texts)


def end_parent(
    found_store: Store,
    parent: ParentRun,
    status: str = schema.FINISHED,
    reason: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, int]:
    """End the parent run: children still RUNNING end KILLED (with `reason`), the outcome counts of the latest run
    per grid point and the sweep's answer (headline numbers and tags, the description) go on the parent, which ends
    with `status`. The one way a parent ends. Returns the counts."""
    return _end(found_store, parent, status, reason, extra_tags).headline.counts


def _end(
    found_store: Store,
    parent: ParentRun,
    status: str,
    reason: str | None,
    extra_tags: dict[str, str] | None,
) -> answer.Answer:
    children = found_store.children(parent.experiment_id, parent.run_id)
    running = [r.info.run_id for r in children if r.info.status == schema.RUNNING]
    if running:
        left = {
            schema.STATUS: schema.KILLED_OUTCOME,
            schema.ERROR: reason or "still running when its sweep ended",
        }
        now = port.now_ms()
        found_store.write([RunUpdate(r, tags=left, status=schema.KILLED, end_time=now) for r in running])
        children = found_store.children(parent.experiment_id, parent.run_id)
    latest = list(queries.latest_per_grid_point(children).values())
    counts = schema.count_outcomes(queries.child_outcome(r).outcome for r in latest)
    said = answer.answer(latest, counts, status)
    metrics, tags = record.headline_record(said.headline)
    tags = {**{schema.job_count_tag(k): str(counts[k]) for k in (*schema.OUTCOMES, "total")}, **tags}
    tags[schema.NOTE_CONTENT] = said.note
    tags |= extra_tags or {}
    if reason:
        tags[schema.ERROR] = reason
    now = port.now_ms()
    end = RunUpdate(parent.run_id, [Columns.at(0, metrics, now)], tags, status, now)
    try:
        found_store.write([end])
    except Exception:  # noqa: BLE001 - re-raised below unless the parent could end without its headline
        # A full disk refuses the headline's rows whole; the bare end is a few pages and may still fit. Either way
        # the same sweep command resumes this parent and writes its headline at its own end.
        found_store.write([RunUpdate(parent.run_id, status=status, end_time=now)])
    return said


def close_parent(parent: ParentRun) -> answer.Answer:
    """End the parent run after the sweep; returns what it recorded (the counts and the answer)."""
    return _end(stores.open_store(parent.uri), parent, schema.FINISHED, None, None)
