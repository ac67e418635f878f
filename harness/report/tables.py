"""The report's tables and sentences: the ranked optimizers, the per-batch-size summary, the fairness check and
the one-sentence answer. Numeric frames for CSV; `display_*` turn them into strings for HTML and Markdown."""

import math

import numpy as np
import pandas as pd

from harness.report.configs import best_per, best_per_optimizer
from harness.report.keys import COMPLETED, DIVERGED, FAILED, KILLED

TOTALS = ["trials", "completed", "diverged", "failed"]


def optimizer_totals(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and optimizer: runs by outcome over the whole grid, seeds, and step budgets."""
    frame = runs.assign(
        _completed=runs["outcome"] == COMPLETED,
        _diverged=runs["outcome"] == DIVERGED,
        _failed=runs["outcome"].isin([FAILED, KILLED]),
    )
    return (
        frame.groupby(["task", "optimizer"], observed=True)
        .agg(
            trials=("run_id", "size"),
            completed=("_completed", "sum"),
            diverged=("_diverged", "sum"),
            failed=("_failed", "sum"),
            seed_set=("seed", lambda s: tuple(sorted(s.dropna().unique()))),
            budget_set=("total_steps", lambda s: tuple(sorted(s.dropna().unique()))),
        )
        .reset_index()
    )


def ranked(configs: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each optimizer's best configuration per task, ranked, with its whole-grid run counts (`trials`,
    `completed`, `diverged`, `failed`); the best configuration's own counts are `config_*`."""
    counts = {column: f"config_{column}" for column in ("completed", "diverged", "failed")}
    best = best_per_optimizer(configs).rename(columns=counts)
    return best.merge(optimizer_totals(runs), on=["task", "optimizer"], how="left")


def summary(configs: pd.DataFrame) -> pd.DataFrame:
    """One row per task, optimizer and batch size: the best lr at that batch size, its results, and the run
    counts over every lr tried at that batch size (summary.csv)."""
    keys = ["task", "optimizer", "batch_size"]
    best = best_per(configs, keys).sort_values(keys, kind="stable")
    counts = configs.groupby(keys, observed=True, dropna=False).agg(
        lrs_tried=("lr", "nunique"),
        trials=("runs", "sum"),
        completed=("completed", "sum"),
        diverged=("diverged", "sum"),
        failed=("failed", "sum"),
    )
    columns = {
        "batch_label": "batch_size_config",
        "lr": "best_lr",
        "val_loss_mean": "final_val_loss_mean",
        "val_loss_std": "final_val_loss_std",
        "val_acc_mean": "final_val_accuracy_mean",
        "val_acc_std": "final_val_accuracy_std",
        "seeds": "seeds_at_best_lr",
        "reached": "reached_target_at_best_lr",
        "steps_to_target": "steps_to_target_median",
        "time_to_target_s": "time_to_target_s_median",
        "total_steps": "step_budget",
    }
    table = (
        best[keys + list(columns)].rename(columns=columns).merge(counts.reset_index(), on=keys, how="left")
    )
    return table.replace([np.inf], np.nan).reset_index(drop=True)  # CSV: an empty cell for "never reached"


def fairness(runs: pd.DataFrame, task: str) -> list[str]:
    """Warnings when the optimizers on `task` did not get the same trials, seeds or step budgets (empty: fair)."""
    totals = optimizer_totals(runs[runs["task"] == task]).set_index("optimizer")
    checks = {"trials": "trials", "seed_set": "seeds", "budget_set": "step budgets"}
    warnings = []
    for column, label in checks.items():
        values = totals[column]
        if values.nunique() > 1:
            shown = "; ".join(f"{name}: {_describe_set(value)}" for name, value in values.items())
            warnings.append(f"unequal {label} ({shown})")
    return warnings


def fairness_line(runs: pd.DataFrame, task: str) -> str:
    """One line: the warnings, or what every optimizer equally had; then how many runs failed, if any."""
    return _fairness(runs, task) + _failures(runs[runs["task"] == task])


def _fairness(runs: pd.DataFrame, task: str) -> str:
    warnings = fairness(runs, task)
    if warnings:
        return "Unfair comparison: " + "; ".join(warnings) + "."
    totals = optimizer_totals(runs[runs["task"] == task]).iloc[0]
    seeds, budgets = _describe_set(totals["seed_set"]), _describe_set(totals["budget_set"])
    trials = totals["trials"]
    return f"Fair comparison: every optimizer had {trials} trials, seeds {seeds} and step budgets {budgets}."


def _failures(runs: pd.DataFrame) -> str:
    """Failed runs are not compared (no result); say so, with the first error, so nobody misses them."""
    failed = runs[runs["outcome"].isin([FAILED, KILLED])]
    if failed.empty:
        return ""
    errors = failed["error"].dropna()
    first = errors[errors != ""].head(1).tolist()
    return f" {len(failed)} run(s) failed and are not compared" + (
        f" (first error: {first[0]})." if first else "."
    )


def _describe_set(value) -> str:
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}" if len(value) != 1 else str(value[0])
    return str(value)


