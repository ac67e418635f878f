"""The report's tables and sentences: the one-sentence answer, the ranked optimizers, the fairness line, the warnings
(unfinished sweep, best lr at the edge of the grid) and the per-batch-size summary. Numeric frames for CSV; the
`display_*` functions turn them into strings for HTML and Markdown."""

import math

import numpy as np
import pandas as pd

from harness.report import ranking, stats
from harness.report.load import Grid
from harness.report.view import TaskView, target_text
from harness.tracking import schema

TOTALS = ["trials", "completed", "diverged", "failed"]
SCORE_COLUMN = "score (95 % CI)"


def unfinished_banner(grid: Grid) -> str | None:
    """One paragraph for the top of the report of an unfinished sweep, or of a finished one whose grid has points
    without a result (failed or killed runs); None when every grid point is in."""
    if not grid.unfinished:
        return None
    size = "an unknown number of" if grid.size is None else f"{grid.size}"
    if grid.parent_status in (schema.RUNNING, schema.KILLED) or grid.running:
        parent = "still running" if grid.parent_status == schema.RUNNING else grid.parent_status.lower()
        text = f"Unfinished sweep (parent run {parent}): {grid.done} of {size} grid points are in."
    else:
        text = f"Incomplete grid: {grid.done} of {size} grid points have a result (the others failed or were killed)."
    if grid.running:
        text += f" {grid.running} run(s) still running are not compared."
    if grid.missing:
        text += (
            " Missing points: "
            + ", ".join(f"{name} {count}" for name, count in sorted(grid.missing.items()))
            + "."
        )
    if grid.detached:
        return (
            text
            + " Its pieces were left on the cluster (hydra.launcher.wait=false): the same sweep command run again"
            " records what they trained so far, and ends the sweep once every piece is in. Results below may change."
        )
    return (
        text
        + " Results below may change when the sweep completes (run the same sweep command again to resume)."
    )


def edge_of_grid(view: TaskView) -> list[str]:
    """A warning per optimizer whose best lr is the smallest or largest it tried: the optimum may lie outside."""
    warnings = []
    for row in view.best.itertuples():
        if row.lrs < 2 or pd.isna(row.val_loss_mean):
            continue
        side = "largest" if row.lr == row.lr_max else "smallest" if row.lr == row.lr_min else None
        if side is not None:
            beyond = "above" if side == "largest" else "below"
            warnings.append(
                f"{row.optimizer}'s best lr {row.lr:.3g} is the {side} it tried ({row.lr_min:.3g}–{row.lr_max:.3g}): "
                f"widen the grid {beyond} it, the best lr may lie outside."
            )
    return warnings


def fairness_line(view: TaskView) -> str:
    """One line: what every optimizer equally had, or what differed; then how many runs failed, if any."""
    totals = view.best.set_index("optimizer")
    checks = {"trials": "trials", "seed_set": "seeds", "budget_set": "step budgets"}
    unequal = [
        f"unequal {label} ("
        + "; ".join(f"{name}: {_set_text(value)}" for name, value in totals[column].items())
        + ")"
        for column, label in checks.items()
        if totals[column].nunique() > 1
    ]
    if unequal:
        line = "Unfair comparison: " + "; ".join(unequal) + "."
    else:
        first = totals.iloc[0]
        line = (
            f"Fair comparison: every optimizer had {first['trials']} trials, seeds {_set_text(first['seed_set'])} "
            f"and step budgets {_set_text(first['budget_set'])}."
        )
    return line + _failures(view.runs)


def _failures(runs: pd.DataFrame) -> str:
    """Failed runs are not compared (no result); say so, with the first error, so nobody misses them."""
    counts = schema.count_outcomes(runs["outcome"])
    lost = counts[schema.FAILED_OUTCOME] + counts[schema.KILLED_OUTCOME]
    if not lost:
        return ""
    failed = runs[runs["outcome"].isin(ranking.LOST)]
    first = failed["error"].dropna().loc[lambda s: s != ""].head(1).tolist()
    return f" {lost} run(s) failed and are not compared" + (f" (first error: {first[0]})." if first else ".")


def _set_text(value) -> str:
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}" if len(value) != 1 else str(value[0])
    return str(value)


def answer(view: TaskView) -> str:
    """One sentence: which optimizer, at which lr and batch size, did best on the task, and how clearly."""
    top = view.best.iloc[0]
    if pd.isna(top["val_loss_mean"]):
        return f"On {view.task}, no optimizer completed a run: every configuration diverged or failed."
    sentence = (
        f"On {view.task}, {top['optimizer']} at lr {top['lr']:.3g} and batch size {batch_text(top)} reached the "
        f"lowest final validation loss, {over_seeds(top)}"
    )
    if not math.isnan(top["val_acc_mean"]):
        sentence += f" (accuracy {top['val_acc_mean']:.1%})"
    if top["diverged_share"] > 0:
        sentence += f" (but it diverged on {top['config_diverged']} of {top['runs']} runs, as every setting did on some)"
    if len(view.best) > 1:
        sentence += "; " + _runner_up(top, view.best.iloc[1])
    return sentence + "."


