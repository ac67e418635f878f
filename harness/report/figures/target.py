"""Time to target per optimizer (steps and seconds), and performance profiles across tasks.

Performance profiles (Dolan & Moré, 2002): rho_o(tau) is the share of tasks on which optimizer o reaches the task's
target within tau x the time of the fastest optimizer on that task. An optimizer's time on a task comes from
ranking.target_times under the report's rule. Never reaching the target is an infinite ratio: the curve stays
below 1. A time of 0 (the initial model already meets the target) is reached: when the fastest time is 0, the
optimizers also at 0 have ratio 1 and any later one an infinite ratio (no multiple of 0 reaches it).
"""

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report import stats
from harness.report.figures.style import (
    DISPLAY_WIDTH,
    FigureKind,
    log_ticks,
    new_figure,
    optimizer_legend,
    styled,
)
from harness.report.ranking import profile, ratios  # noqa: F401 (the profile's home; the figure draws it)
from harness.report.view import TaskView, target_text

PANELS = {
    "steps_to_target": "optimizer steps to reach the target (log scale)",
    "time_to_target_s": "seconds to reach the target (log scale)",
}
UNITS = {"time_to_target_s": "seconds", "steps_to_target": "steps"}
MAX_POINTS = 1000  # runs per optimizer drawn as points; beyond, a box


def draw_time_to_target(view: TaskView) -> Figure:
    """Two panels (steps, seconds): every run that reached the task's target (points; a box per optimizer when it
    has more runs than points can show) and each optimizer's time under the report's rule (black bar); under each
    optimizer, how many runs reached it."""
    order = list(view.present)
    with styled():
        figure = new_figure(
            min(DISPLAY_WIDTH, max(7.5, 1.6 * len(order) * 2 + 2)),
            5.2,
            1,
            2,
            top=1.0,
            bottom=1.25,
            left=0.9,
            wgap=0.9,
        )
        for ax, (column, label) in zip(figure.subplots(1, 2), PANELS.items()):
            _panel(ax, view, column, order)
            ax.set_ylabel(label)
        clock = batched_clock(view.runs)
        if clock:
            figure.axes[1].set_title(clock, fontsize=8)
        figure.suptitle(
            f"Time to {target_text(view.runs)}\n(points: runs that reached it; bars: each optimizer's time)"
        )
        optimizer_legend(figure, view.present)
    return figure


def batched_clock(runs: pd.DataFrame) -> str | None:
    """What seconds mean when some runs trained in a batched group: the group's clock, K trials together."""
    if "batch_trials" not in runs:
        return None
    k = runs["batch_trials"].dropna()
    k = k[k > 1]
    if k.empty:
        return None
    size = f"{int(k.min())}" if k.min() == k.max() else f"{int(k.min())}–{int(k.max())}"
    return f"batched trials: their group's clock ({size} trials together)"


def _panel(ax: Axes, view: TaskView, column: str, order: list[str]) -> None:
    runs = view.runs
    counts = runs.groupby("optimizer", observed=True).agg(n=("run_id", "size"), hit=(column, "count"))
    at_zero = runs[runs[column] == 0].groupby("optimizer", observed=True).size()
    labels = [
        f"{name}\n{counts.loc[name, 'hit']}/{counts.loc[name, 'n']} reached"
        + (f"\n({at_zero[name]} at 0)" if at_zero.get(name, 0) else "")
        for name in order
    ]
    # A log axis cannot show 0: those runs are counted in the label.
    reached = runs[runs[column].notna() & (runs[column] > 0)]
    ax.set_xticks(range(len(order)), labels)
    ax.set_xlim(-0.5, len(order) - 0.5)
    if reached.empty:
        ax.text(
            0.5,
            0.5,
            "no run reached the target after step 0",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
        )
        return
    for position, name in enumerate(order):
        values = reached.loc[reached["optimizer"] == name, column].to_numpy(dtype=float)
        _runs(ax, position, values, view.present[name])
    times = view.targets.set_index("optimizer")[column]
    for position, name in enumerate(order):
        value = times.get(name, np.inf)
        if np.isfinite(value) and value > 0:
            ax.hlines(value, position - 0.35, position + 0.35, color="black", lw=2.5, zorder=5)
    ax.set_yscale("log")
    log_ticks(ax)
    ax.set_xlabel("")


