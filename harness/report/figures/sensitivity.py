"""Learning-rate sensitivity: final loss against lr, one panel per batch size, one colour per optimizer.

Diverged runs have no final loss; they are drawn anyway, as red crosses in a strip at the top of the axis (failed
runs as grey crosses), so that an lr that blows up is seen, not silently missing. A final loss of exactly 0 (a task
solved to the last bit) is drawn on a marked floor, as a log axis has no 0. A panel with more runs than points can
show draws each optimizer's spread over seeds as a band around the mean line instead of one point per run.
"""

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from harness.report.figures.style import (
    DISPLAY_WIDTH,
    DIVERGED_COLOR,
    FAILED_COLOR,
    FINAL_LOSS_LABEL,
    LR_LABEL,
    FigureKind,
    batch_names,
    floored,
    log_ticks,
    mark_floor,
    new_figure,
    optimizer_legend,
    styled,
    zero_floor,
)
from harness.report.ranking import LOST
from harness.report.view import TaskView
from harness.tracking.schema import COMPLETED, DIVERGED, FAILED_OUTCOME

FAILED = FAILED_OUTCOME  # killed runs are drawn as failed: neither has a result

STRIP = 0.94  # axes fraction of the top row of the strip for runs without a final loss
ROW = 0.045  # axes fraction between the strip's rows (one row per optimizer)
COLUMNS = 3  # panels per row of the figure
MAX_POINTS = 2000  # runs in a panel drawn as points; beyond, a band per optimizer
MAX_MARKERS = 40  # configurations on a mean line drawn with markers
MAX_COUNTS = 30  # lrs in a strip row labelled with how many seeds they lost; beyond, the labels would overlap
PAD = 0.3  # inches kept free left and right of the outermost lr: its marker and its "×n" label
CHAR = 0.06  # inches per character of a 7-point label


