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

from harness.report.figures.style import (
    DISPLAY_WIDTH,
    FigureKind,
    log_ticks,
    new_figure,
    optimizer_legend,
    styled,
)
from harness.report.view import TaskView, target_text

PANELS = {
    "steps_to_target": "optimizer steps to reach the target (log scale)",
    "time_to_target_s": "seconds to reach the target (log scale)",
}
UNITS = {"time_to_target_s": "seconds", "steps_to_target": "steps"}
MAX_POINTS = 1000  # runs per optimizer drawn as points; beyond, a box


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
    """Performance profiles over the tasks, in seconds and in steps."""
    times = pd.concat([view.targets for view in views], ignore_index=True)
    present = {name: views[0].colours[name] for name in sorted(times["optimizer"].unique())}
    with styled():
        figure = new_figure(11.0, 4.6, 1, 2, wgap=0.3)
        for ax, column in zip(figure.subplots(1, 2, sharey=True), UNITS):
            for name, curve in profile(ratios(times, column)).groupby("optimizer", observed=True):
                ax.step(curve["tau"], curve["rho"], where="post", color=present[name], lw=2)
            ax.set_xscale("log")
            log_ticks(ax, "x")
            ax.set_ylim(-0.02, 1.05)
            ax.set_xlabel(
                f"τ: within τ × the fastest optimizer's time to target ({UNITS[column]}, log scale)"
            )
            ax.set_title(f"in {UNITS[column]}")
        figure.axes[0].set_ylabel(f"share of the {len(views)} tasks solved within τ")
        figure.suptitle("Performance profiles (higher and further left is better)")
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
    "optimizer's time on a task is {rule}. At τ = 1: how often it is the fastest. A time of 0 counts as reached.",
    draw_profiles,
    across_tasks=True,
    shows=lambda views: (
        len({name for view in views for name in view.present}) > 1
    ),  # one optimizer: flat at 1
)
