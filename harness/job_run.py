"""The MLflow run of one job: its name, tags, params and config artifact, and how it ends.

Written from the Plan (what the job resolved), with the names of harness.tracking.schema. MLflow is imported only
when a run is created, so `tracking.enabled=false` never pays for it.
"""

import dataclasses
import functools
import getpass
import subprocess
from pathlib import Path

import torch
import yaml

from harness.config import Config, config_hash, effective_lr, flat_params
from harness.context import JobContext
from harness.devices import device_description
from harness.loop import RunResult
from harness.plan import Plan
from harness.tracking import FAILED, FINISHED, NullTracker, Tracker, schema


def open_run(plan: Plan, ctx: JobContext, extra_tags: dict[str, str] | None = None) -> Tracker:
    """Create the MLflow run (a child run inside a sweep) with params, tags and the resolved config.

    `extra_tags` add to or replace the run's tags (batched trials: `harness.engine`, `harness.batch_trials`).
    """
    cfg = plan.cfg
    if not cfg.tracking.enabled:
        return NullTracker()
    tags = run_tags(
        cfg, ctx, plan.task.name, plan.config_hash, str(plan.device), device_description(plan.device)
    ) | (extra_tags or {})
    return _start_run(cfg, ctx, plan.task.name, tags, resolved_params(plan))


def resolved_params(plan: Plan) -> dict[str, float | int]:
    """The params beyond the flattened config: what the job resolved."""
    return {
        schema.RESOLVED_LR: plan.lr,
        schema.RESOLVED_TOTAL_STEPS: plan.total_steps,
        schema.RESOLVED_BATCH_SIZE: plan.batch_size,
        schema.RESOLVED_STEPS_PER_EPOCH: plan.steps_per_epoch,
    }


def config_text(cfg: Config) -> str:
    """The config.yaml artifact. PyYAML's safe dumper, not OmegaConf.to_yaml: the same text for a plain dict, and
    cheaper; its libyaml emitter (CSafeDumper, where PyYAML was built with it) writes the same text ≈4x faster."""
    return yaml.dump(dataclasses.asdict(cfg), Dumper=_YAML_DUMPER, sort_keys=False)


_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def record_refused_job(cfg: Config, ctx: JobContext, message: str) -> None:
    """Inside a sweep, a config the job refused (a device that is not there...) still shows as a FAILED run."""
    tags = run_tags(cfg, ctx, cfg.task.name, config_hash(cfg), cfg.device, "")
    end_run(
        _start_run(cfg, ctx, cfg.task.name, tags, {schema.RESOLVED_LR: effective_lr(cfg)}), FAILED, message
    )


def record_result(tracker: Tracker, result: RunResult) -> None:
    """Final metrics and status tags, then end the run FINISHED (diverged runs too: they are outcomes)."""
    tracker.log_metrics(result.final_metrics(), step=result.steps)
    tags = {schema.STATUS: result.status}
    if result.status == schema.DIVERGED:
        tags[schema.DIVERGENCE] = result.divergence or ""
    tracker.set_tags(tags)
    tracker.close(FINISHED)


def end_run(tracker: Tracker, status: str, message: str, details: str | None = None) -> None:
    """End a run that did not finish: FAILED or KILLED, with the error as a tag (and the traceback as a file)."""
    tracker.set_tags({schema.STATUS: status.lower(), schema.ERROR: message})
    if details:
        tracker.log_text(details, schema.ERROR_ARTIFACT)
    tracker.close(status)


def run_name(cfg: Config) -> str:
    return cfg.tracking.run_name or (
        f"{cfg.optimizer.name} lr={effective_lr(cfg):.3g} bs={cfg.data.batch_size} seed={cfg.seed}"
    )


def run_tags(
    cfg: Config, ctx: JobContext, task_name: str, identity: str, device: str, device_name: str
) -> dict[str, str]:
    tags = {
        schema.SOURCE_NAME: "harness.train",
        schema.SOURCE_TYPE: "LOCAL",
        schema.USER: _user(),
        schema.TASK: task_name,
        schema.OPTIMIZER: cfg.optimizer.name,
        schema.CONFIG_HASH: identity,
        schema.OVERRIDES: " ".join(ctx.overrides),
        schema.TORCH_VERSION: torch.__version__,
        schema.DEVICE: device,
        schema.DEVICE_NAME: device_name,
        schema.STATUS: schema.RUNNING_OUTCOME,
        schema.ENGINE: schema.ENGINE_SINGLE,
        schema.BATCH_TRIALS: "1",
    }
    commit = git_commit(str(ctx.project_dir))
    if commit:
        tags[schema.SOURCE_GIT_COMMIT] = tags[schema.GIT_COMMIT] = commit
    return tags


def _start_run(cfg: Config, ctx: JobContext, task_name: str, tags: dict, resolved: dict) -> Tracker:
    from harness.tracking import store
    from harness.tracking.mlflow_tracker import MlflowTracker

    parent = ctx.parent
    uri = parent.uri if parent else store.resolve_uri(cfg.tracking.uri, ctx.project_dir)
    client = store.client(uri)
    experiment_id = (
        parent.experiment_id
        if parent
        else store.ensure_experiment(client, cfg.tracking.experiment or task_name)
    )
    # A remote server may go away mid-run: what it cannot take is kept locally for `python -m harness.sync`.
    spool_dir = Path(ctx.project_dir) / "mlruns" / "unsent" if store.is_remote(uri) else None
    tracker = MlflowTracker.start(
        client,
        experiment_id,
        run_name(cfg),
        tags,
        parent_run_id=parent.run_id if parent else None,
        spool_dir=spool_dir,
    )
    try:
        tracker.log_params({**flat_params(cfg), **resolved})
        tracker.log_text(config_text(cfg), schema.CONFIG_ARTIFACT)
    except Exception as exc:
        end_run(tracker, FAILED, f"{type(exc).__name__}: {exc}")
        raise
    return tracker


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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
