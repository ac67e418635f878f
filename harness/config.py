"""The typed config (dataclasses in Hydra's ConfigStore), the range checks types cannot express, and a run's identity.

Hydra rejects unknown keys and wrong types before any job runs. The `optimizer`, `scheduler` and `task` groups are
generated from their registries (harness.optim, harness.tasks): no YAML repeats what a record says. `validate` adds
the ranges: it runs before anything is built or tracked, so a bad value creates no MLflow run.
"""

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, MissingMandatoryValue, OmegaConf

from harness.errors import ConfigError
from harness.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    OptimInfo,
    ScheduleInfo,
    get_optimizer_info,
    get_schedule_info,
)
from harness.tasks import TASKS

MAX_SEED = 2**32 - 1  # numpy.random.seed refuses anything outside [0, 2**32 - 1]
# torch's OpenMP pool cannot start many thousands of threads: libgomp fails to create them (exit 1) or the process
# segfaults (threads=100000). 1,024 starts on any machine that runs the harness; beyond the cores it only slows.
MAX_THREADS = 1024
MAX_WORKERS = 64  # data.num_workers: each is a process forked per epoch
# Step counts are stored as MLflow's 64-bit steps and read back as the report's integer columns; a trillion steps
# is beyond any benchmark's budget and leaves room for epochs x steps per epoch.
MAX_STEPS = 10**12


@dataclass
class TaskConfig:
    name: str = MISSING  # a registered task (harness.tasks): task=<name>
    module: str | None = None  # imported first, so that a user's own task can register itself
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the task's constructor


@dataclass
class DataConfig:
    batch_size: Any = 32  # int >= 1, or "full": the whole training set per step (gradient descent)
    shuffle: bool = True  # false: batches in dataset order, reproducing the textbook loops
    num_workers: int = (
        0  # DataLoader workers, 0..MAX_WORKERS; 0 is fastest for in-memory data (no IPC per batch)
    )


@dataclass
class TrainerConfig:
    epochs: int | None = None  # 1..MAX_STEPS; null (with max_steps null): the task's default budget
    max_steps: int | None = None  # optimizer steps, 1..MAX_STEPS; with epochs set too, whichever ends first
    eval_every: int | None = (
        None  # steps between evaluations, 1..MAX_STEPS; null: about 20 evaluations per run
    )
    divergence_factor: float = 1e4  # stop as diverged when the loss exceeds this x the initial loss


@dataclass
class TrackingConfig:
    enabled: bool = True  # false: no MLflow at all (not even imported)
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlruns/mlflow.db
    experiment: str | None = None  # null: the task name
    run_name: str | None = None  # null: built from optimizer, lr, batch size and seed
    progress: bool = True  # a progress bar on a terminal (never in logs or pipes)


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    optimizer: Any = (
        MISSING  # one schema per optimizer, generated from its registry record (optimizer=<name>)
    )
    scheduler: Any = MISSING  # one schema per schedule kind, generated from its record (scheduler=<name>)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0  # model initialisation and batch order; never the data (tasks fix their own data seed)
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto (CUDA, then MPS, then CPU)
    threads: int | None = None  # torch CPU threads, 1..MAX_THREADS; null: cores / parallel jobs


def optimizer_schema(info: OptimInfo) -> type:
    """The typed config of one optimizer, defaults included: name, lr, its hyperparameters, lr_scale."""
    fields = [
        ("name", str, field(default=info.name)),
        ("lr", float, field(default=info.lr)),
        *[(key, h.annotation(), field(default_factory=h.fresh_default)) for key, h in info.hparams.items()],
        # Multiplies lr: one sweep grid over lr_scale spans each optimizer's own default learning rate.
        ("lr_scale", float, field(default=1.0)),
    ]
    return dataclasses.make_dataclass(f"{info.name.capitalize()}OptimizerConfig", fields)