def sensitivity_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run, diverged and failed ones included: optimizer, batch_size, lr, seed, outcome, final_val_loss."""
    columns = ["task", "optimizer", "batch_size", "lr", "seed", "outcome", "final_val_loss", "run_id"]
    frame = runs[columns].copy()
    frame["outcome"] = frame["outcome"].where(~frame["outcome"].isin(LOST), FAILED)
    return frame.sort_values(["optimizer", "batch_size", "lr", "seed"]).reset_index(drop=True)


def draw_sensitivity(view: TaskView) -> Figure:
    """One panel per batch size: each run's final validation loss against lr (points, or a band when there are
    many), the mean over seeds (line), and runs without a final loss in the top strip."""
    data, configs, present = sensitivity_data(view.runs), view.configs, view.present
    sizes = sorted(data["batch_size"].dropna().unique())
    titles = batch_names(view.runs)
    lost = data[data["outcome"].isin([DIVERGED, FAILED])]
    floor = zero_floor(pd.concat([data["final_val_loss"], configs["val_loss_mean"]]))
    columns, rows = min(COLUMNS, len(sizes)), -(-len(sizes) // COLUMNS)
    label_width = 0.3 + CHAR * max((len(name) for name in set(lost["optimizer"])), default=0)
    width = min(DISPLAY_WIDTH, max(6.5, 3.6 * columns + 1.2 + label_width))
    with styled():
        figure = new_figure(width, 4.3 * rows + 0.7, rows, columns, top=0.9, right=label_width, wgap=0.3)
        panels = figure.subplots(rows, columns, squeeze=False, sharey=True)
        limits = _limits(data["final_val_loss"], floor, len(present) if not lost.empty else 0)
        for ax, size in zip(panels.flat, sizes):
            mine = configs[configs["batch_size"] == size]
            _panel(ax, data[data["batch_size"] == size], mine, present, limits, floor)
            if (
                not lost.empty
            ):  # every panel has the strip, so that its rows line up with the labels beside them
                _strip(ax, data[data["batch_size"] == size], present)
            ax.set_title(titles[size])
            ax.set_xlabel(LR_LABEL)
        for ax in list(panels.flat)[len(sizes) :]:
            ax.set_visible(False)
        for row in panels:
            row[0].set_ylabel(FINAL_LOSS_LABEL)
            visible = [ax for ax in row if ax.get_visible()]
            _row_labels(visible[-1], lost, present)
        banded = any(
            ((data["batch_size"] == size) & (data["outcome"] == COMPLETED)).sum() > MAX_POINTS
            for size in sizes
        )
        shown = "band: lowest to highest seed" if banded else "points: runs"
        figure.suptitle(f"Learning-rate sensitivity\n({shown}; line: mean over completed seeds)")
        optimizer_legend(figure, present, extra=_legend_extra(data, floor))
    return figure


def _legend_extra(data: pd.DataFrame, floor: float | None) -> list:
    outcomes = set(data["outcome"])
    extra = []
    if DIVERGED in outcomes:
        marker = {"marker": "X", "ms": 9, "mfc": DIVERGED_COLOR, "mec": "black"}
        extra.append(Line2D([], [], ls="", label="diverged (top strip)", **marker))
    if FAILED in outcomes:
        extra.append(Line2D([], [], ls="", marker="x", ms=8, color=FAILED_COLOR, label="failed (top strip)"))
    if floor is not None:
        extra.append(Line2D([], [], ls=":", color="#555555", label="final loss exactly 0"))
    return extra


def _limits(values: pd.Series, floor: float | None, strip_rows: int) -> tuple[float, float]:
    """Log-scale y limits that keep the data (and the floor of zeros) below the strip of `strip_rows` rows."""
    shown = floored(values, floor)
    finite = shown[np.isfinite(shown) & (shown > 0)]
    if finite.size == 0:
        return 0.1, 10.0
    low, high = np.log10(finite.min()), np.log10(finite.max())
    span = max(high - low, 0.5)
    reserved = ROW * (strip_rows + 0.5) + (1 - STRIP) if strip_rows else 0.0
    total = span / (1 - reserved - 0.1)  # data between 5% and (1 - reserved - 5%) of the axis height
    return 10 ** (low - 0.05 * total), 10 ** (low + 0.95 * total)


def _panel(
    ax: Axes,
    data: pd.DataFrame,
    configs: pd.DataFrame,
    colours: dict,
    limits: tuple[float, float],
    floor: float | None,
) -> None:
    """Runs as points (or a band) and the mean over completed seeds as a line."""
    done = _done(data)
    many = len(done) > MAX_POINTS
    for name, runs in done.groupby("optimizer", observed=True, sort=True):
        if many:
            _band(ax, runs, colours[name], floor)
        else:
            y = floored(runs["final_val_loss"], floor)
            ax.scatter(runs["lr"], y, color=colours[name], alpha=0.45, s=22, lw=0)
    means = configs[configs["val_loss_mean"].notna()].sort_values("lr")
    for name, line in means.groupby("optimizer", observed=True, sort=True):
        marker = "o" if len(line) <= MAX_MARKERS else None
        y = floored(line["val_loss_mean"], floor)
        ax.plot(line["lr"], y, color=colours[name], lw=1.6, marker=marker, ms=5, mec="white", mew=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(*limits)
    _set_lr_limits(ax, data["lr"])
    log_ticks(ax, "x")
    log_ticks(ax, "y")
    mark_floor(ax, floor)


def _done(data: pd.DataFrame) -> pd.DataFrame:
    """The runs with a final loss to draw."""
    return data[(data["outcome"] == COMPLETED) & data["final_val_loss"].notna()]


def _band(ax: Axes, runs: pd.DataFrame, colour, floor: float | None) -> None:
    """The lowest to the highest final loss over seeds at each lr: where the points would lie."""
    spread = runs.groupby("lr")["final_val_loss"].agg(["min", "max"]).sort_index()
    low, high = floored(spread["min"], floor), floored(spread["max"], floor)
    ax.fill_between(spread.index, low, high, color=colour, alpha=0.25, lw=0)


def _set_lr_limits(ax: Axes, lrs: pd.Series) -> None:
    """Every lr tried, diverged ones included, with PAD inches either side: the strip's markers and their "×n"
    labels stay inside the axes, away from the row labels beside them."""
    lrs = lrs[lrs > 0]
    if lrs.empty:
        return
    low, high = np.log10(lrs.min()), np.log10(lrs.max())
    span = max(high - low, 0.5)
    inches = ax.get_position().width * ax.figure.get_figwidth()
    pad = span * PAD / max(inches - 2 * PAD, 0.5)
    ax.set_xlim(10 ** (low - pad), 10 ** (high + pad))


def _strip(ax: Axes, data: pd.DataFrame, colours: dict) -> None:
    """Runs without a final loss, at the top: one row per optimizer (the same row in every panel), a red X per
    lr where runs diverged, a grey x (nudged right, so the two never hide each other) where they failed, "×n"
    when several seeds did (on rows of up to MAX_COUNTS lrs)."""
    lost = data[data["outcome"].isin([DIVERGED, FAILED])]
    names = list(colours)
    bottom = STRIP - ROW * (len(names) - 0.5)
    ax.add_patch(
        Rectangle((0, bottom), 1, 1 - bottom, transform=ax.transAxes, color="#f2f2f2", zorder=0, lw=0)
    )
    ax.text(0.01, 0.995, "no final loss", transform=ax.transAxes, fontsize=7, va="top", color="#555555")
    at_top = blended_transform_factory(ax.transData, ax.transAxes)  # x: lr (data), y: axes fraction
    nudged = at_top + ScaledTranslation(0.1, 0, ax.figure.dpi_scale_trans)
    cells = lost.groupby(["optimizer", "outcome", "lr"], observed=True).size().reset_index(name="n")
    for (name, outcome), row in cells.groupby(["optimizer", "outcome"], observed=True, sort=True):
        y = STRIP - ROW * names.index(name)
        diverged = outcome == DIVERGED
        ax.scatter(
            row["lr"],
            np.full(len(row), y),
            transform=at_top if diverged else nudged,
            marker="X" if diverged else "x",
            s=70,
            clip_on=False,
            zorder=5,
            color=DIVERGED_COLOR if diverged else FAILED_COLOR,
            edgecolors=colours[name] if diverged else None,  # an "x" has no face: its colour is its edge
            linewidths=1.2,
        )
        if len(row) <= MAX_COUNTS:
            for lr, n in zip(row["lr"], row["n"]):
                if n > 1:
                    ax.annotate(
                        f"×{n}",
                        (lr, y),
                        xycoords=at_top,
                        xytext=(6, -3),
                        textcoords="offset points",
                        fontsize=7,
                    )


def _row_labels(ax: Axes, lost: pd.DataFrame, colours: dict) -> None:
    """Name the strip's rows, right of the axes (the last panel of a row of panels)."""
    names = list(colours)
    for name in sorted(set(lost["optimizer"])):
        y = STRIP - ROW * names.index(name)
        ax.text(1.02, y, name, transform=ax.transAxes, va="center", fontsize=7, color=colours[name])


SENSITIVITY = FigureKind(
    "sensitivity",
    "Learning-rate sensitivity",
    "Final validation loss of every run against the effective lr; the line is the mean over completed seeds. "
    f"In a panel of more than {MAX_POINTS} runs, a band from the lowest to the highest seed at each lr stands "
    "for the points. Runs without a final loss (diverged: red X; failed: grey x) sit in the strip at the top, one "
    "row per optimizer, ×n where n seeds did. A final loss of exactly 0 sits on the dotted line at the bottom.",
    draw_sensitivity,
)
