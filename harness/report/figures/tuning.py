"""The tuning budget: the expected best result after k configurations drawn at random from the grid.

Drawing k of the N configurations without replacement, the best of them is the i-th best overall (scores sorted
ascending, s_1 <= ... <= s_N) exactly when it is drawn and all the others come from the N - i worse ones:
P(best = s_i) = C(N - i, k - 1) / C(N, k). So E[best of k] = sum_i s_i C(N - i, k - 1) / C(N, k): exact, no
sampling. Ties do not change the expectation. Configurations that diverged or failed score as the untrained model
(ranking.per_config's budget_score), so unlucky draws cost what they would cost a tuner.
"""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.special import gammaln

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
from harness.report.view import TaskView

MAX_K = 300  # points per curve: about the pixels of the panel


def expected_best(scores: np.ndarray, ks: np.ndarray | None = None) -> np.ndarray:
    """E[min of k draws without replacement] (lower is better), for k in `ks` (default: every k = 1..N).

    Args:
        scores: the N configurations' scores (finite).
        ks: the numbers of draws to evaluate, each in 1..N.

    Returns:
        One expectation per k (element j is for ks[j]).
    """
    s = np.sort(np.asarray(scores, dtype=float))
    n = s.size
    i = np.arange(1, n + 1)[:, None]  # rank of a score
    k = (np.arange(1, n + 1) if ks is None else np.asarray(ks, dtype=int))[None, :]  # draws
    with np.errstate(invalid="ignore"):
        # log C(N-i, k-1) - log C(N, k), in logs: C(1000, 500) already overflows a float.
        log_p = _log_comb(n - i, k - 1) - _log_comb(n, k)
    p = np.where(n - i >= k - 1, np.exp(log_p), 0.0)
    return s @ p


def draws(n: int) -> np.ndarray:
    """The k at which a curve over 1..n is evaluated: all of them up to MAX_K, else MAX_K log-spaced ones (the x
    axis is logarithmic then), 1 and n included. The cost is N x len(ks), not N^2, on a grid of thousands."""
    if n <= MAX_K:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.geomspace(1, n, MAX_K)).astype(int))


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def tuning_curves(configs: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: k (configurations tried, 1..N) and the expected best `budget_score`."""
    parts = []
    for optimizer, group in configs.groupby("optimizer", observed=True, sort=True):
        scores = group["budget_score"].dropna().to_numpy()
        if scores.size:
            ks = draws(scores.size)
            frame = {"optimizer": optimizer, "k": ks, "expected_best": expected_best(scores, ks)}
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
    floor = zero_floor(curves["expected_best"])
    with styled():
        figure = new_figure(7.5, 5.0, top=0.9)
        ax = figure.subplots()
        few = curves["k"].max() <= 20
        for name, curve in curves.groupby("optimizer", observed=True, sort=True):
            y = floored(curve["expected_best"], floor)
            ax.plot(curve["k"], y, color=present[name], lw=1.8, marker="o" if few else None, ms=5)
        if curves["k"].max() > MAX_K:
            ax.set_xscale("log")
            log_ticks(ax, "x")
        ax.set_yscale("log")
        log_ticks(ax)
        mark_floor(ax, floor)
        ax.set_xlabel("configurations tried at random from the grid (k; lr × batch size, seeds averaged)")
        ax.set_ylabel("expected best final validation loss (log scale)")
        if curves["k"].max() <= MAX_K:
            ax.xaxis.get_major_locator().set_params(integer=True)
        figure.suptitle(
            "Tuning budget: expected best result after k random trials\n"
            "(diverged or failed trials count as the untrained model)"
        )
        optimizer_legend(figure, present)
    return figure


def _has_choice(view: TaskView) -> bool:
    """A curve needs two configurations to choose from: with one per optimizer it is a single point."""
    return bool((view.configs.groupby("optimizer", observed=True).size() > 1).any())


BUDGET = FigureKind(
    "tuning_budget",
    "Tuning budget",
    "Expected best mean final validation loss if you tried k configurations of the grid at random (exact, from "
    f"order statistics). A curve that drops fast is easy to tune. Over {MAX_K} configurations, k runs on a log axis "
    f"(evaluated at {MAX_K} values of k); an expected loss of exactly 0 sits on the dotted line at the bottom.",
    draw_budget,
    shows=_has_choice,
)
