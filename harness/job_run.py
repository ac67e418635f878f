"""The MLflow run of one job: its name, tags, params and config artifact, and how it ends.

Written from the Plan (what the job resolved), with the names of harness.tracking.schema, through the tracking port
(harness.tracking.port): nothing is opened when `tracking.enabled=false`.
"""

import dataclasses
import functools
import getpass
import json
import logging
import subprocess
from pathlib import Path

import torch
import yaml

from harness import signals
from harness.config import Config, TrackingConfig, config_hash, effective_lr
from harness.context import JobContext
from harness.devices import device_description
from harness.plan import Plan, run_name
from harness.tracking import FAILED, FINISHED, NullTracker, Tracker, owners, record, schema, store, stores
from harness.tracking.port import NewRun, Store
from harness.tracking.run_tracker import RunTracker
from harness.trial import RunResult

log = logging.getLogger(__name__)


def new_run(plan: Plan, ctx: JobContext, extra_tags: dict[str, str] | None = None) -> NewRun:
    """The job's run as it is created: name, tags, params, config.yaml and dataset input. The one assembly of a
    job's record: the single path and batched groups (harness.sweep.pieces) both create runs from it.

    `extra_tags` add to or replace the run's tags (batched trials: `harness.engine`, `harness.batch_trials`).
    """
    tags = run_tags(
        plan.optimizer_name,
        ctx,
        plan.task.name,
        plan.config_hash,
        str(plan.device),
        device_description(plan.device),
    ) | (extra_tags or {})
    dataset = record.dataset_record(plan.task, plan.splits)
    return NewRun(
        plan.run_name,
        tags,
        record.job_params(plan.config, resolved_params(plan)),
        {schema.CONFIG_ARTIFACT: config_text(record.redact_config(plan.config))},
        [record.training_input(dataset)] if dataset is not None else [],
    )


def open_run(plan: Plan, ctx: JobContext, extra_tags: dict[str, str] | None = None) -> Tracker:
    """Create the job's run (a child run inside a sweep); a NullTracker when tracking is disabled."""
    if not plan.tracking.enabled:
        return NullTracker()
    return _start(new_run(plan, ctx, extra_tags), plan.tracking, plan.task.name, ctx)


def resolved_params(plan: Plan) -> dict[str, float | int | str | None]:
    """The params beyond the flattened config: what the job resolved."""
    return {
        schema.RESOLVED_LR: plan.lr,
        schema.RESOLVED_TOTAL_STEPS: plan.total_steps,
        schema.RESOLVED_BATCH_SIZE: plan.batch_size,
        schema.RESOLVED_STEPS_PER_EPOCH: plan.steps_per_epoch,
        schema.RESOLVED_TARGET: target_text(plan),
    }


_TARGETS: dict[tuple, str | None] = {}


def target_text(plan: Plan) -> str | None:
    """The task's target as its runs record it ("val/accuracy >= 0.95"; None: the task has none), so that the report
    can state it. Once per task and data in a process: jobs share the data, and a regression's target solves a least
    squares problem."""
    key = (
        type(plan.task).__qualname__,
        json.dumps(vars(plan.task), sort_keys=True, default=str),
        id(plan.splits),
    )
    if key not in _TARGETS:
        target = plan.task.target(plan.splits)
        relation = ">=" if target is not None and target.higher_is_better else "<="
        _TARGETS[key] = None if target is None else f"{target.metric} {relation} {target.value:.6g}"
    return _TARGETS[key]


def config_text(config: dict) -> str:
    """The config.yaml artifact. PyYAML's safe dumper, not OmegaConf.to_yaml: the same text for a plain dict, and
    cheaper; its libyaml emitter (CSafeDumper, where PyYAML was built with it) writes the same text, faster
    (BENCHMARKS.md)."""
    return yaml.dump(config, Dumper=_YAML_DUMPER, sort_keys=False)


_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def record_refused_job(cfg: Config, ctx: JobContext, message: str) -> None:
    """Inside a sweep, a config the job refused (a device that is not there...) still shows as a FAILED run."""
    tags = run_tags(cfg.optimizer.name, ctx, cfg.task.name, config_hash(cfg), cfg.device, "")
    config = dataclasses.asdict(cfg)
    params = record.job_params(config, {schema.RESOLVED_LR: effective_lr(cfg)})
    texts = {schema.CONFIG_ARTIFACT: config_text(record.redact_config(config))}
    run = NewRun(run_name(cfg, cfg.task.name, cfg.data.batch_size), tags, params, texts)
    end_run(_start(run, cfg.tracking, cfg.task.name, ctx), FAILED, message)


def record_result(tracker: Tracker, result: RunResult, name: str) -> None:
    """Final metrics and status tags, then end the run FINISHED (diverged and pruned runs too: they are outcomes,
    renamed `[diverged] <name>`, `[pruned] <name>`; see harness.tracking.record)."""
    tracker.log_metrics(result.final_metrics(), step=result.steps)
    tracker.set_tags(record.outcome_tags(result.status, result.divergence, name, result.rung, result.steps))
    tracker.close(FINISHED)
    owners.ended(tracker.run_id, FINISHED)


