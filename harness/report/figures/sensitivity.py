"""Learning-rate sensitivity (final loss against lr, per optimizer and batch size) and the lr x batch-size heatmap.

Diverged runs have no final loss; they are drawn anyway, as red crosses in a strip at the top of the axis (failed
runs as grey crosses), so that an lr that blows up is seen, not silently missing.
"""

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from harness.report.figures.style import (
    BATCH_LABEL,
    DIVERGED_COLOR,
    FAILED_COLOR,
    FINAL_LOSS_LABEL,
    LR_LABEL,
    FigureKind,
    batch_names,
    log_ticks,
    new_figure,
    optimizer_legend,
    styled,
)
from harness.report.ranking import LOST, rank
from harness.report.view import TaskView
from harness.tracking.schema import COMPLETED, DIVERGED, FAILED_OUTCOME

FAILED = FAILED_OUTCOME  # killed runs are drawn as failed: neither has a result

STRIP = 0.94  # axes fraction of the top row of the strip for runs without a final loss
ROW = 0.045  # axes fraction between the strip's rows (one row per optimizer)


def sensitivity_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run, diverged and failed ones included: optimizer, batch_size, lr, seed, outcome, final_val_loss."""
    columns = ["task", "optimizer", "batch_size", "lr", "seed", "outcome", "final_val_loss", "run_id"]
    frame = runs[columns].copy()
    frame["outcome"] = frame["outcome"].where(~frame["outcome"].isin(LOST), FAILED)
    return frame.sort_values(["optimizer", "batch_size", "lr", "seed"]).reset_index(drop=True)


def draw_sensitivity(view: TaskView) -> Figure:
    """One panel per batch size: each run's final validation loss against lr (points), the mean over seeds (line),
    and runs without a final loss in the top strip."""
    data, configs, present = sensitivity_data(view.runs), view.configs, view.present
    sizes = sorted(data["batch_size"].dropna().unique())
    titles = batch_names(view.runs)
    with styled():
        figure = new_figure(max(6.5, 4.6 * len(sizes)), 5.0, 1, len(sizes), top=0.9, right=0.9, wgap=0.3)
        panels = figure.subplots(1, len(sizes), squeeze=False, sharey=True)[0]
        has_lost = data["outcome"].isin([DIVERGED, FAILED]).any()
        limits = _limits(data["final_val_loss"], len(present) if has_lost else 0)
        for ax, size in zip(panels, sizes):
            _panel(
                ax, data[data["batch_size"] == size], configs[configs["batch_size"] == size], present, limits
            )
            ax.set_title(titles[size])
            ax.set_xlabel(LR_LABEL)
        panels[0].set_ylabel(FINAL_LOSS_LABEL)
        _row_labels(panels[-1], data[data["outcome"].isin([DIVERGED, FAILED])], present)
        extra = [
            Line2D(
                [], [], ls="", marker="X", ms=9, mfc=DIVERGED_COLOR, mec="black", label="diverged (top strip)"
            ),
            Line2D([], [], ls="", marker="x", ms=8, color=FAILED_COLOR, label="failed (top strip)"),
        ]
        shown = [DIVERGED in set(data["outcome"]), FAILED in set(data["outcome"])]
        figure.suptitle("Learning-rate sensitivity\n(points: runs; line: mean over completed seeds)")
        optimizer_legend(figure, present, extra=[h for h, show in zip(extra, shown) if show])
    return figure


def _limits(values: pd.Series, strip_rows: int) -> tuple[float, float]:
    """Log-scale y limits that keep the data below the strip of `strip_rows` rows (0: no strip)."""
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.empty:
        return 0.1, 10.0
    low, high = np.log10(finite.min()), np.log10(finite.max())
    span = max(high - low, 0.5)
    reserved = ROW * (strip_rows + 0.5) + (1 - STRIP) if strip_rows else 0.0
    total = span / (1 - reserved - 0.1)  # data between 5% and (1 - reserved - 5%) of the axis height
    return 10 ** (low - 0.05 * total), 10 ** (low + 0.95 * total)


def _panel(
    ax: Axes, data: pd.DataFrame, configs: pd.DataFrame, colours: dict, limits: tuple[float, float]
) -> None:
    """Runs as points, the mean over completed seeds as a line, runs without a final loss in the strip."""
    done = data[(data["outcome"] == COMPLETED) & (data["final_val_loss"] > 0)]
    if not done.empty:
        sns.scatterplot(
            data=done,
            x="lr",
            y="final_val_loss",
            hue="optimizer",
            palette=colours,
            ax=ax,
            legend=False,
            alpha=0.45,
            s=22,
            lw=0,
        )
    means = configs[configs["val_loss_mean"] > 0]
    if not means.empty:
        sns.lineplot(
            data=means,
            x="lr",
            y="val_loss_mean",
            hue="optimizer",
            palette=colours,
            ax=ax,
            legend=False,
            marker="o",
            errorbar=None,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(*limits)
    # Every lr tried, diverged ones included: the strip's markers do not widen the axis themselves.
    lrs = data["lr"][data["lr"] > 0]
    if not lrs.empty:
        ax.set_xlim(lrs.min() / 1.6, lrs.max() * 1.6)
    log_ticks(ax, "x")
    log_ticks(ax, "y")
    _strip(ax, data, colours)


def _strip(ax: Axes, data: pd.DataFrame, colours: dict) -> None:
    """Runs without a final loss, at the top: one row per optimizer (the same row in every panel), a red X per
    lr where runs diverged, a grey x (nudged right, so the two never hide each other) where they failed, "×n"
    when several seeds did."""
    lost = data[data["outcome"].isin([DIVERGED, FAILED])]
    if lost.empty:
        return
    names = list(colours)
    bottom = STRIP - ROW * (len(names) - 0.5)
    ax.add_patch(
        Rectangle((0, bottom), 1, 1 - bottom, transform=ax.transAxes, color="#f2f2f2", zorder=0, lw=0)
    )
    ax.text(0.01, 0.995, "no final loss", transform=ax.transAxes, fontsize=7, va="top", color="#555555")
    at_top = blended_transform_factory(ax.transData, ax.transAxes)  # x: lr (data), y: axes fraction
    nudged = at_top + ScaledTranslation(0.1, 0, ax.figure.dpi_scale_trans)
    for (name, lr, outcome), cell in lost.groupby(["optimizer", "lr", "outcome"], observed=True):
        y = STRIP - ROW * names.index(name)
        diverged = outcome == DIVERGED
        ax.scatter(
            [lr],
            [y],
            transform=at_top if diverged else nudged,
            marker="X" if diverged else "x",
            s=70,
            clip_on=False,
            zorder=5,
            color=DIVERGED_COLOR if diverged else FAILED_COLOR,
            edgecolors=colours[name] if diverged else None,  # an "x" has no face: its colour is its edge
            linewidths=1.2,
        )
        if len(cell) > 1:
            ax.annotate(
                f"×{len(cell)}",
                (lr, y),
                xycoords=at_top,
                xytext=(6, -3),
                textcoords="offset points",
                fontsize=7,
            )


def _row_labels(ax: Axes, lost: pd.DataFrame, colours: dict) -> None:
    """Name the strip's rows, right of the axes (the last panel's)."""
    names = list(colours)
    for name in sorted(set(lost["optimizer"])):
        y = STRIP - ROW * names.index(name)
        ax.text(1.01, y, name, transform=ax.transAxes, va="center", fontsize=7, color=colours[name])


def draw_heatmap(view: TaskView) -> Figure:
    """One heatmap per optimizer: mean final validation loss over seeds, lr (rows) x batch size (columns), on one
    shared log colour scale. Cells with diverged seeds say how many; the optimizer's best cell is outlined."""
    configs, colours = view.configs, view.colours
    optimizers = sorted(configs["optimizer"].unique())
    values = configs["val_loss_mean"]
    finite = values[np.isfinite(values) & (values > 0)]
    norm = LogNorm(finite.min(), finite.max()) if len(finite) and finite.min() < finite.max() else None
    columns = min(4, len(optimizers))
    rows = -(-len(optimizers) // columns)
    with styled():
        width, height = 4.4 * columns + 1.6, 3.4 * rows + 0.6
        # Margins for lr tick labels like 0.000681 beside every panel, and the colour bar on the right.
        figure = new_figure(
            width, height, rows, columns, top=0.6, bottom=0.75, left=1.3, right=1.5, hgap=0.9, wgap=1.4
        )
        grid = figure.subplots(rows, columns, squeeze=False)
        for ax, name in zip(grid.flat, optimizers):
            _heatmap(ax, configs[configs["optimizer"] == name], norm, colours[name])
            ax.set_title(name, color=colours[name], fontweight="bold")
        for ax in list(grid.flat)[len(optimizers) :]:
            ax.set_visible(False)
        if norm is not None:
            mappable = grid.flat[0].collections[0] if grid.flat[0].collections else None
            if mappable is not None:
                bar = figure.add_axes((1 - 1.1 / width, 0.75 / height, 0.15 / width, 1 - 1.35 / height))
                figure.colorbar(
                    mappable, cax=bar, label="final validation loss (mean over seeds, log colour)"
                )
        figure.suptitle("Final validation loss by learning rate and batch size (lower is better)")
    return figure


def _heatmap(ax: Axes, configs: pd.DataFrame, norm: LogNorm | None, colour) -> None:
    """One optimizer's cells, largest lr on top. Drawn with pcolormesh rather than seaborn's heatmap, which draws
    the whole figure once per call to decide whether its tick labels overlap."""
    table = configs.pivot_table(
        index="lr", columns="batch_size", values="val_loss_mean", aggfunc="first", dropna=False
    ).sort_index(ascending=False)
    values = table.to_numpy(dtype=float)
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values), cmap="viridis", norm=norm, edgecolors="white", linewidth=0.5
    )
    mesh.autoscale_None()
    ax.set_facecolor("#e6e6e6")  # cells with no completed seed: grey, labelled by _cell_notes
    ax.grid(False)
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(values.shape[0], 0)  # first row (largest lr) at the top, as a table reads
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(int(size)) for size in table.columns])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, [f"{lr:.3g}" for lr in table.index])
    ax.tick_params(length=0)
    for (i, j), text in np.ndenumerate(_cell_notes(configs, table).to_numpy()):
        if text:
            ink = DIVERGED_COLOR if np.isnan(values[i, j]) else _ink(mesh.cmap(mesh.norm(values[i, j])))
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7, color=ink)
    best = rank(configs).iloc[0]
    if best["completed"] > 0:
        i, j = list(table.index).index(best["lr"]), list(table.columns).index(best["batch_size"])
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor=colour, lw=3, clip_on=False))
    ax.set_xlabel(BATCH_LABEL)
    ax.set_ylabel("effective learning rate")


