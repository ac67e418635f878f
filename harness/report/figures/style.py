"""What every figure shares: what a figure is (FigureKind), one colour per optimizer, axis labels with units, the
seaborn style, saving.

Seaborn's look comes as the rc params and palette seaborn gives (sns.axes_style("whitegrid"),
sns.plotting_context("notebook", font_scale=0.85), sns.color_palette("colorblind")), written out here: importing
seaborn imports scipy.stats, a large part of a report's start-up, for values that never change.
tests/test_report_answer.py checks them against the installed seaborn.
"""

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

# Diverged and failed runs are drawn, never dropped: a red X (or grey x) in a strip at the top of the axis.
DIVERGED_COLOR, FAILED_COLOR = "#d62728", "#7f7f7f"
DPI = 120
# sns.axes_style("whitegrid") | sns.plotting_context("notebook", font_scale=0.85), but image.cmap: seaborn's "rocket"
# exists only once seaborn is imported (the heatmap names its own colour map).
SEABORN_RC = {
    "figure.facecolor": "white",
    "axes.labelcolor": ".15",
    "xtick.direction": "out",
    "ytick.direction": "out",
    "xtick.color": ".15",
    "ytick.color": ".15",
    "axes.axisbelow": True,
    "grid.linestyle": "-",
    "text.color": ".15",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    "lines.solid_capstyle": "round",
    "patch.edgecolor": "w",
    "patch.force_edgecolor": True,
    "xtick.top": False,
    "ytick.right": False,
    "axes.grid": True,
    "axes.facecolor": "white",
    "axes.edgecolor": ".8",
    "grid.color": ".8",
    "axes.spines.left": True,
    "axes.spines.bottom": True,
    "axes.spines.right": True,
    "axes.spines.top": True,
    "xtick.bottom": False,
    "ytick.left": False,
    "axes.linewidth": 1.25,
    "grid.linewidth": 1,
    "lines.linewidth": 1.5,
    "lines.markersize": 6,
    "patch.linewidth": 1,
    "xtick.major.width": 1.25,
    "ytick.major.width": 1.25,
    "xtick.minor.width": 1,
    "ytick.minor.width": 1,
    "xtick.major.size": 6,
    "ytick.major.size": 6,
    "xtick.minor.size": 4,
    "ytick.minor.size": 4,
    "font.size": 10.2,
    "axes.labelsize": 10.2,
    "axes.titlesize": 10.2,
    "xtick.labelsize": 9.35,
    "ytick.labelsize": 9.35,
    "legend.fontsize": 9.35,
    "legend.title_fontsize": 10.2,
}
COLORBLIND = [  # sns.color_palette("colorblind")
    (0.00392156862745098, 0.45098039215686275, 0.6980392156862745),
    (0.8705882352941177, 0.5607843137254902, 0.0196078431372549),
    (0.00784313725490196, 0.6196078431372549, 0.45098039215686275),
    (0.8352941176470589, 0.3686274509803922, 0.0),
    (0.8, 0.47058823529411764, 0.7372549019607844),
    (0.792156862745098, 0.5686274509803921, 0.3803921568627451),
    (0.984313725490196, 0.6862745098039216, 0.8941176470588236),
    (0.5803921568627451, 0.5803921568627451, 0.5803921568627451),
    (0.9254901960784314, 0.8823529411764706, 0.2),
    (0.33725490196078434, 0.7058823529411765, 0.9137254901960784),
]
# The HTML's content column is 1352 px wide (render.STYLE: max-width 1400px less its padding): a figure up to this
# many inches wide at DPI is shown at its own size there, so its 7-point labels stay 11 px tall, not scaled down.
DISPLAY_WIDTH = 11.25
ZERO_LABEL = "exactly 0 (drawn on this line)"

LR_LABEL = "effective learning rate (lr × lr_scale, log scale)"
FINAL_LOSS_LABEL = "final validation loss (log scale)"
METRIC_LABELS = {
    "train/loss": "training loss (mini-batch, log scale)",
    "val/loss": "validation loss (log scale)",
}
BATCH_LABEL = "batch size (samples per step)"


@dataclass(frozen=True)
class FigureKind:
    """One figure of the report, defined once: its file name, title, caption (how to read it) and how to draw it.

    `draw` takes a view.TaskView (a figure per task) or the list of them (a figure across tasks) and returns a
    matplotlib Figure. A caption may name the report's time-to-target rule as {rule}.
    """

    name: str
    title: str
    caption: str
    draw: Callable[..., Figure]
    across_tasks: bool = False
    # Whether the figure carries information for this subject (e.g. not a profile of one optimizer): else omitted.
    shows: Callable[..., bool] = lambda subject: True


