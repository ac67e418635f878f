"""One training job from a validated Config: build the parts, track the run, train, record the outcome.

Everything that can reject the config runs before the MLflow run is created, so bad input leaves no run behind.
"""

import dataclasses
import functools
import getpass
import json
import os
import random
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from harness.config import Config, config_hash, flat_params, optimizer_hparams, validate
from harness.data import make_loader, resolve_batch_size
from harness.devices import device_description, resolve_device
from harness.errors import ConfigError
from harness.loop import DIVERGED, LoopSettings, RunResult, train
from harness.optim import create_optimizer, create_scheduler, get_optimizer_info
from harness.progress import progress_for
from harness.tasks import Splits, Task, create_task
from harness.tracking import FAILED, FINISHED, KILLED, NullTracker, Tracker

EVALUATIONS_PER_RUN = 20  # default cadence when trainer.eval_every is null


@dataclass(frozen=True)
class JobContext:
    """What the launcher knows about this job, beyond its config."""

    project_dir: Path = field(default_factory=Path.cwd)  # the launch directory: default store and git commit
    overrides: tuple[str, ...] = ()  # the command-line overrides of this job, as typed
    job_index: int | None = None  # position in a sweep (spreads jobs over GPUs)
    parallel_jobs: int = 1  # jobs running at once on this machine (sets the default thread count)


@dataclass(frozen=True)
class Plan:
    """Everything derived from the config before training: validated, nothing tracked yet."""

    task: Task
    splits: Splits
    device: torch.device
    batch_size: int
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    threads: int  # torch CPU threads when the config does not say: cores / parallel jobs, capped by the task


