"""The tuning budget: the expected best result after k configurations drawn at random from the grid.

Drawing k of the N configurations without replacement, the best of them is the i-th best overall (scores sorted
ascending, s_1 <= ... <= s_N) exactly when it is drawn and all the others come from the N - i worse ones:
P(best = s_i) = C(N - i, k - 1) / C(N, k). So E[best of k] = sum_i s_i C(N - i, k - 1) / C(N, k): exact, no
sampling. Ties do not change the expectation. Configurations that diverged or failed score as the untrained model
(ranking.per_config's budget_score), so unlucky draws cost what they would cost a tuner.
"""

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.special import gammaln

from harness.report.figures.style import FigureKind, log_ticks, new_figure, optimizer_legend, styled
from harness.report.view import TaskView


def expected_best(scores: np.ndarray) -> np.ndarray:
    """E[min of k draws without replacement], for k = 1..N (lower is better).

    Args:
        scores: the N configurations' scores (finite).

    Returns:
        An array of N expectations; element k-1 is for k draws.
    """
    s = np.sort(np.asarray(scores, dtype=float))
    n = s.size
    i = np.arange(1, n + 1)[:, None]  # rank of a score
    k = np.arange(1, n + 1)[None, :]  # draws
    with np.errstate(invalid="ignore"):
        # log C(N-i, k-1) - log C(N, k), in logs: C(1000, 500) already overflows a float.
        log_p = _log_comb(n - i, k - 1) - _log_comb(n, k)
    p = np.where(n - i >= k - 1, np.exp(log_p), 0.0)
    return s @ p


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def tuning_curves(configs: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: k (configurations tried, 1..N) and the expected best `budget_score`."""
    parts = []
    for optimizer, group in configs.groupby("optimizer", observed=True, sort=True):
        scores = group["budget_score"].dropna().to_numpy()
        if scores.size:
            frame = {
                "optimizer": optimizer,
                "k": np.arange(1, scores.size + 1),
                "expected_best": expected_best(scores),
            }
            parts.append(pd.DataFrame(frame))
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["optimizer", "k", "expected_best"])
    )


def draw_budget(view: TaskView) -> Figure:
    """Expected best final validation loss against k, the number of configurations tried, per optimizer."""
    curves = tuning_curves(view.configs)
    present = {name: view.colours[name] for name in sorted(curves["optimizer"].unique())}
    with styled():
        figure = new_figure(7.5, 5.0, top=0.9)
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


BUDGET = FigureKind(
    "tuning_budget",
    "Tuning budget",
    "Expected best mean final validation loss if you tried k configurations of the grid at random (exact, from "
    "order statistics). A curve that drops fast is easy to tune.",
    draw_budget,
)