def answer(best: pd.DataFrame, task: str) -> str:
    """One sentence: which optimizer, at which lr and batch size, did best on `task`, and how clearly."""
    rows = best[best["task"] == task].sort_values("rank")
    top = rows.iloc[0]
    if pd.isna(top["val_loss_mean"]):
        return f"On {task}, no optimizer completed a run: every configuration diverged or failed."
    loss = mean_std(top["val_loss_mean"], top["val_loss_std"])
    sentence = (
        f"On {task}, {top['optimizer']} at lr {top['lr']:.3g} and batch size {batch_text(top)} reached the "
        f"lowest final validation loss, {loss} over {top['seeds']} seed(s)"
    )
    if not math.isnan(top["val_acc_mean"]):
        sentence += f" (accuracy {top['val_acc_mean']:.1%})"
    if top["diverged_share"] > 0:
        sentence += f" (but it diverged on {top['config_diverged']} of {top['runs']} runs, as every setting did on some)"
    if len(rows) > 1:
        sentence += "; " + _runner_up(top, rows.iloc[1])
    return sentence + "."


def _runner_up(top: pd.Series, second: pd.Series) -> str:
    text = f"runner-up {second['optimizer']} (lr {second['lr']:.3g}, batch size {batch_text(second)}): "
    text += mean_std(second["val_loss_mean"], second["val_loss_std"])
    spread = np.nanmax([top["val_loss_std"], second["val_loss_std"], 0.0])
    if (
        second["diverged_share"] == top["diverged_share"]
        and abs(second["val_loss_mean"] - top["val_loss_mean"]) <= spread
    ):
        text += ", within the seed-to-seed spread: not a clear win"
    return text


def batch_text(row: pd.Series) -> str:
    """32, or "full (1437)" for full-batch runs."""
    size = "?" if pd.isna(row["batch_size"]) else str(int(row["batch_size"]))
    return f"full ({size})" if str(row.get("batch_label")) == "full" else size


def mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.4g}" if pd.isna(std) else f"{mean:.4g} ± {std:.2g}"


def percent(mean: float, std: float) -> str:
    """An accuracy as 95.1% ± 0.99."""
    if pd.isna(mean):
        return "—"
    return f"{mean:.1%}" if pd.isna(std) else f"{mean:.1%} ± {100 * std:.2g}"


def _to_target(value: float, reached: int, runs: int, seconds: bool = False) -> str:
    if not np.isfinite(value):
        return f"not reached ({reached}/{runs})"
    number = f"{value:.3g}" if seconds else f"{value:.0f}"
    return number if reached == runs else f"{number} ({reached}/{runs} reached)"


def display_ranked(best: pd.DataFrame, task: str) -> pd.DataFrame:
    """The ranked table of one task, as strings."""
    rows = best[best["task"] == task].sort_values("rank")
    table = pd.DataFrame(
        {
            "#": rows["rank"].astype(int).astype(str),
            "optimizer": rows["optimizer"],
            "best lr": rows["lr"].map(lambda v: f"{v:.3g}"),
            "batch size": rows.apply(batch_text, axis=1),
            "final val loss (mean ± std)": [
                mean_std(m, s) for m, s in zip(rows["val_loss_mean"], rows["val_loss_std"])
            ],
            "final val accuracy": [percent(m, s) for m, s in zip(rows["val_acc_mean"], rows["val_acc_std"])],
            "steps to target": [
                _to_target(v, r, n) for v, r, n in zip(rows["steps_to_target"], rows["reached"], rows["runs"])
            ],
            "time to target (s)": [
                _to_target(v, r, n, seconds=True)
                for v, r, n in zip(rows["time_to_target_s"], rows["reached"], rows["runs"])
            ],
            "seeds": rows["seeds"].astype(str),
        }
    )
    for column in TOTALS:
        table[column] = rows[column].astype(int).astype(str)
    if rows["val_acc_mean"].isna().all():
        table = table.drop(columns=["final val accuracy"])
    return table.reset_index(drop=True)


def display_summary(table: pd.DataFrame) -> pd.DataFrame:
    """summary() as strings for the HTML/Markdown appendix."""
    return pd.DataFrame(
        {
            "task": table["task"],
            "optimizer": table["optimizer"],
            "batch size": table["batch_size"].map(lambda v: "?" if pd.isna(v) else str(int(v))),
            "best lr": table["best_lr"].map(lambda v: f"{v:.3g}"),
            "final val loss": [
                mean_std(m, s) for m, s in zip(table["final_val_loss_mean"], table["final_val_loss_std"])
            ],
            "trials": table["trials"].astype(str),
            "diverged": table["diverged"].astype(str),
            "failed": table["failed"].astype(str),
        }
    )