def plan(cfg: Config, ctx: JobContext) -> Plan:
    """Validate the config and resolve everything that can still reject it. Raises ConfigError."""
    validate(cfg)
    device = resolve_device(cfg.device, ctx.job_index)
    task = create_task(cfg.task.name, cfg.task.module, cfg.task.kwargs)
    splits = _load_splits(task)
    size = splits.train[0].shape[0]
    batch_size = resolve_batch_size(cfg.data.batch_size, size)
    steps_per_epoch = -(-size // batch_size)
    epochs, max_steps = cfg.trainer.epochs, cfg.trainer.max_steps
    if epochs is None and max_steps is None:
        epochs, max_steps = task.default_budget.epochs, task.default_budget.max_steps
    limits = [n for n in (max_steps, None if epochs is None else epochs * steps_per_epoch) if n is not None]
    total_steps = min(limits)
    eval_every = cfg.trainer.eval_every or max(1, -(-total_steps // EVALUATIONS_PER_RUN))
    threads = max(1, (os.cpu_count() or 1) // ctx.parallel_jobs)  # no oversubscription across parallel jobs
    if task.max_threads is not None:
        threads = min(threads, task.max_threads)
    return Plan(task, splits, device, batch_size, total_steps, steps_per_epoch, eval_every, threads)


def run_job(cfg: Config, ctx: JobContext) -> RunResult:
    """Plan, track, build and train one run. Exceptions propagate after the run is ended FAILED or KILLED."""
    p = plan(cfg, ctx)  # everything that can refuse the config runs before the MLflow run exists
    tracker = open_tracker(cfg, ctx, p)
    try:
        result = _build_and_train(cfg, p, tracker)
        record_result(tracker, result)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGINT/SIGTERM as harness.signals.Interrupted("SIGTERM")
        end_run(tracker, KILLED, f"interrupted ({type(exc).__name__}: {exc})".replace(": )", ")"))
        raise
    except Exception as exc:
        end_run(tracker, FAILED, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        raise
    return result


def _build_and_train(cfg: Config, p: Plan, tracker: Tracker) -> RunResult:
    torch.set_num_threads(cfg.threads or p.threads)
    _seed_everything(cfg.seed)
    model = p.task.make_model().to(p.device)
    info = get_optimizer_info(cfg.optimizer.name)
    optimizer = create_optimizer(info.name, model.parameters(), effective_lr(cfg), optimizer_hparams(cfg))
    s = cfg.scheduler
    scheduler = create_scheduler(
        optimizer,
        s.name,
        p.total_steps,
        step_every=s.step_every,
        gamma=s.gamma,
        warmup=s.warmup,
        min_factor=s.min_factor,
    )
    train_data = tuple(t.to(p.device) for t in p.splits.train)
    val_data = tuple(t.to(p.device) for t in p.splits.val)
    loader = make_loader(train_data, p.batch_size, cfg.data.shuffle, cfg.seed, cfg.data.num_workers)
    settings = LoopSettings(
        total_steps=p.total_steps,
        eval_every=p.eval_every,
        divergence_factor=cfg.trainer.divergence_factor,
        f_star=p.task.f_star(p.splits),
        target=p.task.target(p.splits),
        steps_per_epoch=p.steps_per_epoch,
        batch_size=p.batch_size,
    )
    progress = progress_for(cfg.tracking.progress, p.total_steps, run_name(cfg))
    return train(
        p.task, model, optimizer, loader, val_data, settings, tracker, scheduler, info.needs_closure, progress
    )


def record_result(tracker: Tracker, result: RunResult) -> None:
    """Final metrics and status tags, then end the run FINISHED (diverged runs too: they are outcomes)."""
    tracker.log_metrics(result.final_metrics(), step=result.steps)
    tags = {"harness.status": result.status}
    if result.status == DIVERGED:
        tags["harness.divergence"] = result.divergence or ""
    tracker.set_tags(tags)
    tracker.close(FINISHED)


def end_run(tracker: Tracker, status: str, message: str, details: str | None = None) -> None:
    """End a run that did not finish: FAILED or KILLED, with the error as a tag (and the traceback as a file)."""
    tracker.set_tags({"harness.status": status.lower(), "harness.error": message})
    if details:
        tracker.log_text(details, "error.txt")
    tracker.close(status)


def effective_lr(cfg: Config) -> float:
    """optimizer.lr x optimizer.lr_scale: a sweep over lr_scale spans each optimizer's own default lr."""
    return cfg.optimizer.lr * cfg.optimizer.lr_scale


def run_name(cfg: Config) -> str:
    return cfg.tracking.run_name or (
        f"{cfg.optimizer.name} lr={effective_lr(cfg):.3g} bs={cfg.data.batch_size} seed={cfg.seed}"
    )


def run_tags(cfg: Config, ctx: JobContext, task_name: str, device: str, device_name: str) -> dict[str, str]:
    commit = git_commit(str(ctx.project_dir))
    tags = {
        "mlflow.source.name": "harness.train",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": _user(),
        "harness.task": task_name,
        "harness.optimizer": cfg.optimizer.name,
        "harness.config_hash": config_hash(cfg),
        "harness.overrides": " ".join(ctx.overrides),
        "harness.torch_version": torch.__version__,
        "harness.device": device,
        "harness.device_name": device_name,
        "harness.status": "running",
    }
    if commit:
        tags["mlflow.source.git.commit"] = tags["harness.git_commit"] = commit
    return tags


def open_tracker(cfg: Config, ctx: JobContext, p: Plan) -> Tracker:
    """Create the MLflow run (a child run inside a sweep) with params, tags and the resolved config."""
    if not cfg.tracking.enabled:
        return NullTracker()
    tags = run_tags(cfg, ctx, p.task.name, str(p.device), device_description(p.device))
    resolved = {"resolved.total_steps": p.total_steps, "resolved.batch_size": p.batch_size}
    return _start_run(cfg, ctx, p.task.name, tags, resolved)


def record_refused_job(cfg: Config, ctx: JobContext, message: str) -> None:
    """Inside a sweep, a config the job refused (a device that is not there...) still shows as a FAILED run."""
    tags = run_tags(cfg, ctx, cfg.task.name, cfg.device, "")
    end_run(_start_run(cfg, ctx, cfg.task.name, tags, {}), FAILED, message)


def _start_run(cfg: Config, ctx: JobContext, task_name: str, tags: dict, resolved: dict) -> Tracker:
    from harness.tracking import store
    from harness.tracking.mlflow_tracker import MlflowTracker

    uri = store.resolve_uri(cfg.tracking.uri, ctx.project_dir)
    client = store.client(uri)
    experiment_id = cfg.sweep.experiment_id or store.ensure_experiment(
        client, cfg.tracking.experiment or task_name
    )
    # A remote server may go away mid-run: what it cannot take is kept locally for `python -m harness.sync`.
    spool_dir = Path(ctx.project_dir) / "mlruns" / "unsent" if store.is_remote(uri) else None
    tracker = MlflowTracker.start(
        client, experiment_id, run_name(cfg), tags, parent_run_id=cfg.sweep.parent_run_id, spool_dir=spool_dir
    )
    try:
        params = flat_params(cfg)
        params.update({"resolved.lr": effective_lr(cfg), **resolved})
        tracker.log_params(params)
        # yaml.safe_dump, not OmegaConf.to_yaml: the same text for a plain dict, ~15 ms cheaper per job.
        tracker.log_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), "config.yaml")
    except Exception as exc:
        end_run(tracker, FAILED, f"{type(exc).__name__}: {exc}")
        raise
    return tracker


_SPLITS: dict[tuple[str, str], Splits] = {}


def _load_splits(task: Task) -> Splits:
    """Tasks' data is deterministic and never written to, so jobs in one process share it."""
    key = (type(task).__qualname__, json.dumps(vars(task), sort_keys=True, default=str))
    if key not in _SPLITS:
        _SPLITS[key] = task.make_data()
    return _SPLITS[key]


def _seed_everything(seed: int) -> None:
    """Reset every global RNG, so no state carries over between jobs sharing a process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@functools.cache
def git_commit(directory: str) -> str | None:
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


__all__ = ["ConfigError", "JobContext", "Plan", "plan", "run_job"]
