"""What the report knows about one task, computed once: its runs, configurations, ranking, warnings and pooled
curves. Every table and figure of the task receives this view and filters nothing again.

The curves are read and pooled here, for the runs the figures show (each optimizer's best configuration and its
best lr per batch size, every seed), with one read of the histories for all tasks.
"""

from dataclasses import dataclass

import pandas as pd

from harness.report import curves, ranking, stats
from harness.report.load import SweepData
from harness.tracking import schema

CURVE_KEYS = (schema.TRAIN_LOSS, schema.VAL_LOSS)
CURVE_COLUMNS = ["metric", "axis", "batch_size", "optimizer", *curves.BAND]


@dataclass(frozen=True)
class TaskView:
    task: str
    runs: pd.DataFrame  # the task's runs that ended (running ones are not compared)
    configs: pd.DataFrame  # ranking.per_config
    best: (
        pd.DataFrame
    )  # ranking.ranked: each optimizer's best configuration, best first, with whole-grid totals
    best_per_batch: pd.DataFrame  # each optimizer's best lr at each batch size
    curves: pd.DataFrame  # pooled: CURVE_COLUMNS; batch_size NaN on the best-configuration curves
    targets: pd.DataFrame  # ranking.target_times under the report's rule
    colours: dict  # optimizer -> colour, the same in every figure of the report
    rule: str = ranking.DEFAULT_RULE  # how `targets` aggregates times (ranking.TARGET_RULES)
    method: stats.Method = stats.DEFAULT_METHOD  # how the intervals below are computed
    analysis: stats.Analysis | None = None  # stats.analyse of `runs` (computed when not given)
    tuning: pd.DataFrame | None = None  # stats.tuning_intervals of `runs` (analysis.tuning when not given)

    def __post_init__(self):
        # Computed here, once per view, before the figures are drawn in worker processes that read them.
        if self.analysis is None:
            object.__setattr__(self, "analysis", stats.analyse(self.runs, self.method))
        if self.tuning is None:
            object.__setattr__(self, "tuning", self.analysis.tuning)

    @property
    def present(self) -> dict:
        """The colours of this task's optimizers, in name order."""
        names = set(self.runs["optimizer"])
        return {name: colour for name, colour in self.colours.items() if name in names}


def task_views(
    data: SweepData, colours: dict, rule: str, method: stats.Method = stats.DEFAULT_METHOD
) -> list[TaskView]:
    """One view per task, tasks in name order; the curves' histories are read once, for all of them; each view's
    intervals are computed with `method`."""
    # Running runs are not compared yet, pruned ones never: they stopped at a rung (counted and drawn in the race).
    ended = data.runs[~data.runs["outcome"].isin([schema.RUNNING_OUTCOME, schema.PRUNED])]
    parts = []
    for task, runs in ended.groupby("task", sort=True):
        configs = ranking.per_config(runs)
        best = ranking.ranked(configs, runs)
        per_batch = ranking.best_per(configs, ["task", "optimizer", "batch_size"])
        parts.append((task, runs, configs, best, per_batch))
    shown = [_chosen(runs, chosen) for _, runs, _, best, per_batch in parts for chosen in (best, per_batch)]
    histories = data.histories(pd.concat(shown)["run_id"].unique()) if shown else None
    return [
        TaskView(
            task=task,
            runs=runs,
            configs=configs,
            best=best,
            best_per_batch=per_batch,
            curves=_pooled(histories, runs, best, per_batch),
            targets=ranking.target_times(runs, configs, rule),
            colours=colours,
            rule=rule,
            method=method,
        )
        for task, runs, configs, best, per_batch in parts
    ]


def _chosen(runs: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The runs (all seeds) of the chosen configurations."""
    return runs.merge(chosen[ranking.CONFIG].drop_duplicates(), on=ranking.CONFIG, how="inner")


def _pooled(
    histories: pd.DataFrame, runs: pd.DataFrame, best: pd.DataFrame, per_batch: pd.DataFrame
) -> pd.DataFrame:
    """The convergence curves: the best configurations on every clock, and the best per batch size on samples."""
    shown = _chosen(runs, pd.concat([best, per_batch]))
    placed = {key: curves.points(histories, shown, key) for key in CURVE_KEYS}
    parts = []
    curve_sets = (
        (best, list(curves.AXES), ["optimizer"]),
        (per_batch, ["samples"], ["batch_size", "optimizer"]),
    )
    for chosen, axes, groups in curve_sets:
        labels = _chosen(runs, chosen)[["run_id", *groups]].astype({"run_id": str})
        for key in CURVE_KEYS:
            frame = placed[key].merge(labels, on="run_id")
            for axis in axes:
                pooled = curves.pool(frame, axis, groups)
                if not pooled.empty:  # e.g. no epochs: runs shorter than one epoch
                    parts.append(pooled.assign(metric=key, axis=axis))
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    if "batch_size" not in frame:
        frame["batch_size"] = pd.NA
    return frame[CURVE_COLUMNS]


def target_text(runs: pd.DataFrame) -> str:
    """The target as the runs recorded it ("target val/accuracy >= 0.95"), or what is known when they did not."""
    targets = sorted(runs["target"].dropna().unique()) if "target" in runs else []
    return f"target {' or '.join(targets)}" if targets else "the task's target (not recorded by these runs)"
