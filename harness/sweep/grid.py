"""The sweep's grid as Hydra's basic sweeper expands it, its identity (for resume) and its experiment name."""

import hashlib
import json

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from harness.config import in_identity


def sweep_arguments(config: DictConfig) -> list[str]:
    """The sweep's overrides: `hydra.sweeper.params` (named sweeps), then the command line, as the sweeper sees them."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)


def expand_grid(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, as the basic sweeper will launch them; None for other sweepers (optuna...)."""
    if "BasicSweeper" not in str(OmegaConf.select(config, "hydra.sweeper._target_")):
        return None
    parsed = OverridesParser.create().parse_overrides(sweep_arguments(config))
    [batch] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def grid_size(config: DictConfig) -> int | None:
    grid = expand_grid(config)
    if grid is not None:
        return len(grid)
    trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    return int(trials) if trials is not None else None


def sweep_key(config: DictConfig, experiment: str) -> str:
    """Same experiment and same sweep overrides (those outside a run's identity aside) -> same sweep, resumed."""
    arguments = sorted(a for a in sweep_arguments(config) if in_identity(a))
    return hashlib.sha256(json.dumps([experiment, arguments]).encode()).hexdigest()[:16]


def varies_task(config: DictConfig) -> bool:
    grid = expand_grid(config)
    if grid is None:
        return False
    tasks = {o for job in grid for o in job if o.lstrip("+").startswith(("task=", "task.name="))}
    return len(tasks) > 1


def experiment_name(config: DictConfig) -> str:
    """tracking.experiment, else the task name, else `sweeps` when the sweep spans several tasks."""
    if config.tracking.experiment:
        return str(config.tracking.experiment)
    return "sweeps" if varies_task(config) else str(config.task.name)


def sweep_name(config: DictConfig) -> str:
    """The parent run's name: the named sweep, else the command line's overrides."""
    named = [o.split("=", 1)[1] for o in config.hydra.overrides.task if o.lstrip("+").startswith("sweep=")]
    if named:
        return f"sweep {named[0]}"
    arguments = [a for a in config.hydra.overrides.task if not a.startswith("hydra")]
    return "sweep " + " ".join(arguments) if arguments else "sweep"
