"""Time to target per optimizer (steps and seconds), and performance profiles across tasks."""

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report import profiles
from harness.report.figures.style import log_ticks, new_figure, optimizer_legend, styled

PANELS = {
    "steps_to_target": "optimizer steps to reach the target (log scale)",
    "time_to_target_s": "seconds to reach the target (log scale)",
}


def time_to_target_figure(runs: pd.DataFrame, configs: pd.DataFrame, colours: dict) -> Figure:
    """Two panels (steps, seconds): every run that reached the task's target (points) and, per optimizer, its
    fastest configuration's median over seeds (black bar); under each optimizer, how many runs reached it."""
    optimizers = sorted(runs["optimizer"].unique())
    present = {name: colours[name] for name in optimizers}
    with styled():
        figure = new_figure(max(7.0, 1.6 * len(optimizers) * 2 + 2), 4.6)
        for ax, (column, label) in zip(figure.subplots(1, 2), PANELS.items()):
            _panel(ax, runs, configs, column, optimizers, present)
            ax.set_ylabel(label)
        figure.suptitle(
            "Time to target: points are runs that reached it, bars the fastest configuration (median)"
        )
        optimizer_legend(figure, present)
    return figure


def _panel(
    ax: Axes, runs: pd.DataFrame, configs: pd.DataFrame, column: str, order: list[str], colours: dict
) -> None:
    reached = runs[runs[column].notna() & (runs[column] > 0)]
    if reached.empty:
        ax.text(
            0.5,
            0.5,
            "no run reached the target",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
        )
        ax.set_xticks(range(len(order)), order)
        return
    sns.stripplot(
        data=reached,
        x="optimizer",
        y=column,
        hue="optimizer",
        order=order,
        palette=colours,
        ax=ax,
        legend=False,
        alpha=0.6,
        size=4,
        jitter=0.2,
    )
    fastest = configs.groupby("optimizer", observed=True)[column].min()
    for position, name in enumerate(order):
        value = fastest.get(name, np.inf)
        if np.isfinite(value):
            ax.hlines(value, position - 0.35, position + 0.35, color="black", lw=2.5, zorder=5)
    ax.set_yscale("log")
    log_ticks(ax)
    counts = runs.groupby("optimizer", observed=True).agg(n=("run_id", "size"), hit=(column, "count"))
    labels = [f"{name}\n{counts.loc[name, 'hit']}/{counts.loc[name, 'n']} reached" for name in order]
    ax.set_xticks(range(len(order)), labels)
    ax.set_xlabel("")


def profile_figure(configs: pd.DataFrame, colours: dict) -> Figure:
    """Performance profiles over the tasks, in seconds and in steps: rho(tau), the share of tasks on which the
    optimizer reaches the target within tau x the fastest optimizer's time."""
    present = {name: colours[name] for name in sorted(configs["optimizer"].unique())}
    tasks = configs["task"].nunique()
    with styled():
        figure = new_figure(11.0, 4.6)
        for ax, column in zip(figure.subplots(1, 2, sharey=True), ("time_to_target_s", "steps_to_target")):
            curves = profiles.profile(profiles.ratios(configs, column))
            for name, curve in curves.groupby("optimizer", observed=True):
                ax.step(curve["tau"], curve["rho"], where="post", color=present[name], lw=2)
            ax.set_xscale("log")
            log_ticks(ax, "x")
            ax.set_ylim(-0.02, 1.05)
            unit = profiles.TIME_COLUMNS[column]
            ax.set_xlabel(f"τ: within τ × the fastest optimizer's time to target ({unit}, log scale)")
            ax.set_title(f"in {unit}")
        figure.axes[0].set_ylabel(f"share of the {tasks} tasks solved within τ")
        figure.suptitle("Performance profiles (higher and further left is better)")
        optimizer_legend(figure, present)
    return figure