def _runs(ax: Axes, position: int, values: np.ndarray, colour) -> None:
    """One optimizer's runs: jittered points, or a box (quartiles, whiskers at 5% and 95%) when there are more
    than MAX_POINTS (thousands of markers hide each other and only cost time)."""
    if values.size == 0:
        return
    if values.size <= MAX_POINTS:
        jitter = np.random.default_rng(position).uniform(
            -0.2, 0.2, values.size
        )  # the same picture every time
        ax.scatter(position + jitter, values, s=16, color=colour, alpha=0.6, lw=0)
        return
    box = ax.boxplot(
        values,
        positions=[position],
        widths=0.5,
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        manage_ticks=False,
    )
    for patch in box["boxes"]:
        patch.set(facecolor=colour, alpha=0.5)


def draw_profiles(views: list[TaskView]) -> Figure:
    """Performance profiles over the tasks, in seconds and in steps, each curve in its bootstrap band
    (stats.profile_intervals: seeds resampled within each task)."""
    runs = pd.concat([view.runs for view in views], ignore_index=True)
    first = views[0]
    present = {name: first.colours[name] for name in sorted(runs["optimizer"].dropna().unique())}
    with styled():
        figure = new_figure(11.0, 4.6, 1, 2, wgap=0.3)
        for ax, column in zip(figure.subplots(1, 2, sharey=True), UNITS):
            curves = stats.profile_intervals(runs, column, first.rule, first.method)
            for name, curve in curves.groupby("optimizer", observed=True):
                colour = present[name]
                # Bands of several optimizers overlap: a light fill, and each band's edges in its own colour.
                ax.fill_between(
                    curve["tau"], curve["lo"], curve["hi"], step="post", color=colour, alpha=0.1, lw=0
                )
                for edge in ("lo", "hi"):
                    ax.step(curve["tau"], curve[edge], where="post", color=colour, lw=0.8, ls="--", alpha=0.8)
                ax.step(curve["tau"], curve["rho"], where="post", color=colour, lw=2)
            ax.set_xscale("log")
            log_ticks(ax, "x")
            ax.set_ylim(-0.02, 1.05)
            ax.set_xlabel(
                f"τ: within τ × the fastest optimizer's time to target ({UNITS[column]}, log scale)"
            )
            ax.set_title(f"in {UNITS[column]}")
        figure.axes[0].set_ylabel(f"share of the {len(views)} tasks solved within τ")
        figure.suptitle(
            "Performance profiles (higher and further left is better; bands: "
            f"{100 * first.method.confidence:.0f} % bootstrap intervals over seeds)"
        )
        optimizer_legend(figure, present)
    return figure


TIME_TO_TARGET = FigureKind(
    "time_to_target",
    "Time to target",
    "Steps and seconds until the task's target (named in the title, as the runs recorded it) was first reached. "
    f"Points: runs (over {MAX_POINTS} runs of one optimizer: a box of their quartiles, whiskers at 5% and 95%); "
    "black bar: the optimizer's time ({rule}). Runs that never reached it are counted below; runs whose initial "
    "model already met it (time 0) too. Seconds of batched trials (tag harness.batch_trials = K > 1) are their "
    "group's clock: the time all K trials of the group took together, not one trial's share.",
    draw_time_to_target,
)
PROFILES = FigureKind(
    "performance_profile",
    "Performance profiles",
    "Share of tasks on which each optimizer reaches the target within τ × the fastest optimizer's time; an "
    "optimizer's time on a task is {rule}. At τ = 1: how often it is the fastest. A time of 0 counts as reached. "
    "Bands: 95 % intervals of a bootstrap that resamples each task's seeds and recomputes every time and ratio.",
    draw_profiles,
    across_tasks=True,
    shows=lambda views: (
        len({name for view in views for name in view.present}) > 1
    ),  # one optimizer: flat at 1
)
