"""Typed config schema (dataclasses in Hydra's ConfigStore) and the range checks that types cannot express.

Hydra rejects unknown keys and wrong types before any job runs. `validate` adds the ranges: it runs before
anything is built or tracked, so a bad value creates no MLflow run.
"""

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.optim import OPTIMIZERS, SCHEDULERS, validate_hparams

MAX_SEED = 2**32 - 1  # numpy.random.seed refuses anything outside [0, 2**32 - 1]


@dataclass
class TaskConfig:
    name: str = MISSING  # a registered task (harness.tasks), one YAML per task in conf/task/
    module: str | None = None  # imported first, so that a user's own task can register itself
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the task's constructor


@dataclass
class DataConfig:
    batch_size: Any = 32  # int >= 1, or "full": the whole training set per step (gradient descent)
    shuffle: bool = True  # false: batches in dataset order, reproducing the textbook loops
    num_workers: int = 0  # DataLoader workers; 0 is fastest for in-memory data (no IPC per batch)


@dataclass
class TrainerConfig:
    epochs: int | None = None  # null (with max_steps null): the task's default budget
    max_steps: int | None = None  # optimizer steps; with epochs set too, whichever ends first
    eval_every: int | None = None  # steps between evaluations; null: about 20 evaluations per run
    divergence_factor: float = 1e4  # stop as diverged when the loss exceeds this x the initial loss


@dataclass
class SchedulerConfig:
    name: str = "none"  # none | cosine | step | warmup_cosine
    step_every: float = 0.3  # step: decay every this fraction of the run
    gamma: float = 0.1  # step: decay factor
    warmup: float = 0.05  # warmup_cosine: linear warm-up over this fraction of the run
    min_factor: float = 0.0  # cosine schedules end at this fraction of the base lr


@dataclass
class TrackingConfig:
    enabled: bool = True  # false: no MLflow at all (not even imported)
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlruns/mlflow.db
    experiment: str | None = None  # null: the task name
    run_name: str | None = None  # null: built from optimizer, lr, batch size and seed
    progress: bool = True  # a progress bar on a terminal (never in logs or pipes)


@dataclass
class SweepConfig:
    # Set by the sweep callback in the launching process; jobs receive the ids and never create experiments.
    experiment_id: str | None = None
    parent_run_id: str | None = None
    rerun: str = (
        "failed"  # failed: skip grid points with a completed run (resume) | all: run everything again
    )


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: Any = MISSING  # one schema per optimizer, generated from the registry (see below)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0  # model initialisation and batch order; never the data (tasks fix their own data seed)
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto (CUDA, then MPS, then CPU)
    threads: int | None = None  # torch CPU threads; null: cores / parallel jobs


def optimizer_schema(name: str) -> type:
    """A dataclass for one optimizer's config: name, lr and the hyperparameters its registry entry accepts.

    Values come from conf/optimizer/<name>.yaml, so the YAML is the one place that holds defaults.
    """
    fields = [("name", str, field(default=MISSING)), ("lr", float, field(default=MISSING))]
    fields += [(key, typ, field(default=MISSING)) for key, typ in OPTIMIZERS[name].hparams.items()]
    # Multiplies lr: one sweep grid over lr_scale spans each optimizer's own default learning rate.
    fields += [("lr_scale", float, field(default=1.0))]
    return dataclasses.make_dataclass(f"{name.capitalize()}OptimizerConfig", fields)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (YAML files extend them through their defaults lists)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="scheduler", name="base_scheduler", node=SchedulerConfig)
    cs.store(group="task", name="base_task", node=TaskConfig)
    cs.store(group="tracking", name="base_tracking", node=TrackingConfig)
    for name in OPTIMIZERS:
        cs.store(group="optimizer", name=f"base_{name}", node=optimizer_schema(name))


def to_config(cfg: DictConfig) -> Config:
    """Hydra's DictConfig -> plain dataclasses, once, so nothing below the entry point handles OmegaConf."""
    return OmegaConf.to_object(cfg)


def optimizer_hparams(cfg: Config) -> dict[str, Any]:
    """The optimizer's hyperparameters besides name and lr."""
    values = dataclasses.asdict(cfg.optimizer)
    return {k: v for k, v in values.items() if k not in ("name", "lr", "lr_scale")}


def _positive_int_or_none(key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(key, value, "an integer >= 1 (or null)")


def validate(cfg: Config) -> None:
    """Range checks that the typed schema cannot express. Raises ConfigError naming the key."""
    bs = cfg.data.batch_size
    if not (bs == "full" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise ConfigError("data.batch_size", bs, "an integer >= 1, or 'full'")
    if cfg.data.num_workers < 0:
        raise ConfigError("data.num_workers", cfg.data.num_workers, "an integer >= 0")
    for key in ("epochs", "max_steps", "eval_every"):
        _positive_int_or_none(f"trainer.{key}", getattr(cfg.trainer, key))
    if not (cfg.trainer.divergence_factor > 1 and math.isfinite(cfg.trainer.divergence_factor)):
        raise ConfigError("trainer.divergence_factor", cfg.trainer.divergence_factor, "a finite number > 1")
    _positive_int_or_none("threads", cfg.threads)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError("seed", cfg.seed, f"an integer in [0, {MAX_SEED}] (numpy's seed range)")
    if cfg.scheduler.name not in SCHEDULERS:
        raise ConfigError("scheduler.name", cfg.scheduler.name, f"one of {list(SCHEDULERS)}")
    if cfg.sweep.rerun not in ("failed", "all"):
        raise ConfigError("sweep.rerun", cfg.sweep.rerun, "'failed' or 'all'")
    if not isinstance(cfg.optimizer.lr, float) or not math.isfinite(cfg.optimizer.lr):
        raise ConfigError("optimizer.lr", cfg.optimizer.lr, "a finite number > 0")
    if not (cfg.optimizer.lr_scale > 0 and math.isfinite(cfg.optimizer.lr_scale)):
        raise ConfigError("optimizer.lr_scale", cfg.optimizer.lr_scale, "a finite number > 0")
    validate_hparams(cfg.optimizer.name, cfg.optimizer.lr * cfg.optimizer.lr_scale, optimizer_hparams(cfg))


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config flattened to dotted keys (`optimizer.lr`, `data.batch_size`), as MLflow params."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = json.dumps(node) if isinstance(node, (list, dict)) else str(node)

    walk("", dataclasses.asdict(cfg))
    return flat


# Fields that change where or how a run is recorded or scheduled, not what it computes.
_NOT_HASHED = ("tracking", "sweep", "threads")


def config_hash(cfg: Config) -> str:
    """Identity of a grid point: the resolved config minus tracking, sweep and launcher fields."""
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
