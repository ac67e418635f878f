"""Schemas and defaults of the two plugins, stored in Hydra's ConfigStore (one dataclass each, a comment per field)."""

from dataclasses import dataclass, field

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
    # Successive halving inside each batched program (harness.batched.halving): at these fractions of the step
    # budget (e.g. [0.25,0.5]) each optimizer's configurations ranked out by validation loss stop, outcome `pruned`
    # (null: off). Under hydra/sweeper=race it applies to round 1 only.
    rungs: list[float] | None = None
    # The share of each optimizer's configurations that train on at a rung.
    keep: float = 0.5


@dataclass
class BatchedSlurmLauncherConf(BatchedLauncherConf):
    """`hydra/launcher=batched_slurm`: each batched piece as one SLURM job (hydra_plugins/harness_batched/packed.py)."""

    _target_: str = "hydra_plugins.harness_batched.packed.BatchedSlurmLauncher"
    # slurm, or local: the pieces as local processes through submitit (no SLURM needed).
    cluster: str = "slurm"
    # The SLURM partition (null: $SLURM_PARTITION, else the cluster's default).
    partition: str | None = "${oc.env:SLURM_PARTITION,null}"
    # GPUs per piece (null: 1 when the trials train on cuda, e.g. device=auto on a GPU node; else 0).
    gpus_per_piece: int | None = None
    # Host memory per piece in GB (null: sized from each piece, plus 1 GB for the process).
    mem_gb: float | None = None
    # Minutes before SLURM stops a piece (its runs end KILLED with the steps they trained; the same command resumes).
    # null: sized from each piece's work, three times a conservative estimate, at least 10.
    timeout_min: int | None = None
    # false: submit the pieces and return; the parent run stays RUNNING, and the same command run again shows their
    # progress, records what they trained and, once every piece is in, ends the sweep (or resumes what is missing).
    wait: bool = True
    # At most this many pieces run at once.
    array_parallelism: int = 8
    # submitit's folder: each piece's sbatch script, pickles and logs.
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    # Any other sbatch option, e.g. {mail-type: END}.
    additional_parameters: dict = field(default_factory=dict)


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
    group="hydra/launcher", name="batched_slurm", node=BatchedSlurmLauncherConf, provider="harness"
)
ConfigStore.instance().store(
    group="hydra/sweeper", name="harness", node=HarnessSweeperConf, provider="harness"
)
