"""Convergence: training and validation loss of each optimizer at its best configuration, against four clocks;
and the same faceted by batch size (each optimizer at its best lr for that batch size)."""

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report import curves
from harness.report.configs import CONFIG
from harness.report.figures.style import (
    METRIC_LABELS,
    batch_names,
    log_ticks,
    new_figure,
    optimizer_legend,
    styled,
)
from harness.report.keys import TRAIN_LOSS, VAL_LOSS


def selected_runs(runs: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The runs (all seeds) of the chosen configurations (rows with CONFIG columns)."""
    return runs.merge(chosen[CONFIG].drop_duplicates(), on=CONFIG, how="inner")


def pooled_curves(
    metrics: pd.DataFrame, runs: pd.DataFrame, axes: list[str], groups: list[str]
) -> pd.DataFrame:
    """Pooled curves of train/loss and val/loss for `runs`: metric, axis, groups..., x, center, low, high, n."""
    clock = curves.clocks(metrics, runs)
    labels = runs[["run_id", *groups]].astype({"run_id": "string"})
    parts = []
    for key in (TRAIN_LOSS, VAL_LOSS):
        frame = curves.points(metrics, clock, key).merge(labels, on="run_id")
        for axis in axes:
            pooled = curves.pool(frame, axis, groups)
            if not pooled.empty:  # e.g. no epochs: runs shorter than one epoch (empty frames have no dtypes)
                parts.append(pooled.assign(metric=key, axis=axis))
    columns = ["metric", "axis", *groups, "x", "center", "low", "high", "n"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def convergence_figure(
    metrics: pd.DataFrame, runs: pd.DataFrame, best: pd.DataFrame, colours: dict
) -> Figure:
    """Rows: train/loss, val/loss; columns: steps, epochs, samples, seconds. One curve per optimizer (its best
    configuration in `best`), geometric mean over seeds with a 95% band."""
    axes_names = list(curves.AXES)
    pooled = pooled_curves(metrics, selected_runs(runs, best), axes_names, ["optimizer"])
    labels = {
        row.optimizer: f"{row.optimizer} (lr {row.lr:.3g}, batch {row.batch_size})"
        for row in best.itertuples()
    }
    with styled():
        figure = new_figure(4.2 * len(axes_names), 7.5)
        grid = figure.subplots(2, len(axes_names), squeeze=False)
        for row, key in enumerate((TRAIN_LOSS, VAL_LOSS)):
            for column, axis in enumerate(axes_names):
                ax = grid[row, column]
                _draw(ax, pooled[(pooled["metric"] == key) & (pooled["axis"] == axis)], colours)
                _set_limits(ax, pooled[pooled["metric"] == key])
                ax.set_xlabel(curves.AXES[axis])
                ax.set_ylabel(METRIC_LABELS[key] if column == 0 else "")
        figure.suptitle("Convergence at each optimizer's best configuration (mean over seeds, 95% band)")
        optimizer_legend(figure, _present(colours, best), labels)
    return figure


def convergence_by_batch_figure(
    metrics: pd.DataFrame, runs: pd.DataFrame, best_per_batch: pd.DataFrame, colours: dict
) -> Figure:
    """Columns: batch sizes; rows: train/loss, val/loss, against samples seen (comparable across batch sizes).
    In each column, each optimizer at its best lr for that batch size."""
    pooled = pooled_curves(
        metrics, selected_runs(runs, best_per_batch), ["samples"], ["batch_size", "optimizer"]
    )
    sizes = sorted(best_per_batch["batch_size"].dropna().unique())
    titles = batch_names(best_per_batch)
    with styled():
        figure = new_figure(max(5.0, 4.2 * len(sizes)), 7.5)
        grid = figure.subplots(2, len(sizes), squeeze=False, sharey="row")
        for row, key in enumerate((TRAIN_LOSS, VAL_LOSS)):
            for column, size in enumerate(sizes):
                ax = grid[row, column]
                part = pooled[(pooled["metric"] == key) & (pooled["batch_size"] == size)]
                _draw(ax, part, colours)
                _set_limits(ax, pooled[pooled["metric"] == key])
                ax.set_title(titles[size] if row == 0 else "")
                ax.set_xlabel(curves.AXES["samples"])
                ax.set_ylabel(METRIC_LABELS[key] if column == 0 else "")
                if row == 1:
                    _annotate_lrs(ax, best_per_batch[best_per_batch["batch_size"] == size])
        figure.suptitle("Convergence by batch size: each optimizer at its best lr for that batch size")
        optimizer_legend(figure, _present(colours, best_per_batch))
    return figure


def _draw(ax: Axes, pooled: pd.DataFrame, colours: dict) -> None:
    """Centre lines (seaborn) and 95% bands, log y."""
    if pooled.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    sns.lineplot(
        data=pooled,
        x="x",
        y="center",
        hue="optimizer",
        palette=colours,
        ax=ax,
        errorbar=None,
        legend=False,
        lw=1.6,
    )
    for name, curve in pooled.groupby("optimizer", observed=True):
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
    ax.text(
        0.98,
        0.98,
        text,
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
        bbox={"fc": "white", "alpha": 0.7, "lw": 0},
    )


def _present(colours: dict, chosen: pd.DataFrame) -> dict:
    names = set(chosen["optimizer"])
    return {name: colour for name, colour in colours.items() if name in names}
