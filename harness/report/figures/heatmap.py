"""The lr x batch-size heatmap: mean final validation loss over seeds, one panel per optimizer, one colour scale.

Its cells are meant to be read: at most MAX_ROWS rows of lr per optimizer, so that a cell keeps its number legible at
the width the HTML shows the figure. An optimizer that tried more learning rates has them binned into MAX_ROWS
log-spaced bins over its range; a cell then shows the best configuration in its bin (by the ranking) and how many
configurations the bin holds.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from harness.report.figures.style import (
    BATCH_LABEL,
    DISPLAY_WIDTH,
    DIVERGED_COLOR,
    FigureKind,
    floored,
    new_figure,
    styled,
    zero_floor,
)
from harness.report.ranking import rank
from harness.report.view import TaskView

MAX_ROWS = 12  # lr rows per panel
MAX_COLUMNS = 4  # panels per row of the figure
ROW_HEIGHT = 0.36  # inches per lr row: two lines of an 8-point label
FONT = 8
CHAR = 0.075  # inches per character of a tick label


@dataclass(frozen=True)
class Cells:
    """One optimizer's grid: rows of lr (largest first), columns of batch size."""

    row_labels: list[str]
    sizes: list[int]
    loss: np.ndarray  # the cell's configuration's mean final loss (NaN: none completed)
    notes: np.ndarray  # text per cell ("" for an empty cell)
    best: tuple[int, int] | None  # the optimizer's best configuration's cell
    binned: bool


def cells(configs: pd.DataFrame) -> Cells:
    """One optimizer's configurations laid out as rows of lr x columns of batch size, lrs binned beyond MAX_ROWS."""
    placed = configs.dropna(subset=["lr", "batch_size"])
    lrs = np.sort(placed["lr"].unique())[::-1]
    sizes = sorted(int(s) for s in placed["batch_size"].unique())
    binned = len(lrs) > MAX_ROWS
    edges = np.geomspace(lrs.min(), lrs.max(), MAX_ROWS + 1)[::-1] if binned else None
    placed = placed.assign(
        _row=_rows(placed["lr"], lrs, edges), _column=placed["batch_size"].map(sizes.index).to_numpy()
    )
    labels = _labels(lrs, edges, placed)
    loss = np.full((len(labels), len(sizes)), np.nan)
    notes = np.full(loss.shape, "", dtype=object)
    ranked = rank(placed)
    for (i, j), cell in ranked.groupby(["_row", "_column"], sort=False):
        loss[i, j] = cell["val_loss_mean"].iloc[0]
        notes[i, j] = _note(cell)
    best = ranked.iloc[0] if len(ranked) and ranked.iloc[0]["completed"] > 0 else None
    where = None if best is None else (int(best["_row"]), int(best["_column"]))
    return Cells(labels, sizes, loss, notes, where, binned)


def _rows(lr: pd.Series, lrs: np.ndarray, edges: np.ndarray | None) -> np.ndarray:
    """Each configuration's row: its lr's own (lrs descending), or its bin's."""
    if edges is None:
        return np.searchsorted(-lrs, -lr.to_numpy())
    # Bin i holds edges[i + 1] < lr <= edges[i] (bin 0 the largest lrs; the smallest lr in the last bin).
    return np.clip(np.searchsorted(-edges, -lr.to_numpy(), side="right") - 1, 0, MAX_ROWS - 1)


def _labels(lrs: np.ndarray, edges: np.ndarray | None, placed: pd.DataFrame) -> list[str]:
    """An lr per row, or a bin's range and how many lrs it holds."""
    if edges is None:
        return [f"{lr:.3g}" for lr in lrs]
    held = placed.groupby("_row")["lr"].nunique()
    return [
        f"{low:.2g}–{high:.2g} ({held.get(i, 0)})" for i, (high, low) in enumerate(zip(edges[:-1], edges[1:]))
    ]


def _note(cell: pd.DataFrame) -> str:
    """The loss of the cell's best configuration, and how many of the cell's seeds were lost."""
    runs, lost, completed = (
        int(cell["runs"].sum()),
        int((cell["diverged"] + cell["failed"]).sum()),
        cell["completed"].sum(),
    )
    if completed == 0:
        return "diverged" if cell["diverged"].sum() else "failed"
    loss = cell["val_loss_mean"].iloc[0]
    text = "0" if loss == 0 else f"{loss:.3g}"
    return f"{text}\n{lost}/{runs} lost" if lost else text