def over_seeds(row: pd.Series) -> str:
    """ "0.12 ± 0.01 over 3 seeds", or "8.679, identical on all 3 seeds" when the seeds changed nothing."""
    if row.get("identical_seeds", False):
        runs, seeds = int(row["config_completed"]), int(row["seeds"])
        which = f"{seeds} seeds" if runs == seeds else f"{runs} runs ({seeds} seeds)"
        return f"{row['val_loss_mean']:.4g}, identical on all {which}"
    return f"{mean_std(row['val_loss_mean'], row['val_loss_std'])} over {row['seeds']} seed(s)"


def _runner_up(top: pd.Series, second: pd.Series) -> str:
    text = f"runner-up {second['optimizer']} (lr {second['lr']:.3g}, batch size {batch_text(second)}): "
    if second.get("identical_seeds", False):
        text += f"{second['val_loss_mean']:.4g}, identical on all its seeds"
    else:
        text += mean_std(second["val_loss_mean"], second["val_loss_std"])
    spread = np.nanmax([top["val_loss_std"], second["val_loss_std"], 0.0])
    close = abs(second["val_loss_mean"] - top["val_loss_mean"]) <= spread
    if second["diverged_share"] == top["diverged_share"] and close:
        text += ", within the seed-to-seed spread: not a clear win"
    return text


def identical_seeds(view: TaskView) -> list[str]:
    """A warning when configurations gave the identical final loss on every seed: the seed changes nothing there
    (a deterministic task), so their seeds add no information and a spread of 0 measures nothing."""
    repeated = view.configs[view.configs["completed"] >= 2]
    same = int(repeated["identical_seeds"].sum())
    if not same:
        return []
    scope = (
        f"in all {same} configurations with several completed seeds"
        if same == len(repeated)
        else f"in {same} of the {len(repeated)} configurations with several completed seeds"
    )
    return [
        f"Every seed gave the identical final validation loss {scope}: the seed changes nothing there (a "
        "deterministic task, e.g. a fixed start and full-batch data), so the seeds add no information and "
        "'± 0' is no measure of spread. Sweep what does change the result, or drop the extra seeds."
    ]


def table_notes(view: TaskView) -> list[str]:
    """What the ranked table's target columns mean: the target itself, and the clock of batched trials."""
    notes = [
        score_note(view),
        f"Steps and time to {target_text(view.runs)}: the first evaluation that met it.",
    ]
    trials = view.best["batch_trials"].dropna() if "batch_trials" in view.best else pd.Series(dtype=float)
    if (trials > 1).any():
        notes.append(
            "Time to target of a batched trial (hydra/launcher=batched) is its group's clock: the seconds all K "
            "trials of the group took together (shown as 'group of K'), not one trial's own time; compare it "
            "only with runs trained the same way, or use steps to target."
        )
    return notes


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


def _group(trials: float, value: float) -> str:
    """A batched trial's clock is its group's: say of how many trials, where there is a time."""
    return f" (group of {int(trials)})" if np.isfinite(value) and pd.notna(trials) and trials > 1 else ""


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    return rows[name] if name in rows else pd.Series(np.nan, index=rows.index)


def display_ranked(view: TaskView) -> pd.DataFrame:
    """The ranked table of one task, as strings."""
    rows = view.best
    table = pd.DataFrame(
        {
            "#": rows["rank"].astype(int).astype(str),
            "optimizer": rows["optimizer"],
            "best lr": rows["lr"].map(lambda v: f"{v:.3g}"),
            "batch size": rows.apply(batch_text, axis=1),
            "final val loss (mean ± std)": [
                mean_std(m, s) for m, s in zip(rows["val_loss_mean"], rows["val_loss_std"])
            ],
            SCORE_COLUMN: score_cells(view),
            "final val accuracy": [percent(m, s) for m, s in zip(rows["val_acc_mean"], rows["val_acc_std"])],
            "steps to target": [
                _to_target(v, r, n) for v, r, n in zip(rows["steps_to_target"], rows["reached"], rows["runs"])
            ],
            "time to target (s)": [
                _to_target(v, r, n, seconds=True) + _group(k, v)
                for v, r, n, k in zip(
                    rows["time_to_target_s"], rows["reached"], rows["runs"], _column(rows, "batch_trials")
                )
            ],
            "seeds": rows["seeds"].astype(str),
        }
    )
    for column in TOTALS:
        table[column] = rows[column].astype(int).astype(str)
    if rows["val_acc_mean"].isna().all():
        table = table.drop(columns=["final val accuracy"])
    return table.reset_index(drop=True)


