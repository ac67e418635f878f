"""Schemas and defaults of the two plugins, stored in Hydra's ConfigStore (one dataclass each, a comment per field)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.harness_batched.launcher.BatchedLauncher"
    # true: a job directory with .hydra/{config,hydra,overrides}.yaml per job, as the basic launcher writes them
    # (slower: three files per job); false: only the sweep directory (multirun.yaml, the progress file).
    write_job_dirs: bool = False
    # false: every job trains on its own (still in this process, composed once per group of config choices).
    batch: bool = True
    # Processes training groups side by side on CPU (null: one per usable core; 1: all in the launching process).
    workers: int | None = None
    # At most this many trials in one batched program (null: as many as memory_budget_mb holds).
    max_trials: int | None = None
    # MiB one batched program may use beyond the shared data: parameters, gradients, optimizer state, activations
    # (null: harness.batched.engine.DEFAULT_MEMORY_BUDGET_MB).
    memory_budget_mb: float | None = None


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_batched.sweeper.HarnessBasicSweeper"
    # As the basic sweeper: jobs per launch (null: the whole grid in one batch).
    max_batch_size: int | None = None
    # As the basic sweeper: the grid, e.g. `optimizer: sgd,adam` (named sweeps in conf/sweep/ set this).
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="harness"
)
ConfigStore.instance().store(
    group="hydra/sweeper", name="harness", node=HarnessSweeperConf, provider="harness"
)
