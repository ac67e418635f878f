"""Convergence: training and validation loss of each optimizer at its best configuration against four clocks; and
the same faceted by batch size (each optimizer at its best lr for that batch size). Both draw the pooled curves of
the task's view (view.TaskView.curves: binned and pooled over seeds already)."""

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from harness.report import curves
from harness.report.figures.style import (
    METRIC_LABELS,
    FigureKind,
    batch_names,
    log_ticks,
    new_figure,
    optimizer_legend,
    styled,
)
from harness.report.view import CURVE_KEYS, TaskView

# 120000 samples as "120k": long counts run into each other along the axis.
SAMPLES = FuncFormatter(
    lambda value, _: (
        f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k" if value >= 1e3 else f"{value:g}"
    )
)


def draw_convergence(view: TaskView) -> Figure:
    """Rows: train/loss, val/loss; columns: steps, epochs, samples, seconds. One curve per optimizer (its best
    configuration), geometric mean over seeds with a 95% band."""
    pooled = view.curves[view.curves["batch_size"].isna()]
    axes_names = list(curves.AXES)
    labels = {
        row.optimizer: f"{row.optimizer} (lr {row.lr:.3g}, batch {row.batch_size})"
        for row in view.best.itertuples()
    }
    with styled():
        figure = new_figure(4.2 * len(axes_names), 7.5, 2, len(axes_names), hgap=0.7)
        grid = figure.subplots(2, len(axes_names), squeeze=False, sharey="row")
        for row, key in enumerate(CURVE_KEYS):
            for column, axis in enumerate(axes_names):
                ax = grid[row, column]
                _draw(ax, pooled[(pooled["metric"] == key) & (pooled["axis"] == axis)], view.colours)
                _set_limits(ax, pooled[pooled["metric"] == key])
                ax.set_xlabel(curves.AXES[axis])
                ax.set_ylabel(METRIC_LABELS[key] if column == 0 else "")
                if axis == "samples":
                    ax.xaxis.set_major_formatter(SAMPLES)
        figure.suptitle(
            "Convergence at each optimizer's best configuration (geometric mean over seeds, 95% band)"
        )
        optimizer_legend(figure, view.present, labels)
    return figure


def draw_by_batch(view: TaskView) -> Figure:
    """Columns: batch sizes; rows: train/loss, val/loss, against samples seen (comparable across batch sizes).
    In each column, each optimizer at its best lr for that batch size."""
    pooled = view.curves[view.curves["batch_size"].notna()]
    chosen = view.best_per_batch
    sizes = sorted(chosen["batch_size"].dropna().unique())
    titles = batch_names(chosen)
    with styled():
        figure = new_figure(max(5.0, 4.2 * len(sizes)), 7.5, 2, len(sizes), hgap=0.7, wgap=0.3)
        grid = figure.subplots(2, len(sizes), squeeze=False, sharey="row")
        for row, key in enumerate(CURVE_KEYS):
            for column, size in enumerate(sizes):
                ax = grid[row, column]
                _draw(ax, pooled[(pooled["metric"] == key) & (pooled["batch_size"] == size)], view.colours)
                _set_limits(ax, pooled[pooled["metric"] == key])
                ax.set_title(titles[size] if row == 0 else "")
                ax.set_xlabel(curves.AXES["samples"])
                ax.xaxis.set_major_formatter(SAMPLES)
                ax.set_ylabel(METRIC_LABELS[key] if column == 0 else "")
                if row == 1:
                    _annotate_lrs(ax, chosen[chosen["batch_size"] == size])
        figure.suptitle("Convergence by batch size: each optimizer at its best lr for that batch size")
        optimizer_legend(figure, view.present)
    return figure


def _draw(ax: Axes, pooled: pd.DataFrame, colours: dict) -> None:
    """Centre lines and 95% bands, log y. The points are pooled already (curves.pool): nothing is left for seaborn
    to estimate, so they are drawn as plain lines in seaborn's style."""
    if pooled.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    for name, curve in pooled.groupby("optimizer", observed=True):
        ax.plot(curve["x"], curve["center"], color=colours[name], lw=1.6)
        band = curve.dropna(subset=["low", "high"])
        if not band.empty:
            ax.fill_between(band["x"], band["low"], band["high"], color=colours[name], alpha=0.2, lw=0)
    ax.set_yscale("log")


def _set_limits(ax: Axes, row: pd.DataFrame) -> None:
    """y limits from the centre lines of the whole row, half a decade of margin: one row reads on one scale,
    and a wide band (two seeds give t = 12.7) cannot squash the curves into a corner; bands are clipped."""
    centers = row["center"].astype("float64")
    centers = centers[centers > 0]
    if centers.empty:
        return
    ax.set_ylim(centers.min() / 10**0.5, centers.max() * 10**0.5)
    log_ticks(ax)


def _annotate_lrs(ax: Axes, chosen: pd.DataFrame) -> None:
    """Which lr each curve in this panel uses."""
    text = "\n".join(
        f"{row.optimizer}: lr {row.lr:.3g}" for row in chosen.sort_values("optimizer").itertuples()
    )
    box = {"fc": "white", "alpha": 0.7, "lw": 0}
    ax.text(0.98, 0.98, text, transform=ax.transAxes, ha="right", va="top", fontsize=7, bbox=box)


CONVERGENCE = FigureKind(
    "convergence",
    "Convergence",
    "Each optimizer at its best configuration (the ranked table). Line: geometric mean over seeds; band: 95% "
    f"t-interval (log scale). Curves are averaged into at most {curves.MAX_POINTS} bins per run before pooling; "
    "training loss is the mini-batch loss. Seconds are each run's clock: a trial trained in a batched group "
    "(hydra/launcher=batched, tag harness.batch_trials = K > 1) shows its group's clock, the time of all K trials "
    "together; compare seconds between runs trained the same way.",
    draw_convergence,
)
BY_BATCH = FigureKind(
    "convergence_by_batch",
    "Convergence by batch size",
    "Per batch size, each optimizer at its best lr for that batch size, against samples seen (the same data "
    "budget in every column).",
    draw_by_batch,
    # One batch size: the same curves as the convergence figure's samples column.
    shows=lambda view: view.best_per_batch["batch_size"].nunique() > 1,
)
