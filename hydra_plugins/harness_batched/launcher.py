"""`hydra/launcher=batched`: every job of the sweep in this process, composed once per group of config choices,
and jobs that differ only in numbers (lr, seed, betas...) trained together as one batched program.

What the basic launcher does per job and this one does not: compose the config from scratch (here one composition
per distinct set of group choices, then the job's leaf overrides applied to a copy, see compose.py), create a job
directory with three `.hydra/*.yaml` files and set up logging again (here only when
`hydra.launcher.write_job_dirs=true`). What it does the same: Hydra's `on_job_start`/`on_job_end` callbacks around
every job (the sweep callback's parent run, resume, progress line and summary work unchanged; the callback's state
is handed over in this process, `SweepCallback.state`, not read from a file), and one `JobReturn`
per job with the job's return value, so sweepers (basic, harness, optuna) read results as from any launcher.

The jobs themselves run through harness.sweep.inprocess (grouping, batched engine, single-run fallback). A task
function other than the harness's own is launched the basic launcher's way.
"""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    env_override,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.harness_batched.sweeper import composer_for

log = logging.getLogger(__name__)


class BatchedLauncher(Launcher):
    # The sweep callback may leave the parent run to this launcher (a fresh sweep: nothing to resume): the first
    # pieces then start training before it is opened (harness.sweep.callback.SweepCallback.open_late).
    opens_sweep_late = True
    # The sweep's start line waits for the launcher, which says how the jobs train (groups, pieces, workers).
    announces_sweep = True

    def __init__(
        self,
        write_job_dirs: bool = False,
        batch: bool = True,
        workers: int | None = None,
        max_trials: int | None = None,
        memory_budget_mb: float | None = None,
        rungs: Sequence[float] | None = None,
        keep: float = 0.5,
    ) -> None:
        self.check_options(
            workers=workers, max_trials=max_trials, memory_budget_mb=memory_budget_mb, rungs=rungs, keep=keep
        )
        from harness.batched.halving import Halving
        from harness.sweep.inprocess import BatchOptions

        self.write_job_dirs = write_job_dirs
        halving = Halving(tuple(float(r) for r in rungs), keep) if rungs else None
        self.options = BatchOptions(batch, workers, max_trials, memory_budget_mb, halving)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    @staticmethod
    def check_options(
        workers=None, max_trials=None, memory_budget_mb=None, rungs=None, keep=0.5, **_
    ) -> None:
        """Range checks of hydra.launcher.*; the sweep callback calls this before it creates the parent run."""
        from harness.batched import halving
        from harness.errors import ConfigError

        halving.check(rungs, keep)
        for key, value in (("workers", workers), ("max_trials", max_trials)):
            if value is not None and value < 1:
                raise ConfigError(f"hydra.launcher.{key}", value, "an integer >= 1, or null")
        if memory_budget_mb is not None and not memory_budget_mb > 0:
            raise ConfigError("hydra.launcher.memory_budget_mb", memory_budget_mb, "a number of MiB > 0")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from harness.sweep import inprocess

        if not inprocess.is_harness_task(self.task_function):
            sweep = _sweep_callback(self.hydra_context)
            sweep.open_late()
            sweep.announce("each job as the basic launcher runs it (not the harness's task)")
            return self._launch_basic(job_overrides, initial_job_idx)
        from harness.sweep import output
        from harness.sweep.run import quiet_jobs

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        jobs = [self._prepare(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        log.debug(f"Derived {len(jobs)} job configs in {time.perf_counter() - started:.2f} s")
        hooks = _Hooks(self.hydra_context, self.task_function, self._group_config, self.config)
        # The sweep says each failure and its progress; what the jobs log (no job log files here; a failed job's
        # traceback is in its run) stays off the terminal unless job_lines or debug mode.
        with env_override(OmegaConf.to_container(self.config.hydra.job.env_set, resolve=True)):
            with output.quiet_console(quiet_jobs(hooks.state)):
                returns = inprocess.run_jobs(jobs, hooks, self.options)
        return [hooks.job_return(job, value) for job, value in zip(jobs, returns)]

    def _prepare(self, overrides: Sequence[str], index: int):
        """The job's config as plain dataclasses; composed alone when it cannot be derived (Hydra's error then)."""
        from harness.config import to_config
        from harness.sweep.inprocess import InProcessJob

        composer = composer_for(self.hydra_context.config_loader, self.config)
        try:
            cfg = composer.job_config(overrides)
        except Exception:  # noqa: BLE001 - what derivation cannot do, Hydra's full composition does (or words the error)
            full = composer.compose_alone(overrides)
            cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
        if self.write_job_dirs:
            self._write_job_dir(overrides, index, cfg)
        return InProcessJob(index, tuple(overrides), to_config(cfg), composer.split(overrides).structural)

    def _group_config(self, structural: tuple[str, ...]) -> DictConfig:
        return composer_for(self.hydra_context.config_loader, self.config).full(structural)

    def _write_job_dir(self, overrides: Sequence[str], index: int, cfg: DictConfig) -> None:
        """What the basic launcher writes per job: <sweep dir>/<subdir>/.hydra/{config,hydra,overrides}.yaml."""
        composer = composer_for(self.hydra_context.config_loader, self.config)
        hydra_cfg = OmegaConf.create({"hydra": composer.full(composer.split(overrides).structural).hydra})
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.hydra.job.num = hydra_cfg.hydra.job.id = index
            hydra_cfg.hydra.overrides.task = list(overrides)
        subdir = OmegaConf.select(OmegaConf.merge(hydra_cfg, cfg), "hydra.sweep.subdir")
        out = Path(
            str(self.config.hydra.sweep.dir), str(subdir), str(self.config.hydra.output_subdir or ".hydra")
        )
        # Redacted: a job's overrides and config may carry a tracking URI's credentials (tracking.uri=...).
        _save_config(_redacted(cfg), "config.yaml", out)
        _save_config(_redacted(hydra_cfg), "hydra.yaml", out)
        _save_config(_redacted(OmegaConf.create(list(overrides))), "overrides.yaml", out)

    def _launch_basic(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        basic = BasicLauncher()
        basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        return basic.launch(job_overrides, initial_job_idx)


def _redacted(cfg):
    """A copy of `cfg` with the credentials of every URI in its strings replaced (interpolations left unresolved)."""
    from harness.tracking.record import redact_config

    return OmegaConf.create(redact_config(OmegaConf.to_container(cfg, resolve=False)))


class _Hooks:
    """What the in-process runner calls around each job: Hydra's callbacks, and the JobReturn afterwards."""

    def __init__(
        self, hydra_context: HydraContext, task_function: TaskFunction, group_config, config: DictConfig
    ):
        self.callbacks, self.task_function, self.group_config = (
            hydra_context.callbacks,
            task_function,
            group_config,
        )
        self.project_dir = str(config.hydra.runtime.cwd)
        self.task_name = str(config.hydra.job.name)
        self.sweep = _sweep_callback(hydra_context)
        # This launch's state, handed over in this process (None: no sweep callback configured): the jobs run here.
        self.state = getattr(self.sweep, "state", None)

    def open_sweep(self) -> None:
        if self.sweep.late is not None:
            self.state = self.sweep.open_late()

    def announce(self, details: str) -> None:
        self.sweep.announce(details)

    def detach(self, line: str) -> None:
        self.sweep.detach(line)

    def on_job_start(self, job) -> None:
        # Hydra passes the job's full config; callbacks here get the composition of the job's group choices
        # (composing each job's hydra node is the cost this launcher removes). Ours reads nothing from it. No launch
        # line per job: the sweep's start line says how they train.
        self.callbacks.on_job_start(
            config=self.group_config(job.structural), task_function=self.task_function
        )

    def on_job_end(self, job, value) -> None:
        self.callbacks.on_job_end(
            config=self.group_config(job.structural), job_return=self.job_return(job, value)
        )

    def job_return(self, job, value) -> JobReturn:
        failed = isinstance(value, BaseException)
        return JobReturn(
            overrides=list(job.overrides),
            working_dir=self.project_dir,
            task_name=self.task_name,
            status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
            _return_value=value,
        )


class _NoLateSweep:
    late = None
    state = None

    def detach(self, line: str) -> None:
        logging.getLogger(__name__).info(line)

    def open_late(self) -> None:
        return None

    def announce(self, details: str = "") -> None:
        pass


def _sweep_callback(hydra_context: HydraContext):
    """The harness sweep callback among Hydra's callbacks (anything with `open_late`), or a stand-in without one."""
    for callback in getattr(hydra_context.callbacks, "callbacks", []):
        if hasattr(callback, "open_late"):
            return callback
    return _NoLateSweep()
