"""Optuna searches (hydra-optuna-sweeper 1.3.0): a failure budget for the whole study.

What the plugin does with failures (hydra_plugins/hydra_optuna_sweeper/_impl.py):
- a job that returns None (`run_in_sweep` does for failed and diverged jobs) becomes a FAIL trial; NaN would crash
  the sweep instead (optuna 2.10 refuses NaN, then refuses to record the FAIL), so `run_in_sweep` never returns it;
- its `max_failure_rate` is checked per batch of `n_jobs` trials (with n_jobs=1 any failure is a rate of 1.0) and
  only stops the study for jobs that raised, which ours never do: on its own it never stops a study of ours.
`stop_past_failure_budget` gives `max_failure_rate` the meaning users expect: the share of `n_trials` that may fail
or diverge over the whole study. Hydra only loads sweepers from the `hydra_plugins` package, so this hooks in
through the plugin's `custom_search_space` (called for every trial before it is launched) instead of a subclass.
"""

import math
import sys
from pathlib import Path

from omegaconf import DictConfig
from optuna.trial import Trial, TrialState

from harness import shutdown
from harness.errors import Stopped
from harness.tracking import schema


class FailureBudgetExceeded(Stopped):
    """More trials failed or diverged than `hydra.sweeper.max_failure_rate` x `n_trials` allows."""


def failure_budget(config: DictConfig) -> int:
    """How many failed or diverged trials the study tolerates."""
    sweeper = config.hydra.sweeper
    return math.floor(sweeper.max_failure_rate * sweeper.n_trials + 1e-9)  # 0.1 x 30 is 2.999... in floats


def stop_past_failure_budget(config: DictConfig, trial: Trial) -> None:
    """`hydra.sweeper.custom_search_space` hook: stop the study before a trial once too many have failed.

    Raises:
        FailureBudgetExceeded: after ending the sweep's MLflow parent run, which Hydra would leave RUNNING.
    """
    failed = len(trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    allowed = failure_budget(config)
    if failed <= allowed:
        return
    message = (
        f"{failed} trials failed or diverged, more than the {allowed} that hydra.sweeper.max_failure_rate="
        f"{config.hydra.sweeper.max_failure_rate} of n_trials={config.hydra.sweeper.n_trials} allows: study stopped"
    )
    if config.tracking.enabled:
        print(end_parent_run(config, message), file=sys.stderr, flush=True)
    raise FailureBudgetExceeded(message)


def end_parent_run(config: DictConfig, reason: str) -> str:
    """End the sweep's parent run (the one the callback opened for this sweep) with its counts and the reason."""
    from harness.context import ParentRun
    from harness.sweep import grid, parent
    from harness.tracking import store, stores

    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    found_store = stores.open_store(uri)
    experiment = grid.experiment_name(config)
    experiment_id = found_store.ensure_experiment(experiment)
    run = found_store.find_parent(experiment_id, grid.sweep_key(config, experiment))
    ended = ParentRun(uri=uri, experiment_id=experiment_id, run_id=run.info.run_id)
    counts = parent.end_parent(found_store, ended, extra_tags={schema.STOPPED: reason})
    shutdown.sweep_closed()  # ended here: what the command does on its way out must not end it again
    return f"[sweep] parent run {run.info.run_id} ended after {counts['total']} trials: {reason}"