def palette(optimizers: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per optimizer, by sorted name: the same optimizer has the same colour in every figure."""
    names = sorted(set(optimizers))
    # colorblind without its vermillion and grey: those mean "diverged" and "failed" here.
    distinct = [COLORBLIND[i] for i in (0, 2, 1, 4, 5, 6, 8, 9)]
    if len(names) <= len(distinct):
        return dict(zip(names, distinct))
    import seaborn as sns  # only for more optimizers than distinct colours

    colours = sns.color_palette("husl", len(names))
    return dict(zip(names, colours))


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """Seaborn's look for the figures made inside, without changing matplotlib's global settings for the caller."""
    with matplotlib.rc_context(SEABORN_RC):
        yield


def batch_names(frame: pd.DataFrame) -> dict[int, str]:
    """Panel titles per resolved batch size: "batch size 32", or "full batch (426)" when configured as "full"."""
    pairs = frame[["batch_size", "batch_label"]].dropna(subset=["batch_size"]).drop_duplicates("batch_size")
    return {
        size: f"full batch ({size})" if str(label) == "full" else f"batch size {size}"
        for size, label in zip(pairs["batch_size"], pairs["batch_label"])
    }


def new_figure(
    width: float,
    height: float,
    rows: int = 1,
    columns: int = 1,
    *,
    top: float = 0.7,
    bottom: float = 0.95,
    left: float = 0.85,
    right: float = 0.25,
    hgap: float = 0.8,
    wgap: float = 0.55,
) -> Figure:
    """A figure whose rows x columns axes sit inside fixed margins and gaps, in inches (top: the title; bottom: the
    x labels and a one-row legend). No layout engine: measuring every text to place the axes cost as much as
    drawing the figure, and these figures' labels have known sizes."""
    figure = Figure(figsize=(width, height))
    axes_width = (width - left - right - wgap * (columns - 1)) / columns
    axes_height = (height - top - bottom - hgap * (rows - 1)) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wgap / axes_width,
        hspace=hgap / axes_height,
    )
    return figure


def save(figure: Figure, directory: Path, name: str) -> dict[str, Path]:
    """Write `name`.png and `name`.svg into `directory`; returns {"png": path, "svg": path}."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: directory / f"{name}.{kind}" for kind in ("png", "svg")}
    # compress_level 1: PNG encoding at the default level 6 cost more than drawing some figures; files grow ~20%.
    figure.savefig(paths["png"], dpi=DPI, pil_kwargs={"compress_level": 1})
    figure.savefig(paths["svg"], metadata={"Date": None})  # no timestamp: same data, same file
    return paths


def log_ticks(ax, axis: str = "y") -> None:
    """Call after plotting on a log axis. Under two decades: labels 0.2, 0.5, 1, 2; wider ranges: powers of ten,
    written 0.01 or 1e-05. Plain text, not mathtext (whose parser costs more than the rest of a tick label), and no
    minor ticks: unlabelled, they cost most of the drawing time."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    few_decades = low > 0 and high / low <= 100
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)) if few_decades else LogLocator(numticks=8))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


def optimizer_legend(figure: Figure, colours: dict, labels: dict[str, str] | None = None, extra=()) -> None:
    """One legend for the whole figure, below the axes: optimizer colours (with `labels`), then `extra` handles.
    Legends of more than one row (over four entries) push the axes up by the rows they add."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colour, lw=2.5, label=(labels or {}).get(name, name))
        for name, colour in colours.items()
    ]
    entries = len(handles) + len(extra)
    columns = min(4, entries)
    rows = -(-entries // max(columns, 1))
    if rows > 1:
        height = figure.get_figheight()
        figure.subplots_adjust(bottom=figure.subplotpars.bottom + 0.25 * (rows - 1) / height)
    figure.legend(
        handles=[*handles, *extra],
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=columns,
        frameon=False,
    )


def zero_floor(values) -> float | None:
    """Where values of exactly 0 are drawn on a log axis, which has no 0: a decade below the smallest positive
    value (1 when there is none); None when no value is 0."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if not (values == 0).any():
        return None
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) / 10 if positive.size else 1.0


def floored(values, floor: float | None):
    """`values` with exact zeros moved to `floor` (unchanged when floor is None)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    return values if floor is None else np.where(values == 0, floor, values)


def mark_floor(ax, floor: float | None) -> None:
    """A dotted line at `floor`, labelled: the points on it are exactly 0."""
    if floor is None:
        return
    from matplotlib.transforms import blended_transform_factory

    ax.axhline(floor, color="#555555", lw=0.8, ls=":", zorder=1)
    at = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(0.01, floor, ZERO_LABEL, transform=at, ha="left", va="bottom", fontsize=7, color="#555555")