def tuned_scores(view: TaskView) -> pd.DataFrame:
    """stats.analyse's scores of the task, one row per optimizer of the ranked table (`view.best`), in its order."""
    scores = view.analysis.scores.set_index("optimizer")
    return scores.reindex(view.best["optimizer"].to_numpy())


def score_cells(view: TaskView) -> list[str]:
    """Each ranked optimizer's tuned score and its bootstrap interval, "0.123 [0.119, 0.128]"; the configuration it
    is for when the bootstrap's choice (the lowest score) is not the ranked table's; "—" without a score."""
    cells = []
    for (_, row), (_, tuned) in zip(view.best.iterrows(), tuned_scores(view).iterrows()):
        if pd.isna(tuned["score"]):
            cells.append("—")
            continue
        text = f"{tuned['score']:.4g} [{tuned['score_lo']:.4g}, {tuned['score_hi']:.4g}]"
        if not _same_config(row, tuned):
            text += f" at lr {tuned['lr']:.3g}, batch size {batch_text(tuned)}"
        cells.append(text)
    return cells


def _same_config(row: pd.Series, tuned: pd.Series) -> bool:
    return all(
        (pd.isna(row[key]) and pd.isna(tuned[key])) or row[key] == tuned[key] for key in ("lr", "batch_size")
    )


def confidence(view: TaskView) -> str | None:
    """stats.headline for the task: how sure its winner is against the runner-up (None: one optimizer)."""
    return stats.headline(view.analysis.comparisons, view.task)


def score_note(view: TaskView) -> str:
    """What the score column is."""
    over = "interquartile mean" if view.method.aggregate == "iqm" else "mean"
    return (
        f"Score: the {over} over seeds of the final validation loss at the optimizer's best configuration "
        f"(diverged seeds as the untrained model), with its {100 * view.method.confidence:.0f} % bootstrap "
        "interval over seeds, the choice of configuration redone in every replicate (tuning noise included)."
    )


def summary(views: list[TaskView]) -> pd.DataFrame:
    """One row per task, optimizer and batch size: the best lr at that batch size, its results, and the run
    counts over every lr tried at that batch size (summary.csv)."""
    keys = ["task", "optimizer", "batch_size"]
    configs = pd.concat([view.configs for view in views], ignore_index=True)
    best = pd.concat([view.best_per_batch for view in views], ignore_index=True).sort_values(
        keys, kind="stable"
    )
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


RANKING_COLUMNS = {  # the ranked table as numbers (ranking.json, MLflow's table view): report column -> name
    "task": "task",
    "rank": "rank",
    "optimizer": "optimizer",
    "lr": "best_lr",
    "batch_size": "batch_size",
    "val_loss_mean": "final_val_loss_mean",
    "val_loss_std": "final_val_loss_std",
    "val_acc_mean": "final_val_accuracy_mean",
    "seeds": "seeds",
    "identical_seeds": "identical_seeds",
    "steps_to_target": "steps_to_target",
    "time_to_target_s": "time_to_target_s",
    "batch_trials": "batch_trials",
    "trials": "trials",
    "completed": "completed",
    "diverged": "diverged",
    "failed": "failed",
    "score": "score",  # stats.analyse: the tuned score, its interval, and the configuration it is for
    "score_lo": "score_lo",
    "score_hi": "score_hi",
    "score_lr": "score_lr",
    "score_batch_size": "score_batch_size",
    "aggregate": "aggregate",
}


def ranking_table(views: list[TaskView]) -> pd.DataFrame:
    """Every task's ranked optimizers (their best configurations) as numbers, tasks in order: what the HTML's
    ranked tables show. Never reached: an empty value (NaN), as in summary.csv."""
    best = pd.concat([_with_tuned(view) for view in views], ignore_index=True)
    for column in RANKING_COLUMNS:
        if column not in best:
            best[column] = np.nan
    table = best[list(RANKING_COLUMNS)].rename(columns=RANKING_COLUMNS)
    return table.replace([np.inf], np.nan).reset_index(drop=True)


def _with_tuned(view: TaskView) -> pd.DataFrame:
    tuned = tuned_scores(view).reset_index(drop=True)
    extra = tuned[["score", "score_lo", "score_hi", "lr", "batch_size", "aggregate"]].rename(
        columns={"lr": "score_lr", "batch_size": "score_batch_size"}
    )
    return pd.concat([view.best.reset_index(drop=True), extra], axis=1)
