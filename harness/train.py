"""Entry point: `python -m harness.train [overrides]` (or `harness-train`); `-m` runs a sweep.

Thin on purpose: compose config -> plain dataclasses -> run the job; bad values end with one line and exit 2.
Plugins ($HARNESS_PLUGINS) are imported and the typed configs registered at import, before Hydra composes: in the
launching process and in every worker process that unpickles `main`. A sweep's job reads its launch's state from the
file Hydra names in its environment (`HARNESS_SWEEP_STATE`, see harness.sweep.state), never from a shared directory.
"""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness import entry, plugins
from harness.config import Config, register_configs, to_config
from harness.context import JobContext
from harness.errors import ConfigError
from harness.install import CONF_DIR
from harness.job import run_job
from harness.sweep import state as sweep_state
from harness.sweep.run import run_in_sweep
from harness.tracking import store


def _register() -> None:
    try:
        plugins.load()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    register_configs()


_register()


def job_context() -> JobContext:
    """What Hydra knows about the current job: launch directory, overrides, sweep position, parallelism."""
    hc = HydraConfig.get()
    launcher = hc.launcher
    parallel = launcher.get("n_jobs") if "n_jobs" in launcher else None
    if parallel is not None and parallel < 0:  # joblib: -1 = all cores, -2 = all but one...
        parallel = (os.cpu_count() or 1) + 1 + parallel
    if parallel is None or parallel < 1:
        parallel = 1
    return JobContext(
        project_dir=Path(hydra.utils.get_original_cwd()),
        overrides=tuple(hc.overrides.task),
        job_index=hc.job.get("num"),
        parallel_jobs=int(parallel),
    )


def _sweep_state(job: Config, ctx: JobContext) -> sweep_state.SweepState | None:
    """This launch's state, from the file the sweep callback named in the job's environment (None: no sweep
    callback configured); the tracking URI with its credentials comes from the job's own config or environment."""
    path = os.environ.get(sweep_state.ENV)
    if not path:
        return None
    return sweep_state.load(path, store.resolve_uri(job.tracking.uri, ctx.project_dir))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
@entry.task  # signals handled in every job's process; store and filesystem failures in one line
def main(cfg: DictConfig) -> float | None:
    ctx = job_context()
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        # Failures are recorded, never raised: Hydra would stop at the end with exit 1.
        job = to_config(cfg)
        return run_in_sweep(job, ctx, _sweep_state(job, ctx))
    try:
        result = run_job(to_config(cfg), ctx)  # to_config inside: a missing required value is one line too
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return result.final_val.get("loss")


def cli() -> None:
    """The `harness-train` console script and `python -m harness.train`: `main` under harness.entry.run."""
    entry.run(main)


if __name__ == "__main__":
    cli()
