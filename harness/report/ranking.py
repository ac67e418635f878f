"""Runs grouped into configurations (task, optimizer, lr, batch size; seeds pooled), which one is best, and each
optimizer's time to target.

The ranking is harness.tracking.queries.rank_configurations, the one definition the sweep's headline uses too:
configurations that never diverged first (the lower the share of diverged seeds, the better), then the lowest mean
final validation loss over completed seeds, ties by mean wall-clock time; failed and killed runs count neither way.
This module adds what the report shows beside it (spread, accuracy, budget score, times to target, counts), and the
performance profile of those times (Dolan & Moré, 2002: `ratios`, `profile`; figures.target draws it, stats
resamples it).
"""

import numpy as np
import pandas as pd

from harness.tracking import queries, schema

CONFIG = ["task", "optimizer", "lr", "batch_size"]
RANK_BY = ["diverged_share", "val_loss_mean", "time_s_mean"]
TARGET_COLUMNS = ["steps_to_target", "time_to_target_s"]
LOST = (
    schema.FAILED_OUTCOME,
    schema.KILLED_OUTCOME,
)  # runs without a result that says anything about the optimizer

# How an optimizer's time to target is aggregated over its grid (the report names the rule it used).
DEFAULT_RULE = "median-seeds"
TARGET_RULES = {
    "median-seeds": "per configuration the median over seeds (a seed that never reached it counts as infinitely "
    "slow), then the optimizer's fastest configuration",
    "algoperf": "AlgoPerf's rule: per seed (a study) the fastest configuration (trial), then the median over seeds",
}


def per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: run counts by outcome, mean/std of the results over seeds, and its place in the
    ranking (`rank_order`). The score, the diverged share and the tie-break come from
    harness.tracking.queries.rank_configurations: the one definition, which the sweep's headline uses too."""
    completed = runs["outcome"] == schema.COMPLETED
    frame = runs.assign(
        _ok_loss=runs["final_val_loss"].where(completed),
        _ok_acc=_column(runs, "final_val_accuracy").where(completed),
        _budget=_budget_score(runs),
        _to_target_steps=_column(runs, "steps_to_target").fillna(np.inf),
        _to_target_s=_column(runs, "time_to_target_s").fillna(np.inf),
        _reached=_column(runs, "steps_to_target").notna(),
        _total_steps=_column(runs, "total_steps"),
        _batch_label=_column(runs, "batch_label", "object"),
        _batch_trials=_column(runs, "batch_trials"),
    )
    table = (
        frame.groupby(CONFIG, dropna=False, observed=True, sort=True)
        .agg(
            seeds=("seed", "nunique"),
            val_loss_std=("_ok_loss", "std"),
            val_loss_distinct=("_ok_loss", "nunique"),
            val_loss_count=("_ok_loss", "count"),
            val_acc_mean=("_ok_acc", "mean"),
            val_acc_std=("_ok_acc", "std"),
            budget_score=("_budget", "mean"),
            reached=("_reached", "sum"),
            # Medians over all seeds, unreached counted as infinitely slow: a config that reaches the target on
            # one seed out of three has an infinite median, as it should.
            steps_to_target=("_to_target_steps", "median"),
            time_to_target_s=("_to_target_s", "median"),
            total_steps=("_total_steps", "max"),
            batch_label=("_batch_label", "first"),
            batch_trials=("_batch_trials", "max"),  # K of a batched group (its clock is the group's)
        )
        .reset_index()
    )
    table = pd.concat([table, outcome_counts(runs, CONFIG)], axis=1)  # both in the groupby's order
    # Every completed seed gave the same final loss: the seed changes nothing (a deterministic task).
    table["identical_seeds"] = (table.pop("val_loss_count") >= 2) & (table.pop("val_loss_distinct") == 1)
    return _with_scores(table, runs)


