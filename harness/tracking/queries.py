"""Reading sweeps back: a child run's outcome, the latest run per grid point, what a run says about its trial, and
the ranking of configurations.

Pure functions over the runs a Store returns (harness.tracking.port.StoredRun) or over plain rows (dicts), shared by
the sweep (resume, the end-of-sweep counts and headline) and the report, so both read the store and rank the same way.

The ranking (`rank_configurations`, the one definition; the report's tables and the sweep's headline call it):
- a configuration is a (task, optimizer, lr, batch size); its seeds are its grid points (the latest run of each);
- its score is the mean over its completed seeds of the final validation loss;
- configurations rank by the share of their finished seeds that diverged (none first: one that diverges on some
  seeds is not a recommendation, however good its surviving seeds are), then by the score, then by the mean
  wall-clock time of its completed runs; failed and killed runs say nothing about the optimizer and count neither way;
- an optimizer's best configuration is its first in that order (`best_per_optimizer`), and a task's headline is the
  best configuration of the task, its score the headline's number (`headlines`).
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.tracking import schema
from harness.tracking.port import StoredRun

CONFIG_KEYS = ("task", "optimizer", "lr", "batch_size")
NAN = float("nan")


def child_outcome(run: StoredRun) -> schema.ChildOutcome:
    tags = run.data.tags
    return schema.ChildOutcome(
        run_id=run.info.run_id,
        config_hash=tags.get(schema.CONFIG_HASH, ""),
        outcome=schema.outcome(run.info.status, tags),
        overrides=tags.get(schema.OVERRIDES, ""),
        error=tags.get(schema.ERROR, ""),
        final_val_loss=run.data.metrics.get(schema.FINAL_VAL_LOSS),
        start_time=run.info.start_time,
        pruned=_pruned(tags),
    )


def _pruned(tags: Mapping[str, str]) -> schema.Pruned | None:
    rung, step = number(tags.get(schema.RUNG), int), number(tags.get(schema.PRUNED_AT), int)
    if tags.get(schema.STATUS) != schema.PRUNED or rung is None or step is None:
        return None
    return schema.Pruned(rung, step)


def latest_per_grid_point(runs: list[StoredRun]) -> dict[str, StoredRun]:
    """One run per grid point (config hash; the run id when it has none): the latest started, so re-runs replace
    the failures they repeat."""
    latest: dict[str, StoredRun] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[run.data.tags.get(schema.CONFIG_HASH) or run.info.run_id] = run
    return latest


# --- a run as a trial -----------------------------------------------------------------------------------------------


def trial_row(run: StoredRun) -> dict[str, Any]:
    """What a run says about its trial, as plain values (None where it does not say): identity, configuration
    (CONFIG_KEYS, lr the effective one), seed, outcome and results. The rows `rank_configurations` takes."""
    info, params, tags, metrics = run.info, run.data.params, run.data.tags, run.data.metrics
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "outcome": schema.outcome(info.status, tags),
        "start_time": info.start_time,
        "end_time": info.end_time,
        "task": params.get("task.name") or tags.get(schema.TASK),
        "optimizer": params.get("optimizer.name") or tags.get(schema.OPTIMIZER),
        "lr": effective_lr(params),
        "batch_size": number(params.get(schema.RESOLVED_BATCH_SIZE) or params.get("data.batch_size"), int),
        "batch_label": params.get("data.batch_size"),
        "steps_per_epoch": number(params.get(schema.RESOLVED_STEPS_PER_EPOCH), float),
        "total_steps": number(params.get(schema.RESOLVED_TOTAL_STEPS), int),
        "seed": number(params.get("seed"), int),
        "config_hash": tags.get(schema.CONFIG_HASH, ""),
        "error": tags.get(schema.ERROR, ""),
        "final_val_loss": metrics.get(schema.FINAL_VAL_LOSS),
        "final_val_accuracy": metrics.get(schema.FINAL_VAL_ACCURACY),
        "time_s": metrics.get(schema.TOTAL_S),
        "steps_to_target": metrics.get(schema.STEPS_TO_TARGET),
        "time_to_target_s": metrics.get(schema.TIME_TO_TARGET_S),
        "batch_trials": number(tags.get(schema.BATCH_TRIALS), int),
        "target": params.get(schema.RESOLVED_TARGET),
    }


def effective_lr(params: Mapping[str, str]) -> float | None:
    """resolved.lr; runs refused before it was logged: optimizer.lr x optimizer.lr_scale."""
    lr = number(params.get(schema.RESOLVED_LR), float)
    if lr is None:
        base, scale = (
            number(params.get("optimizer.lr"), float),
            number(params.get("optimizer.lr_scale"), float),
        )
        lr = None if base is None else base * (scale or 1.0)
    return lr


def number(text: str | None, kind: type) -> int | float | None:
    """int("32") or float("0.1"); None for missing or non-numeric text ("full", "None", "unknown")."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return int(value) if kind is int else value


