"""The sweep's grid as Hydra's basic sweeper expands it, its identity (for resume) and its experiment name."""

import hashlib
import json

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from harness.config import in_identity
from harness.tracking import record

# The named sweep (`+sweep=demo`) is part of a sweep's identity but not of its parent's params: it names the run.
_NAMED_SWEEP = "sweep"


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


def raced(config: DictConfig) -> bool:
    """hydra/sweeper=race: the grid is the most it trains (harness.sweep.race)."""
    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).startswith(
        "hydra_plugins.harness_race."
    )


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


def named_sweep(config: DictConfig) -> str | None:
    """`demo` for `+sweep=demo`, else None."""
    named = [o.split("=", 1)[1] for o in config.hydra.overrides.task if o.lstrip("+").startswith("sweep=")]
    return named[0] if named else None


def sweep_axes(config: DictConfig) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(what varies over which values, what the sweep fixes), from the sweep's overrides as typed.

    `optimizer=sgd,adam seed=range(0,2) trainer.max_steps=25` -> ({optimizer: [sgd, adam], seed: [0, 1]},
    {trainer.max_steps: 25}); an optuna range stays as typed (`optimizer.lr: [tag(log, interval(1e-4, 1))]`).
    Launcher, tracking and sweep options are left out.
    """
    axes: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(sweep_arguments(config)):
        key = override.get_key_element().lstrip("+~")
        # Launcher, store and thread options are no grid point's business (config.in_identity), nor the named sweep.
        if not in_identity(key) or key.split(".", 1)[0] == _NAMED_SWEEP or override.is_delete():
            continue
        typed = override.input_line.split("=", 1)[1] if override.input_line else ""
        if not override.is_sweep_override():
            fixed[key] = typed
        elif override.is_discrete_sweep():
            axes[key] = list(override.sweep_string_iterator())
        else:
            axes[key] = [typed]
    return axes, fixed


def sweep_name(config: DictConfig, points: int | None = None) -> str:
    """The parent run's name, short: `sweep demo: optimizer x optimizer.lr x seed (144 points)`,
    `sweep quadratic: optimizer=sgd,adam seed=0,1 (4 points)` (see record.sweep_name)."""
    axes, _ = sweep_axes(config)
    task = "" if varies_task(config) else str(config.task.name)
    return record.sweep_name(named_sweep(config), task, axes, points)


def parent_params(config: DictConfig, points: int | None = None) -> dict[str, str]:
    """The parent run's params: `grid.<key>` = the values it varies over, the fixed overrides, `grid.points`."""
    axes, fixed = sweep_axes(config)
    return record.parent_params(axes, fixed, points)