def draw_heatmap(view: TaskView) -> Figure:
    """One heatmap per optimizer on one shared log colour scale (zeros at its bottom); the best cell outlined."""
    configs, colours = view.configs, view.colours
    optimizers = sorted(configs["optimizer"].dropna().unique())
    grids = {name: cells(configs[configs["optimizer"] == name]) for name in optimizers}
    norm, floor = _norm(configs["val_loss_mean"])
    # Room for the longest lr label (tick labels are about CHAR inches a character) and the axis label beside it.
    left = 0.55 + CHAR * max(len(label) for grid in grids.values() for label in grid.row_labels)
    panel_width = left + 1.0 * max(max(len(g.sizes) for g in grids.values()), 2) + 0.4
    # As many panels side by side as fit the HTML's width (at least one, at most four).
    columns = max(1, min(len(optimizers), MAX_COLUMNS, int((DISPLAY_WIDTH - 1.4) // panel_width)))
    rows = -(-len(optimizers) // columns)
    panel = ROW_HEIGHT * max(max(len(grid.row_labels) for grid in grids.values()), 3)
    width = min(DISPLAY_WIDTH, 1.4 + columns * panel_width)
    with styled():
        figure = new_figure(
            width,
            rows * (panel + 1.2) + 0.4,
            rows,
            columns,
            top=0.7,
            bottom=0.7,
            left=left,
            right=1.4,
            hgap=1.0,
            wgap=left + 0.1,
        )
        axes = figure.subplots(rows, columns, squeeze=False)
        mesh = None
        for ax, name in zip(axes.flat, optimizers):
            mesh = _panel(ax, grids[name], norm, floor, colours[name])
            ax.set_title(name, color=colours[name], fontweight="bold")
        for ax in list(axes.flat)[len(optimizers) :]:
            ax.set_visible(False)
        if norm is not None and mesh is not None:
            bar = figure.add_axes((1 - 1.05 / width, 0.7 / figure.get_figheight(), 0.15 / width, 0.6))
            label = "mean final validation loss (log colour" + (
                "; 0 at the bottom)" if floor is not None else ")"
            )
            figure.colorbar(mesh, cax=bar, label=label)
        figure.suptitle("Final validation loss by learning rate and batch size (lower is better)")
    return figure


def _norm(values: pd.Series) -> tuple[LogNorm | None, float | None]:
    """The shared log colour scale over every positive mean, extended down to the floor where a mean is 0."""
    floor = zero_floor(values)
    shown = floored(values, floor)
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size == 0 or shown.min() == shown.max():
        return None, floor
    return LogNorm(shown.min(), shown.max()), floor


def _panel(ax: Axes, grid: Cells, norm: LogNorm | None, floor: float | None, colour):
    """One optimizer's cells, largest lr on top. pcolormesh rather than seaborn's heatmap, which draws the whole
    figure once per call to decide whether its tick labels overlap."""
    values = floored(grid.loss, floor)
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), cmap="viridis", norm=norm, edgecolors="white", lw=0.5)
    mesh.autoscale_None()
    ax.set_facecolor("#e6e6e6")  # cells with no completed seed: grey, labelled
    ax.grid(False)
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(values.shape[0], 0)  # first row (largest lr) at the top, as a table reads
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(size) for size in grid.sizes])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, grid.row_labels)
    ax.tick_params(length=0)
    for (i, j), text in np.ndenumerate(grid.notes):
        if text:
            ink = DIVERGED_COLOR if np.isnan(values[i, j]) else _ink(mesh.cmap(mesh.norm(values[i, j])))
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=FONT, color=ink)
    if grid.best is not None:
        i, j = grid.best  # inset, so that the outline is not cut by the axes' edge
        ax.add_patch(Rectangle((j + 0.05, i + 0.06), 0.9, 0.88, fill=False, edgecolor=colour, lw=2.5))
    ax.set_xlabel(BATCH_LABEL)
    ax.set_ylabel("effective learning rate" + (" (log-spaced bins; lrs in each)" if grid.binned else ""))
    return mesh


def _ink(rgba) -> str:
    """Dark text on light cells, white on dark ones (relative luminance, as seaborn's heatmap decides)."""
    red, green, blue = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3])
    return "#262626" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.408 else "white"


HEATMAP = FigureKind(
    "heatmap",
    "Final loss by learning rate and batch size",
    "Mean final validation loss over seeds for each lr × batch size; one shared colour scale (a mean of exactly 0 "
    "at its bottom, written 0). The outlined cell is the optimizer's best; 'lost' counts seeds that diverged or "
    f"failed. An optimizer that tried more than {MAX_ROWS} learning rates has them in {MAX_ROWS} log-spaced bins "
    "over its range (rows labelled low–high, with how many lrs the bin holds): a cell then shows the best "
    "configuration in its bin.",
    draw_heatmap,
)