def _ink(rgba) -> str:
    """Dark text on light cells, white on dark ones (relative luminance, as seaborn's heatmap decides)."""
    red, green, blue = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3])
    return "#262626" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.408 else "white"


def _cell_notes(configs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the loss, and how many seeds diverged or failed ("diverged" when none completed)."""
    notes = pd.DataFrame("", index=table.index, columns=table.columns)
    for row in configs.itertuples():
        lost = row.diverged + row.failed
        if row.completed == 0:
            text = "diverged" if row.diverged else "failed"
        else:
            text = f"{row.val_loss_mean:.3g}" + (f"\n{lost}/{row.runs} lost" if lost else "")
        notes.loc[row.lr, row.batch_size] = text
    return notes


SENSITIVITY = FigureKind(
    "sensitivity",
    "Learning-rate sensitivity",
    "Final validation loss of every run against the effective lr. Runs without a final loss (diverged: red X; "
    "failed: grey x) sit in the strip at the top, one row per optimizer.",
    draw_sensitivity,
)
HEATMAP = FigureKind(
    "heatmap",
    "Final loss by learning rate and batch size",
    "Mean final validation loss over seeds for each lr × batch size; one shared colour scale. The outlined cell is "
    "the optimizer's best; 'lost' counts seeds that diverged or failed.",
    draw_heatmap,
)
