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
    """Same experiment and same grid (overrides outside a run's identity aside) -> same sweep, resumed.

    The grid, not its spelling: `optimizer=sgd,adam seed=0,1` and `seed=1,0 optimizer=adam,sgd` are one sweep.
    """
    arguments = [a for a in sweep_arguments(config) if in_identity(a)]
    return hashlib.sha256(json.dumps([experiment, canonical_grid(arguments)]).encode()).hexdigest()[:16]


def canonical_grid(arguments: list[str]) -> list[list]:
    """Each swept key with its sorted set of values, keys sorted; a key given twice keeps its last value, as the
    basic sweeper does."""
    grid: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_discrete_sweep():
            grid[key] = sorted(set(override.sweep_string_iterator()))
        elif override.is_sweep_override():  # a search space (optuna's interval, tag...): compared as typed
            grid[key] = [override.input_line.partition("=")[2]]
        else:
            grid[key] = [override.get_value_element_as_str()]
    return sorted([key, values] for key, values in grid.items())


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
