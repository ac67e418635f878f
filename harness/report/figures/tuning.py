"""The tuning budget: the expected best result after k configurations drawn at random from the grid.

The expectation is exact, from order statistics (stats.expected_best); the curve and its band are
stats.tuning_intervals, recomputed on every bootstrap replicate of the seeds. A configuration's score is its
aggregate over seeds of stats.run_scores: diverged runs score as the untrained model, so unlucky draws cost what
they would cost a tuner; failed and killed runs say nothing about the optimizer and are left out.
"""

from matplotlib.figure import Figure

from harness.report.figures.style import (
    FigureKind,
    floored,
    log_ticks,
    mark_floor,
    new_figure,
    optimizer_legend,
    styled,
    zero_floor,
)
from harness.report.stats import MAX_K, draws, expected_best
from harness.report.view import TaskView

__all__ = ["BUDGET", "MAX_K", "draws", "draw_budget", "expected_best"]  # the estimators live in stats


def draw_budget(view: TaskView) -> Figure:
    """Expected best final validation loss against k, the number of configurations tried, per optimizer, in its
    bootstrap band."""
    curves = view.tuning
    present = {name: view.colours[name] for name in sorted(curves["optimizer"].unique())}
    floor = zero_floor(curves[["expected_best", "lo", "hi"]].to_numpy().ravel())
    with styled():
        figure = new_figure(7.5, 5.0, top=0.9)
        ax = figure.subplots()
        few = curves["k"].max() <= 20
        for name, curve in curves.groupby("optimizer", observed=True, sort=True):
            colour = present[name]
            lo, hi = floored(curve["lo"], floor), floored(curve["hi"], floor)
            ax.fill_between(curve["k"], lo, hi, color=colour, alpha=0.18, lw=0)
            y = floored(curve["expected_best"], floor)
            ax.plot(curve["k"], y, color=colour, lw=1.8, marker="o" if few else None, ms=5)
        if curves["k"].max() > MAX_K:
            ax.set_xscale("log")
            log_ticks(ax, "x")
        ax.set_yscale("log")
        log_ticks(ax)
        mark_floor(ax, floor)
        ax.set_xlabel(
            f"configurations tried at random from the grid (k; lr × batch size, seeds: {_over(view)})"
        )
        ax.set_ylabel("expected best final validation loss (log scale)")
        if curves["k"].max() <= MAX_K:
            ax.xaxis.get_major_locator().set_params(integer=True)
        figure.suptitle(
            "Tuning budget: expected best result after k random trials\n"
            "(diverged trials count as the untrained model)"
        )
        ax.set_title(_band_text(view), fontsize=8)
        optimizer_legend(figure, present)
    return figure


def _band_text(view: TaskView) -> str:
    if (view.tuning["lo"] == view.tuning["hi"]).all():
        return "no bands: resampling the seeds changes nothing (identical results on every seed)"
    return f"bands: {100 * view.method.confidence:.0f} % bootstrap intervals over seeds"


def _over(view: TaskView) -> str:
    return "interquartile mean" if view.method.aggregate == "iqm" else "averaged"


def _has_choice(view: TaskView) -> bool:
    """A curve needs two configurations to choose from: with one per optimizer it is a single point."""
    return bool((view.configs.groupby("optimizer", observed=True).size() > 1).any())


BUDGET = FigureKind(
    "tuning_budget",
    "Tuning budget",
    "Expected best final validation loss (a configuration's mean over seeds, or its interquartile mean with "
    "--aggregate iqm) if you tried k configurations of the grid at random (exact, from order statistics); the band "
    "is its 95 % bootstrap interval over seeds, and at k = N it is the interval of the ranked table's score. "
    "Failed and killed runs are left out. A curve that drops fast is easy to tune. "
    f"Over {MAX_K} configurations, k runs on a log axis (evaluated at {MAX_K} values of k); an expected loss of exactly 0 sits on the dotted line at the bottom.",
    draw_budget,
    shows=_has_choice,
)