def _with_scores(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The ranking's own columns, from the one definition (queries.rank_configurations), joined on CONFIG."""
    rows = _plain(runs[[*CONFIG, "outcome", "final_val_loss"]].assign(time_s=_column(runs, "time_s")))
    scores = {
        (c.task, c.optimizer, c.lr, c.batch_size): (c.diverged_share, c.val_loss_mean, c.time_s_mean, c.rank)
        for c in queries.rank_configurations(rows)
    }
    found = np.array([scores[tuple(key.values())] for key in _plain(table[CONFIG])], dtype=float).reshape(
        -1, 4
    )
    for i, column in enumerate(RANK_BY):
        table[column] = found[:, i]
    table["rank_order"] = found[:, 3].astype("int64")
    return table


def _plain(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain values, None where missing (NaN, pandas' NA)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _column(runs: pd.DataFrame, name: str, dtype: str = "float64") -> pd.Series:
    """A column of the runs frame, or NaNs where a frame (e.g. one built by hand) lacks it."""
    return runs[name] if name in runs else pd.Series(np.nan, index=runs.index, dtype=dtype)


def _budget_score(runs: pd.DataFrame) -> pd.Series:
    """What a trial is worth to a tuner: its final validation loss, or, if it did not complete, the loss of
    the untrained model (its initial validation loss; the task's worst one if even that is missing)."""
    fallback = runs["initial_val_loss"].fillna(runs.groupby("task")["initial_val_loss"].transform("max"))
    return runs["final_val_loss"].where(runs["outcome"] == schema.COMPLETED, fallback)


def rank(configs: pd.DataFrame) -> pd.DataFrame:
    """The configurations in ranking order (see the module docstring), best first."""
    return configs.sort_values("rank_order", kind="stable")


def best_per(configs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The best configuration within each group of `by` (e.g. task + optimizer), groups ranked best first."""
    return rank(configs).groupby(by, observed=True, sort=False).head(1).reset_index(drop=True)


def outcome_counts(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `by` (in groupby order, missing keys a group of their own): runs, completed, diverged and failed
    (failed or killed), as schema.count_outcomes counts them (every outcome counts in `runs`)."""
    outcome = runs["outcome"].astype("object")
    flags = pd.DataFrame(
        {
            "runs": 1,
            "completed": (outcome == schema.COMPLETED).astype("int64"),
            "diverged": (outcome == schema.DIVERGED).astype("int64"),
            "failed": outcome.isin([schema.FAILED_OUTCOME, schema.KILLED_OUTCOME]).astype("int64"),
        },
        index=runs.index,
    )
    keys = [runs[column] for column in by]
    counts = flags.groupby(keys, dropna=False, observed=True, sort=True).sum()
    return counts.reset_index(drop=True).astype("int64")


def optimizer_totals(runs: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: runs by outcome over the whole grid, seeds, step budgets and the lrs tried."""
    counts = outcome_counts(runs, ["optimizer"]).rename(columns={"runs": "trials"})
    sets = runs.groupby("optimizer", dropna=False, observed=True, sort=True).agg(
        seed_set=("seed", lambda s: tuple(sorted(s.dropna().unique()))),
        budget_set=("total_steps", lambda s: tuple(sorted(s.dropna().unique()))),
        lr_min=("lr", "min"),
        lr_max=("lr", "max"),
        lrs=("lr", "nunique"),
    )
    return pd.concat([sets.reset_index(), counts], axis=1)  # both in the groupby's order


def ranked(configs: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each optimizer's best configuration (one task), ranked, with its whole-grid run counts (`trials`,
    `completed`, `diverged`, `failed`, the lr range); the best configuration's own counts are `config_*`."""
    counts = {column: f"config_{column}" for column in ("completed", "diverged", "failed")}
    best = best_per(configs, ["task", "optimizer"]).rename(columns=counts)
    best["rank"] = np.arange(1, len(best) + 1)
    return best.merge(optimizer_totals(runs), on="optimizer", how="left")


def target_times(runs: pd.DataFrame, configs: pd.DataFrame, rule: str = "median-seeds") -> pd.DataFrame:
    """task, optimizer, steps_to_target, time_to_target_s: each optimizer's time to target under `rule`
    (TARGET_RULES; inf: never reached). A time of 0 (the initial model already met the target) is reached."""
    if rule == "median-seeds":
        return configs.groupby(["task", "optimizer"], observed=True)[TARGET_COLUMNS].min().reset_index()
    trials = runs.assign(**{column: runs[column].fillna(np.inf) for column in TARGET_COLUMNS})
    fastest = trials.groupby(["task", "optimizer", "seed"], observed=True)[TARGET_COLUMNS].min()
    return fastest.groupby(["task", "optimizer"], observed=True).median().reset_index()


def ratios(times: pd.DataFrame, column: str = "time_to_target_s") -> pd.DataFrame:
    """task, optimizer, time, ratio to the task's fastest optimizer (inf: never, or later than a fastest time 0)."""
    table = times[["task", "optimizer", column]].rename(columns={column: "time"})
    best = table.groupby("task", observed=True)["time"].transform("min").to_numpy()
    time = table["time"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(time == best, 1.0, time / best)  # 0/0: the fastest itself, at 0
    ratio = np.where(np.isfinite(time) & np.isfinite(ratio), ratio, np.inf)
    return table.assign(ratio=ratio)


def profile(ratio_table: pd.DataFrame) -> pd.DataFrame:
    """optimizer, tau, rho: a step function (draw with steps-post) from tau = 1 past the largest finite ratio."""
    finite = ratio_table.loc[np.isfinite(ratio_table["ratio"]), "ratio"]
    top = max(2.0, float(finite.max()) * 1.5) if len(finite) else 2.0
    taus = np.unique(np.concatenate([[1.0, top], finite.to_numpy()]))
    tasks = ratio_table["task"].nunique()
    parts = []
    for optimizer, group in ratio_table.groupby("optimizer", observed=True, sort=True):
        rho = (group["ratio"].to_numpy()[None, :] <= taus[:, None]).sum(axis=1) / tasks
        parts.append(pd.DataFrame({"optimizer": optimizer, "tau": taus, "rho": rho}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["optimizer", "tau", "rho"])
