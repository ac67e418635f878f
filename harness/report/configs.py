"""Runs grouped into configurations (task, optimizer, lr, batch size; seeds pooled), and which one is best.

The ranking rule, in order:
1. configurations that never diverged come first (the lower the share of diverged seeds, the better): one that
   diverges on some seeds is not a recommendation, however good its surviving seeds are. Failed runs (a crash,
   a missing device) say nothing about the optimizer and count neither way;
2. then the lowest mean final validation loss over seeds;
3. ties by mean wall-clock time of a run.
"""

import numpy as np
import pandas as pd

from harness.report.keys import COMPLETED, DIVERGED, FAILED, KILLED

CONFIG = ["task", "optimizer", "lr", "batch_size"]
RANK_BY = ["diverged_share", "val_loss_mean", "time_s_mean"]


def per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: run counts by outcome, and mean/std of the results over seeds."""
    frame = runs.assign(
        _completed=runs["outcome"] == COMPLETED,
        _diverged=runs["outcome"] == DIVERGED,
        _failed=runs["outcome"].isin([FAILED, KILLED]),
        _ok_loss=runs["final_val_loss"].where(runs["outcome"] == COMPLETED),
        _ok_acc=runs["final_val_accuracy"].where(runs["outcome"] == COMPLETED),
        _ok_time=runs["time_s"].where(runs["outcome"] == COMPLETED),
        _budget=_budget_score(runs),
        _to_target_steps=runs["steps_to_target"].fillna(np.inf),
        _to_target_s=runs["time_to_target_s"].fillna(np.inf),
        _reached=runs["steps_to_target"].notna(),
    )
    grouped = frame.groupby(CONFIG, dropna=False, observed=True, sort=True)
    table = grouped.agg(
        runs=("run_id", "size"),
        seeds=("seed", "nunique"),
        completed=("_completed", "sum"),
        diverged=("_diverged", "sum"),
        failed=("_failed", "sum"),
        val_loss_mean=("_ok_loss", "mean"),
        val_loss_std=("_ok_loss", "std"),
        val_acc_mean=("_ok_acc", "mean"),
        val_acc_std=("_ok_acc", "std"),
        time_s_mean=("_ok_time", "mean"),
        budget_score=("_budget", "mean"),
        reached=("_reached", "sum"),
        # Medians over all seeds, unreached counted as infinitely slow: a config that reaches the target on
        # one seed out of three has an infinite median, as it should.
        steps_to_target=("_to_target_steps", "median"),
        time_to_target_s=("_to_target_s", "median"),
        total_steps=("total_steps", "max"),
        batch_label=("batch_label", "first"),
    ).reset_index()
    finished = table["completed"] + table["diverged"]
    table["diverged_share"] = (table["diverged"] / finished).where(finished > 0)  # NaN: no run finished
    return table


def _budget_score(runs: pd.DataFrame) -> pd.Series:
    """What a trial is worth to a tuner: its final validation loss, or, if it did not complete, the loss of
    the untrained model (its initial validation loss; the task's worst one if even that is missing)."""
    fallback = runs["initial_val_loss"].fillna(runs.groupby("task")["initial_val_loss"].transform("max"))
    return runs["final_val_loss"].where(runs["outcome"] == COMPLETED, fallback)


def rank(configs: pd.DataFrame) -> pd.DataFrame:
    """The configurations in ranking order (see the module docstring), best first."""
    return configs.sort_values(RANK_BY, na_position="last", kind="stable")


def best_per(configs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The best configuration within each group of `by` (e.g. task + optimizer), groups ranked best first."""
    best = rank(configs).groupby(by, observed=True, sort=False).head(1)
    return best.reset_index(drop=True)


def best_per_optimizer(configs: pd.DataFrame) -> pd.DataFrame:
    """Each optimizer's best configuration on each task; within a task the optimizers are ranked, best first."""
    best = best_per(configs, ["task", "optimizer"])
    best = best.sort_values("task", kind="stable").reset_index(drop=True)
    best["rank"] = best.groupby("task").cumcount() + 1
    return best