def scheduler_schema(info: ScheduleInfo) -> type:
    """The typed config of one schedule kind: its name and its parameters with their defaults."""
    fields = [("name", str, field(default=info.name))]
    fields += [
        (key, h.annotation(), field(default_factory=h.fresh_default)) for key, h in info.params.items()
    ]
    return dataclasses.make_dataclass(f"{info.name.capitalize()}SchedulerConfig", fields)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore, one group option per registry entry.

    Call it again after registering more entries (a plugin): storing a node again replaces it.
    """
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, info in OPTIMIZERS.items():
        cs.store(group="optimizer", name=name, node=optimizer_schema(info))
    for name, info in SCHEDULERS.items():
        cs.store(group="scheduler", name=name, node=scheduler_schema(info))
    for name in TASKS:
        cs.store(group="task", name=name, node=TaskConfig(name=name))


def to_config(cfg: DictConfig) -> Config:
    """Hydra's DictConfig -> plain dataclasses, once, so nothing below the entry point handles OmegaConf.

    Raises:
        ConfigError: a required value (`???`, e.g. optimizer.target of optimizer=custom) was not given.
    """
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as exc:
        raise ConfigError(exc.full_key, "???", f"a value: {exc.full_key}=... is required") from None


def optimizer_hparams(cfg: Config) -> dict[str, Any]:
    """The optimizer's hyperparameters besides name, lr and lr_scale."""
    values = dataclasses.asdict(cfg.optimizer)
    return {k: v for k, v in values.items() if k not in ("name", "lr", "lr_scale")}


def scheduler_params(cfg: Config) -> dict[str, Any]:
    """The schedule's parameters besides its name."""
    return {k: v for k, v in dataclasses.asdict(cfg.scheduler).items() if k != "name"}


def effective_lr(cfg: Config) -> float:
    """optimizer.lr x optimizer.lr_scale: what the optimizer is built with (a sweep over lr_scale spans each
    optimizer's own default lr)."""
    return cfg.optimizer.lr * cfg.optimizer.lr_scale


def _int_in_range_or_none(key: str, value: Any, low: int, high: int) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
    ):
        raise ConfigError(key, value, f"an integer in [{low}, {high:,}] (or null)")


def validate(cfg: Config) -> None:
    """Range checks that the typed schema cannot express. Raises ConfigError naming the key."""
    bs = cfg.data.batch_size
    if not (bs == "full" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise ConfigError("data.batch_size", bs, "an integer >= 1, or 'full'")
    if not 0 <= cfg.data.num_workers <= MAX_WORKERS:
        raise ConfigError(
            "data.num_workers", cfg.data.num_workers, f"an integer in [0, {MAX_WORKERS}] (each is a process)"
        )
    for key in ("epochs", "max_steps", "eval_every"):
        _int_in_range_or_none(f"trainer.{key}", getattr(cfg.trainer, key), 1, MAX_STEPS)
    if not (cfg.trainer.divergence_factor > 1 and math.isfinite(cfg.trainer.divergence_factor)):
        raise ConfigError("trainer.divergence_factor", cfg.trainer.divergence_factor, "a finite number > 1")
    _int_in_range_or_none("threads", cfg.threads, 1, MAX_THREADS)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError("seed", cfg.seed, f"an integer in [0, {MAX_SEED}] (numpy's seed range)")
    _validate_optimizer(cfg)
    schedule = get_schedule_info(cfg.scheduler.name)
    _same_keys("scheduler", schedule.name, schedule.params, scheduler_params(cfg))
    schedule.check(scheduler_params(cfg))


def _validate_optimizer(cfg: Config) -> None:
    info = get_optimizer_info(cfg.optimizer.name)
    hparams = optimizer_hparams(cfg)
    _same_keys("optimizer", info.name, info.hparams, hparams)
    info.check(cfg.optimizer.lr, hparams)
    if not (cfg.optimizer.lr_scale > 0 and math.isfinite(cfg.optimizer.lr_scale)):
        raise ConfigError("optimizer.lr_scale", cfg.optimizer.lr_scale, "a finite number > 0")


def _same_keys(group: str, name: str, records: dict, values: dict) -> None:
    """`optimizer.name=adam` over `optimizer=sgd` would keep SGD's keys: refuse it."""
    if set(records) != set(values):
        raise ConfigError(
            f"{group}.name", name, f"a {group} chosen as {group}=<name>, not by renaming another"
        )


# A run's identity is what it computes: its config minus the fields that only say where it is recorded (tracking)
# or how it is scheduled (threads). Hydra's own keys (hydra.*, hydra/launcher=...) are never part of a Config. This
# one rule serves the config hash (a grid point: resume skips it once done) and the sweep key (a sweep: run again,
# it continues its parent run).
NOT_IDENTITY = ("tracking", "threads", "hydra")


def in_identity(key: str) -> bool:
    """Whether a config key or override (`optimizer.lr`, `+tracking.uri=...`, `hydra/launcher=joblib`) is part of a
    run's identity."""
    return re.split(r"[./=]", key.lstrip("+~"), maxsplit=1)[0] not in NOT_IDENTITY


def config_hash(cfg: Config) -> str:
    """Identity of a grid point: the resolved config minus what `in_identity` leaves out."""
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if in_identity(k)}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