# --- the ranking ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """One configuration scored over its seeds."""

    task: str | None
    optimizer: str | None
    lr: float | None
    batch_size: int | None
    runs: int  # its grid points, whatever their outcome
    completed: int
    diverged: int
    diverged_share: float  # diverged / (completed + diverged); NaN when none finished
    val_loss_mean: (
        float  # the score: mean final validation loss over completed seeds; NaN when none completed
    )
    time_s_mean: float  # mean wall-clock of its completed runs (the tie-break); NaN when unknown
    rank: int  # 1 = the best configuration of all the rows given


@dataclass(frozen=True)
class Headline:
    """A task's answer: its best configuration and that configuration's score (the headline's number)."""

    task: str | None
    optimizer: str | None
    lr: float | None
    batch_size: int | None
    val_loss: float  # mean final validation loss over the configuration's completed seeds
    seeds: int  # completed seeds behind that mean


def rank_configurations(rows: Iterable[Mapping[str, Any]]) -> list[Configuration]:
    """Every configuration of `rows` (one row per grid point: CONFIG_KEYS, outcome, final_val_loss, time_s), best
    first by the ranking rule of this module's docstring; equal ones in the order of their keys (missing last).

    Args:
        rows: e.g. `trial_row(run)` of the latest run per grid point; None or NaN where a value is unknown.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(_plain(row.get(key)) for key in CONFIG_KEYS), []).append(row)
    scored = [
        _score(key, members) for key, members in sorted(groups.items(), key=lambda item: _key_order(item[0]))
    ]
    ordered = sorted(
        scored, key=lambda c: (_last(c.diverged_share), _last(c.val_loss_mean), _last(c.time_s_mean))
    )
    return [replace(c, rank=i) for i, c in enumerate(ordered, start=1)]


def best_per_optimizer(ranked: Sequence[Configuration]) -> list[Configuration]:
    """Each (task, optimizer)'s best configuration, in ranking order."""
    seen: set[tuple] = set()
    best = []
    for configuration in ranked:
        if (configuration.task, configuration.optimizer) not in seen:
            seen.add((configuration.task, configuration.optimizer))
            best.append(configuration)
    return best


def headlines(rows: Iterable[Mapping[str, Any]]) -> dict[str | None, Headline]:
    """Per task, its best configuration with a score (none for a task where nothing completed)."""
    found: dict[str | None, Headline] = {}
    for c in rank_configurations(rows):
        if c.task not in found and not math.isnan(c.val_loss_mean):
            found[c.task] = Headline(c.task, c.optimizer, c.lr, c.batch_size, c.val_loss_mean, c.completed)
    return found


def _score(key: tuple, members: list[Mapping[str, Any]]) -> Configuration:
    counts = schema.count_outcomes(row.get("outcome") for row in members)
    done = [row for row in members if row.get("outcome") == schema.COMPLETED]
    finished = counts[schema.COMPLETED] + counts[schema.DIVERGED]
    return Configuration(
        *key,
        runs=counts["total"],
        completed=counts[schema.COMPLETED],
        diverged=counts[schema.DIVERGED],
        diverged_share=counts[schema.DIVERGED] / finished if finished else NAN,
        val_loss_mean=_mean(row.get("final_val_loss") for row in done),
        time_s_mean=_mean(row.get("time_s") for row in done),
        rank=0,
    )


def _mean(values: Iterable[Any]) -> float:
    """The mean of the known values (None and NaN skipped), exactly rounded; NaN when there are none."""
    known = [float(v) for v in values if _plain(v) is not None]
    return math.fsum(known) / len(known) if known else NAN


def _plain(value: Any) -> Any:
    """None for a missing value however it is spelt (None, NaN, pandas' NA: the one value unequal to itself or
    without a truth value)."""
    if value is None:
        return None
    try:
        return None if value != value else value
    except TypeError:  # pandas.NA refuses to be a bool
        return None


def _key_order(key: tuple) -> tuple:
    return tuple((value is None, value if value is not None else 0) for value in key)


def _last(value: float) -> tuple[bool, float]:
    """NaN sorts after every number."""
    return (True, 0.0) if math.isnan(value) else (False, value)