def summary_line(result: RunResult, tracker: Tracker, ctx: JobContext) -> str:
    """What the run did, in one line: status, steps, final losses, wall time, and where to see the run."""

    where = None
    if tracker.run_id is not None:
        where = record.where_to_see(tracker.store.uri, tracker.experiment_id, tracker.run_id, ctx.project_dir)
    return record.summary_line(
        result.status,
        result.steps,
        result.wall_s,
        result.final_train_loss,
        result.final_val,
        tracker.run_id,
        where,
    )


def end_run(tracker: Tracker, status: str, message: str, details: str | None = None) -> None:
    """End a run that did not finish: FAILED or KILLED, with the error as a tag (and the traceback as a file).

    Called while the failure that stopped the run propagates, which may be the store or the disk itself (full,
    gone): the end depends on no write before it, and raises nothing of its own. A run the store could not end stays
    this process's (harness.tracking.owners): the failure's line says so, and once this process is gone the next job
    into the store ends it KILLED. The error and its traceback are redacted: a tracking server's error quotes the
    request's URL, credentials included.
    """
    tags = {schema.STATUS: status.lower(), schema.ERROR: record.redact(message)}
    _try(tracker, lambda: tracker.set_tags(tags), "its error")
    if details:
        _try(
            tracker, lambda: tracker.log_text(record.redact(details), schema.ERROR_ARTIFACT), "its traceback"
        )
    if _try(tracker, lambda: tracker.close(status), f"its end ({status})") or _ended_anyway(tracker):
        owners.ended(tracker.run_id, status)


def _try(tracker: Tracker, write, what: str) -> bool:
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - the failure being recorded is the one that propagates, not this
        log.debug(  # the failure itself is said in one line; this is what it cost the record
            "run %s: could not record %s: %s: %s",
            tracker.run_id,
            what,
            type(exc).__name__,
            record.redact(str(exc)),
        )
        return False
    return True


def _ended_anyway(tracker: Tracker) -> bool:
    """After a failed end: did the end land (the close may have failed on the metrics before it)?"""
    store_ = getattr(tracker, "store", None)
    try:
        found = store_.run(tracker.run_id) if store_ is not None and tracker.run_id else None
    except Exception:  # noqa: BLE001 - the store cannot even be read: the run stays this process's, unended
        return False
    return found is not None and found.info.status != schema.RUNNING


def run_tags(
    optimizer: str, ctx: JobContext, task_name: str, identity: str, device: str, device_name: str
) -> dict[str, str]:
    return record.job_tags(
        task=task_name,
        optimizer=optimizer,
        config_hash=identity,
        overrides=ctx.overrides,
        device=device,
        device_name=device_name,
        torch_version=torch.__version__,
        user=user(),
        git_commit=git_commit(str(ctx.project_dir)),
    ) | {schema.ENGINE: schema.ENGINE_SINGLE, schema.BATCH_TRIALS: "1"}


def _start(run: NewRun, tracking: TrackingConfig, task_name: str, ctx: JobContext) -> RunTracker:
    """Create the run on the sweep's store (as the sweep's child), or on the configured one."""
    parent = ctx.parent
    uri = parent.uri if parent else store.resolve_uri(tracking.uri, ctx.project_dir)
    found = stores.open_store(uri)
    for stale in owners.end_stale(found, ctx.project_dir):
        log.warning("run %s was left RUNNING by a process that is gone: ended KILLED", stale)
    experiment_id = (
        parent.experiment_id if parent else found.ensure_experiment(tracking.experiment or task_name)
    )
    # A remote server may go away mid-run: what it cannot take is kept locally for `python -m harness.sync`.
    spool_dir = Path(ctx.project_dir) / store.DEFAULT_STORE_DIR / "unsent" if found.remote else None
    with signals.held():  # an interrupt finds the run owned: harness.shutdown ends it
        tracker = RunTracker.start(found, experiment_id, run, parent.run_id if parent else None, spool_dir)
        owners.own(
            found, tracker.run_id, ctx.project_dir
        )  # until its end is written (or this process is gone)
    return tracker


def attach_run(found: Store, experiment_id: str, run: tuple[str, str | None], project_dir: str) -> RunTracker:
    """A tracker for a run an earlier process created, by (run id, artifact URI); with its spool on a server."""
    spool_dir = Path(project_dir) / store.DEFAULT_STORE_DIR / "unsent" if found.remote else None
    return RunTracker(found, run[0], run[1], experiment_id, spool_dir=spool_dir)


@functools.cache
def git_commit(directory: str) -> str | None:
    """The launch directory's git commit, once per process (every job of a sweep shares it)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
