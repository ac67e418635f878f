"""The tuning budget: the expected best result after k configurations drawn at random from the grid."""

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from harness.report.figures.style import log_ticks, new_figure, optimizer_legend, styled


def budget_figure(curves: pd.DataFrame, colours: dict) -> Figure:
    """Expected best final validation loss against k, the number of configurations tried, per optimizer (from
    budget.tuning_curves: exact order statistics over the grid)."""
    present = {name: colours[name] for name in sorted(curves["optimizer"].unique())}
    with styled():
        figure = new_figure(7.5, 5.0)
        ax = figure.subplots()
        sns.lineplot(
            data=curves,
            x="k",
            y="expected_best",
            hue="optimizer",
            palette=present,
            ax=ax,
            marker="o" if curves["k"].max() <= 20 else None,
            legend=False,
            errorbar=None,
        )
        ax.set_yscale("log")
        log_ticks(ax)
        ax.set_xlabel("configurations tried at random from the grid (k; lr × batch size, seeds averaged)")
        ax.set_ylabel("expected best final validation loss (log scale)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        figure.suptitle(
            "Tuning budget: expected best result after k random trials\n"
            "(diverged or failed trials count as the untrained model)"
        )
        optimizer_legend(figure, present)
    return figure
