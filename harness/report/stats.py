"""How sure the report is: bootstrap intervals over seeds for each optimizer's tuned score, the probability that the
winner beats each other optimizer, and intervals on the performance profiles and the tuning-budget curves. Pure
functions of the report's runs frame (load.runs_frame: one row per run); numpy, pandas and scipy only.

The method, as an appendix would state it:

- **The score of a run** is its final validation loss (lower is better). A run that diverged scores as the untrained
  model, its initial validation loss (ranking's budget_score rule): divergence is the optimizer's doing at that
  configuration, and what the user is left with is a model no better than where it started; dropping such runs
  would reward configurations that diverge on some seeds, and an infinite score would make every mean that
  includes one infinite. A run that failed or was killed (a crash, a refused config, a missing device, a signal)
  says nothing about the optimizer: it is left out, as the ranking leaves it out (the report counts and names those
  runs). Runs still running, and any other outcome without a final result, are left out too.
- **An optimizer's score on a task** is the aggregate of its best configuration (the lowest aggregate over the
  configurations it was tried at: lr, batch size, ...). The aggregate over a configuration's seeds is the mean
  (the default) or the interquartile mean (`Method(aggregate="iqm")`: scipy.stats.trim_mean with 0.25 cut from
  each end, int(n / 4) values each side, as rliable computes it; robust to one seed's outlier, and equal to the
  mean for n <= 3).
- **Intervals** are 95 % percentile intervals of a stratified bootstrap over seeds (rliable: Agarwal et al.,
  NeurIPS 2021): each replicate resamples, with replacement, each configuration's own seeds (strata are the
  configurations: each keeps its number of seeds), then redoes the choice of the best configuration on the
  resampled aggregates. The interval thus contains the tuning noise: with few seeds, a configuration that was
  lucky on its seeds is often not the one chosen in a replicate, and the interval widens accordingly. The share of
  replicates that chose the reported configuration is given as `chosen_share`. The choice inside a replicate is
  the lowest aggregate. With many configurations and few seeds the interval can lie below the point estimate: a
  replicate's minimum over configurations is taken over aggregates of resampled seeds, noisier than the data's, so
  the choice's optimism (the winner's curse) is larger in the bootstrap; such an interval says that the tuned score
  is optimistic, and more seeds per configuration are what narrows it. With divergence scored as above, a configuration that diverges on some seeds pays for it in
  its aggregate. The ranking table instead puts configurations that never diverged first; the two agree unless a
  configuration diverging on some seeds has a lower mean than every configuration that never diverged.
- **Probability of improvement** of the winner (the lowest score) over another optimizer, at their chosen
  configurations: P(winner's run scores lower than the other's) + 0.5 P(equal). When the two chosen configurations
  ran the same seeds (at least two), runs are paired by seed: the share of seeds on which the winner did better
  (ties half), and the bootstrap resamples seeds jointly (one draw of seed values per replicate, applied to every
  configuration of both optimizers), so that what a seed shares across configurations (its initialisation, its
  data order) cancels in the difference. Otherwise the runs are unpaired: the Mann-Whitney statistic over every
  pair of runs, with the stratified bootstrap above. The probability says how often one run beats the other, not
  how likely the winner is better on average; the difference of scores ("margin": the other's score minus the
  winner's) comes with its bootstrap interval, and the comparison is **decided** when that interval excludes 0.
- **Seeds needed** when it is not decided: the interval's half-width on the side of 0 shrinks as 1/sqrt(n) with n
  seeds per configuration (seed noise and, to first order, the choice noise), so the interval would exclude 0 at
  n' > n ((margin - lo) / margin)^2 seeds per configuration, if the margin stays what it is. This is an order of
  magnitude to plan the next sweep, not a power analysis. With one seed per configuration there is no spread to
  measure and no estimate; with a margin of 0 no number of seeds is expected to separate them (inf).
- **Performance profiles** (Dolan & More 2002, as AlgoPerf draws them): rho(tau), the share of tasks on which an
  optimizer reaches the target within tau x the fastest optimizer's time, with times and ratios exactly as the
  report computes them (ranking.target_times, figures.target.ratios); each replicate resamples seeds within each
  task's configurations (stratified for the median-seeds rule; seeds jointly for AlgoPerf's rule, whose studies
  are the seeds), recomputes every optimizer's time and the ratios, and rho at each tau.
- **Tuning-budget curves**: the expected best of k configurations drawn from the grid (`expected_best`, exact:
  the sorted scores times `best_of_k_weights`), recomputed on each replicate's aggregates, at the same <= MAX_K
  values of k as the report draws (`draws`). The weights depend on N and k only, so they are built once per
  optimizer and each chunk of replicates is one sort and one matrix product.

Randomness comes from one numpy Generator per task, seeded by `Method.seed` and the task's name (a report is
reproducible, and adding a task does not change another's intervals). Replicates are drawn as index arrays in
chunks, so a task's cost is a few array passes over replicates x seeds x configurations; the tuning curve
is one sort and one matrix product per optimizer.

This module imports no figure and no view (the views compute their intervals with it, and the figures draw them).
"""

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

from harness.report import ranking
from harness.report.ranking import profile, ratios
from harness.tracking import schema

AGGREGATES = ("mean", "iqm")
RULES = tuple(ranking.TARGET_RULES)
MAX_K = 300  # values of k on a tuning-budget curve: about the pixels of the figure's panel
CHUNK = (
    1 << 22
)  # values resampled at once (an int32 index and float64 values: 48 MiB); replicates go in chunks
SCORE_COLUMNS = ["task", "optimizer", "rank", "seeds", "configurations", "score", "score_lo", "score_hi"]
TUNING_COLUMNS = ["task", "optimizer", "k", "expected_best", "lo", "hi"]
COMPARISON_COLUMNS = [
    "task",
    "better",
    "other",
    "paired",
    "seeds",
    "probability",
    "probability_lo",
    "probability_hi",
    "margin",
    "margin_lo",
    "margin_hi",
    "decided",
    "more_seeds",
    "identical",
    "confidence",
]


@dataclass(frozen=True)
class Method:
    """How the intervals are computed (see the module docstring)."""

    replicates: int = 1000  # bootstrap replicates
    confidence: float = 0.95  # of the percentile intervals
    aggregate: str = "mean"  # over a configuration's seeds: one of AGGREGATES
    seed: int = 0  # of the Generator: the same seed gives the same intervals

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate={self.aggregate!r}: allowed are {', '.join(AGGREGATES)}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence={self.confidence}: must lie strictly between 0 and 1")
        if self.replicates < 1:
            raise ValueError(f"replicates={self.replicates}: must be at least 1")

    @property
    def quantiles(self) -> tuple[float, float]:
        """The interval's ends as quantiles of the replicates: (0.025, 0.975) at 95 %."""
        tail = (1 - self.confidence) / 2
        return tail, 1 - tail


DEFAULT_METHOD = Method()


@dataclass(frozen=True)
class Analysis:
    """The tables of `analyse`: each optimizer's tuned score, and the winner against each other optimizer."""

    scores: pd.DataFrame  # SCORE_COLUMNS, the chosen configuration's keys, chosen_share, aggregate
    comparisons: pd.DataFrame  # COMPARISON_COLUMNS
    tuning: pd.DataFrame | None = (
        None  # TUNING_COLUMNS: tuning_intervals, from the same replicates as the scores
    )


@dataclass(frozen=True)
class _Layout:
    """One task's values laid out for resampling; configurations sorted by optimizer, so each is a slice."""

    configs: pd.DataFrame  # one row per configuration: the configuration's keys
    optimizers: list[str]
    slices: list[slice]  # the configurations of each optimizer
    seeds: np.ndarray  # (M,) the task's seed values, sorted
    by_seed: np.ndarray  # (M, C): each configuration's value at each seed, NaN where it has none
    packed: np.ndarray  # (m, C): each configuration's values first, then NaN; m = the most seeds of any
    counts: np.ndarray  # (C,) seeds of each configuration


# --- the score of a run -----------------------------------------------------------------------------------------


def run_scores(runs: pd.DataFrame) -> pd.Series:
    """Each run's score (see the module docstring): the final validation loss of a completed run, the untrained
    model's loss of a diverged one, NaN for runs that are left out (failed, killed, running, no finite result)."""
    score = ranking._budget_score(runs)  # one home for "diverged scores as the untrained model"
    kept = runs["outcome"].isin(schema.RANKED_OUTCOMES) & np.isfinite(score.astype(float))
    return score.where(kept).astype(float)


# --- the tuned score and the winner's comparisons ---------------------------------------------------------------


def analyse(runs: pd.DataFrame, method: Method = Method(), config: list[str] = ranking.CONFIG) -> Analysis:
    """Each optimizer's score at its best configuration with a bootstrap interval, and the winner's probability of
    improvement over each other optimizer with the interval of the margin, per task.

    Args:
        runs: the report's runs frame (task, optimizer, the configuration's keys, seed, outcome, final_val_loss,
            initial_val_loss).
        method: replicates, confidence, aggregate and seed.
        config: the columns that make a configuration; must start with task and optimizer.

    Returns:
        scores: per task (in name order) its optimizers best first: rank, the chosen configuration's keys, seeds
        (of that configuration), configurations (tried), score, score_lo, score_hi, chosen_share, aggregate.
        comparisons: per task the winner against each other optimizer in rank order: paired, seeds, probability
        (with its interval), margin (the other's score minus the winner's, with its interval), decided,
        more_seeds (NaN when decided or unknown, inf when the margin is 0), identical (each of the two chosen
        configurations gave one value on all its seeds, at least two: a deterministic task) and confidence.
        tuning: tuning_intervals of the same runs, from the replicates of the scores (the same numbers).
    """
    parts = [
        _analyse_task(task, layout, method)
        for task, layout in _layouts(runs, run_scores(runs), config).items()
    ]
    scores = [part[0] for part in parts]
    comparisons = [part[1] for part in parts if not part[1].empty]
    curves = [part[2] for part in parts]
    return Analysis(
        pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=SCORE_COLUMNS),
        pd.concat(comparisons, ignore_index=True)
        if comparisons
        else pd.DataFrame(columns=COMPARISON_COLUMNS),
        pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=TUNING_COLUMNS),
    )


def _analyse_task(
    task: str, layout: _Layout, method: Method
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = _generator(method, task)
    point = _aggregate(layout.packed[None], method.aggregate)
    chosen = _choose(point, layout)[0]
    replicates = np.concatenate(
        [_aggregate(x, method.aggregate) for x in _stratified(layout, rng, method.replicates)]
    )
    scores = _score_table(layout, method, point[0], chosen, replicates)
    order = [layout.optimizers.index(name) for name in scores["optimizer"]]
    curves = _tuning(task, layout, method, point[0], replicates)
    comparisons = [_compare(layout, method, rng, order[0], other, chosen) for other in order[1:]]
    table = pd.DataFrame([{"task": task, **row} for row in comparisons], columns=COMPARISON_COLUMNS)
    return (
        scores,
        table.astype({"paired": bool, "decided": bool, "identical": bool, "seeds": "int64"}),
        curves,
    )


def _score_table(layout, method, point, chosen, replicates) -> pd.DataFrame:
    picks = _choose(replicates, layout)
    best = np.take_along_axis(replicates, picks, axis=1)
    lo, hi = np.quantile(best, method.quantiles, axis=0)
    table = layout.configs.iloc[chosen].reset_index(drop=True)
    table = table.assign(
        seeds=layout.counts[chosen],
        configurations=[s.stop - s.start for s in layout.slices],
        score=point[chosen],
        score_lo=lo,
        score_hi=hi,
        chosen_share=(picks == chosen[None, :]).mean(axis=0),
        aggregate=method.aggregate,
    )
    table = table.sort_values("score", kind="stable").reset_index(drop=True)
    table.insert(2, "rank", np.arange(1, len(table) + 1))
    return table


def _compare(layout: _Layout, method: Method, rng, better: int, other: int, chosen: np.ndarray) -> dict:
    """The winner `better` against `other` (optimizer indices), paired by seed when their chosen configurations
    ran the same seeds (two or more)."""
    a, b = chosen[better], chosen[other]
    seeds_a, seeds_b = ~np.isnan(layout.by_seed[:, a]), ~np.isnan(layout.by_seed[:, b])
    paired = bool((seeds_a == seeds_b).all() and seeds_a.sum() >= 2)
    sub = _sub_layout(layout, [better, other])
    if paired:
        draws, point_values, n = _joint(sub, rng, method.replicates), sub.by_seed[None], int(seeds_a.sum())
    else:
        draws, point_values = _stratified(sub, rng, method.replicates), sub.packed[None]
        n = int(min(layout.counts[a], layout.counts[b]))
    point = _pair_statistics(point_values, sub, method, paired)
    reps = np.concatenate([_pair_statistics(x, sub, method, paired) for x in draws])
    (p_lo, m_lo), (p_hi, m_hi) = np.nanquantile(reps, method.quantiles, axis=0)
    probability, margin = point[0]
    more = seeds_needed(margin, m_lo, n)
    return {
        "better": layout.optimizers[better],
        "other": layout.optimizers[other],
        "paired": paired,
        "seeds": n,
        "probability": probability,
        "probability_lo": p_lo,
        "probability_hi": p_hi,
        "margin": margin,
        "margin_lo": m_lo,
        "margin_hi": m_hi,
        "decided": bool(n >= 2 and m_lo > 0),
        "more_seeds": np.nan if more is None else float(more),
        "identical": _constant(layout.by_seed[:, a]) and _constant(layout.by_seed[:, b]),
        "confidence": method.confidence,
    }


def _constant(values: np.ndarray) -> bool:
    """Two or more values, all equal (NaN: absent): the seeds changed nothing at this configuration."""
    present = values[~np.isnan(values)]
    return bool(present.size >= 2 and (present == present[0]).all())


def _pair_statistics(x: np.ndarray, sub: _Layout, method: Method, paired: bool) -> np.ndarray:
    """(r, 2): the probability of improvement of optimizer 0 over 1 and the margin, per replicate, each at the
    configurations chosen in that replicate. x: (r, seeds, C) values of `sub`'s configurations."""
    aggregates = _aggregate(x, method.aggregate)
    picks = _choose(aggregates, sub)
    rows = np.arange(x.shape[0])
    best = np.take_along_axis(aggregates, picks, axis=1)
    first, second = x[rows, :, picks[:, 0]], x[rows, :, picks[:, 1]]  # (r, seeds)
    probability = _paired_probability(first, second) if paired else _unpaired_probability(first, second)
    return np.stack([probability, best[:, 1] - best[:, 0]], axis=1)


def _paired_probability(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, over the seeds both have: the share where a < b, ties half (NaN: absent)."""
    both = ~(np.isnan(a) | np.isnan(b))
    wins = (a < b).sum(axis=1) + 0.5 * ((a == b) & both).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / both.sum(axis=1)


def _unpaired_probability(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, over every pair of a's and b's values: the share where a < b, ties half (Mann-Whitney's U / n m)."""
    left, right = a[:, :, None], b[:, None, :]
    wins = (left < right).sum(axis=(1, 2)) + 0.5 * (left == right).sum(axis=(1, 2))
    pairs = (~np.isnan(a)).sum(axis=1) * (~np.isnan(b)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / pairs


def seeds_needed(margin: float, lo: float, seeds: int) -> int | float | None:
    """About how many more seeds per configuration would make the interval of the margin exclude 0.

    Args:
        margin: the other's score minus the winner's (>= 0).
        lo: the lower end of the margin's interval.
        seeds: the seeds per configuration the interval came from.

    Returns:
        None when the interval already excludes 0 or there is nothing to scale (fewer than 2 seeds, no interval);
        inf when the margin is 0; else the smallest n' - seeds with n' > seeds ((margin - lo) / margin)^2.
    """
    if seeds < 2 or not np.isfinite(lo) or lo > 0:
        return None
    if margin <= 0:
        return math.inf
    needed = math.floor(seeds * ((margin - lo) / margin) ** 2) + 1
    return max(needed - seeds, 1)


# --- tuning-budget curves and performance profiles --------------------------------------------------------------


def expected_best(scores: np.ndarray, ks: np.ndarray | None = None) -> np.ndarray:
    """E[min of k draws without replacement] (lower is better), for k in `ks` (default: every k = 1..N).

    Drawing k of the N configurations without replacement, the best of them is the i-th best overall (scores sorted
    ascending, s_1 <= ... <= s_N) exactly when it is drawn and all the others come from the N - i worse ones:
    P(best = s_i) = C(N - i, k - 1) / C(N, k). So E[best of k] = sum_i s_i C(N - i, k - 1) / C(N, k): exact, no
    sampling. Ties do not change the expectation.

    Args:
        scores: the N configurations' scores (finite).
        ks: the numbers of draws to evaluate, each in 1..N.

    Returns:
        One expectation per k (element j is for ks[j]).
    """
    s = np.sort(np.asarray(scores, dtype=float))
    ks = np.arange(1, s.size + 1) if ks is None else np.asarray(ks, dtype=int)
    return s @ best_of_k_weights(s.size, ks)


def best_of_k_weights(n: int, ks: np.ndarray) -> np.ndarray:
    """(n, len(ks)): P(the best of k draws from n is the i-th best), i = 1..n down the rows; scores sorted ascending
    times these weights are the expected bests (`expected_best`)."""
    i = np.arange(1, n + 1)[:, None]  # rank of a score
    k = np.asarray(ks, dtype=int)[None, :]  # draws
    with np.errstate(invalid="ignore"):
        # log C(N-i, k-1) - log C(N, k), in logs: C(1000, 500) already overflows a float.
        log_p = _log_comb(n - i, k - 1) - _log_comb(n, k)
    return np.where(n - i >= k - 1, np.exp(log_p), 0.0)


def draws(n: int) -> np.ndarray:
    """The k at which a curve over 1..n is evaluated: all of them up to MAX_K, else MAX_K log-spaced ones (the x
    axis is logarithmic then), 1 and n included. The cost is N x len(ks), not N^2, on a grid of thousands."""
    if n <= MAX_K:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.geomspace(1, n, MAX_K)).astype(int))


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def tuning_intervals(
    runs: pd.DataFrame, method: Method = Method(), config: list[str] = ranking.CONFIG
) -> pd.DataFrame:
    """Per task and optimizer: k (configurations tried, at `draws(N)`), the expected best aggregate score of k
    configurations drawn at random from the grid, and its bootstrap interval.

    Returns:
        task, optimizer, k, expected_best, lo, hi.
    """
    parts = []
    for task, layout in _layouts(runs, run_scores(runs), config).items():
        point = _aggregate(layout.packed[None], method.aggregate)[0]
        rng = _generator(method, task)
        replicates = np.concatenate(
            [_aggregate(x, method.aggregate) for x in _stratified(layout, rng, method.replicates)]
        )
        parts.append(_tuning(task, layout, method, point, replicates))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TUNING_COLUMNS)


def _tuning(
    task: str, layout: _Layout, method: Method, point: np.ndarray, replicates: np.ndarray
) -> pd.DataFrame:
    """One task's tuning curves from the aggregates of the data (C,) and of the replicates (R, C)."""
    parts = []
    for name, part in zip(layout.optimizers, layout.slices):
        ks = draws(part.stop - part.start)
        weights = best_of_k_weights(part.stop - part.start, ks)
        lo, hi = np.quantile(np.sort(replicates[:, part], axis=1) @ weights, method.quantiles, axis=0)
        best = np.sort(point[part]) @ weights
        frame = {"task": task, "optimizer": name, "k": ks, "expected_best": best, "lo": lo, "hi": hi}
        parts.append(pd.DataFrame(frame))
    return pd.concat(parts, ignore_index=True)


def profile_intervals(
    runs: pd.DataFrame,
    column: str = "time_to_target_s",
    rule: str = "median-seeds",
    method: Method = Method(),
    config: list[str] = ranking.CONFIG,
) -> pd.DataFrame:
    """The performance profile over the tasks (as figures.target.profile draws it) with a bootstrap interval at
    each tau.

    Args:
        runs: the report's runs frame, every task; runs still running are left out, others that never reached
            the target are infinitely slow (as in ranking.target_times).
        column: time_to_target_s or steps_to_target.
        rule: how an optimizer's time is aggregated (ranking.TARGET_RULES).

    Returns:
        optimizer, tau, rho (figures.target.profile of the report's own times), lo, hi.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}: allowed are {', '.join(RULES)}")
    ended = runs[runs["outcome"] != schema.RUNNING_OUTCOME]
    layouts = _layouts(ended, ended[column].astype(float).fillna(np.inf), config)
    if not layouts:
        return pd.DataFrame(columns=["optimizer", "tau", "rho", "lo", "hi"])
    optimizers = sorted({name for layout in layouts.values() for name in layout.optimizers})
    point = np.concatenate(
        [_times(layout, _point_values(layout, rule), rule, optimizers) for layout in layouts.values()]
    )
    curve = profile(_ratio_table(point[None], optimizers)[0])
    taus = np.unique(curve["tau"].to_numpy())
    times = np.stack(
        [
            np.concatenate([_times(layout, x, rule, optimizers) for x in _draws(layout, rule, task, method)])
            for task, layout in layouts.items()
        ],
        axis=1,
    )  # (R, T, O)
    ratio = _ratio_table(times, optimizers)[1]
    rho = (ratio[:, :, :, None] <= taus).mean(axis=1)  # (R, O, taus)
    lo, hi = np.quantile(rho, method.quantiles, axis=0)
    bands = pd.DataFrame(
        {"optimizer": np.repeat(optimizers, taus.size), "tau": np.tile(taus, len(optimizers))}
    ).assign(lo=lo.ravel(), hi=hi.ravel())
    return curve.merge(bands, on=["optimizer", "tau"], how="left")[["optimizer", "tau", "rho", "lo", "hi"]]


def _point_values(layout: _Layout, rule: str) -> np.ndarray:
    return (layout.by_seed if rule == "algoperf" else layout.packed)[None]


def _draws(layout: _Layout, rule: str, task: str, method: Method):
    rng = _generator(method, task)
    return (_joint if rule == "algoperf" else _stratified)(layout, rng, method.replicates)


def _times(layout: _Layout, x: np.ndarray, rule: str, optimizers: list[str]) -> np.ndarray:
    """(r, O): each optimizer's time on the task under `rule` (NaN: not on this task). x: (r, seeds, C)."""
    out = np.full((x.shape[0], len(optimizers)), np.nan)
    config_medians = None if rule == "algoperf" else _median(x)
    for name, part in zip(layout.optimizers, layout.slices):
        if rule == "algoperf":  # per seed (a study) the fastest configuration (a trial), then the median
            fastest = np.fmin.reduce(x[:, :, part], axis=2)
            out[:, optimizers.index(name)] = _median(fastest[:, :, None])[:, 0]
        else:  # per configuration the median over seeds, then the fastest configuration
            out[:, optimizers.index(name)] = config_medians[:, part].min(axis=1)
    return out


def _ratio_table(times: np.ndarray, optimizers: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """figures.target.ratios of (R, T, O) times, each (replicate, task) its own task; absent ones left out.

    Returns:
        The long table (task numbered replicate x T + task) and the ratios as (R, T, O), inf where absent.
    """
    r, t, o = times.shape
    flat = times.reshape(-1)
    present = ~np.isnan(flat)
    table = pd.DataFrame(
        {
            "task": np.repeat(np.arange(r * t), o)[present],
            "optimizer": np.tile(optimizers, r * t)[present],
            "time_to_target_s": flat[present],
        }
    )
    table = ratios(table)
    ratio = np.full(flat.shape, np.inf)
    ratio[present] = table["ratio"].to_numpy()
    return table, ratio.reshape(r, t, o)


# --- the headline -----------------------------------------------------------------------------------------------


def headline(comparisons: pd.DataFrame, task: str, metric: str = "final validation loss") -> str | None:
    """One sentence on how sure the winner of `task` is against the runner-up; None with fewer than 2 optimizers.

    "adam beats rmsprop with probability 0.93 (paired over 8 seeds; 95 % CI of rmsprop's minus adam's final
    validation loss: 0.0041 to 0.031)", or that it is not decided and about how many more seeds would decide it;
    when both chosen configurations gave one value on every seed (a deterministic task), the difference itself
    and that the seeds change nothing.
    """
    rows = comparisons[comparisons["task"] == task]
    if rows.empty:
        return None
    row = rows.iloc[0]
    better, other = row["better"], row["other"]
    if row.get("identical", False):
        return _deterministic(row, metric)
    pairing = (
        f"paired over {row['seeds']} seeds"
        if row["paired"]
        else f"unpaired, at least {row['seeds']} seeds each"
    )
    interval = (
        f"{100 * row['confidence']:.0f} % CI of {other}'s minus {better}'s {metric}: "
        f"{row['margin_lo']:.3g} to {row['margin_hi']:.3g}"
    )
    if row["decided"]:
        return f"{better} beats {other} with probability {row['probability']:.2f} ({pairing}; {interval})"
    start = f"{better} vs {other}: not decided (probability {row['probability']:.2f}; {pairing}; {interval})"
    if row["seeds"] < 2:
        return start + ": one seed per configuration measures no seed-to-seed spread; run at least 2 seeds"
    if np.isinf(row["more_seeds"]):
        return start + ": they score the same on these seeds, more seeds are not expected to separate them"
    return start + f": about {row['more_seeds']:.0f} more seeds per configuration would be needed"


def _deterministic(row: pd.Series, metric: str) -> str:
    """The headline when the seeds changed nothing: no spread, so a probability or an interval would say nothing."""
    seeds = f"all {row['seeds']} seeds" if row["paired"] else f"all its seeds (at least {row['seeds']})"
    same = f"each of the two configurations gave the identical {metric} on {seeds}: the seeds change nothing here"
    if row["margin"] == 0:
        return f"{row['better']} and {row['other']} tie on every seed: {same}, so more seeds cannot separate them"
    return (
        f"{row['better']} beats {row['other']} by {row['margin']:.3g} on every seed: {same}, so no interval or "
        "probability is needed"
    )


def how_computed(method: Method) -> str:
    """The paragraph for the report's "How this was computed"."""
    aggregate = "mean" if method.aggregate == "mean" else "interquartile mean (25 % cut from each end)"
    return (
        f"Intervals: {100 * method.confidence:.0f} % percentile intervals of a stratified bootstrap over seeds "
        f"({method.replicates} replicates, seed {method.seed}; rliable, Agarwal et al. 2021): each replicate "
        f"resamples every configuration's seeds and chooses each optimizer's best configuration again, so the "
        f"interval includes the tuning noise. A configuration's score is the {aggregate} over its seeds of the "
        "final validation loss; diverged runs score as the untrained model, failed and killed runs are left out. "
        "The winner's probability of improvement is the share of seeds on which it did better (paired by seed "
        "when both chosen configurations ran the same seeds, the bootstrap then resampling seeds jointly; "
        "otherwise over all pairs of runs, ties counting half). A comparison is decided when the interval of "
        "the difference of scores excludes 0; otherwise the seeds needed assume the interval shrinks as "
        "1/sqrt(seeds) with the difference unchanged. Performance profiles and tuning-budget curves carry "
        "intervals from the same bootstrap (the curves at the same values of k as drawn). The bootstrap's best "
        "configuration is the lowest score; the ranked table's order instead puts configurations that never "
        "diverged first, so the two can differ where a configuration that diverged on some seeds still has the "
        "lowest score, where two configurations tie, or with the interquartile mean; the table then names the "
        "configuration its score is for."
    )


# --- layouts, resampling, aggregates ----------------------------------------------------------------------------


def _generator(method: Method, task: str) -> np.random.Generator:
    return np.random.default_rng([method.seed, zlib.crc32(str(task).encode())])


def _layouts(runs: pd.DataFrame, values: pd.Series, config: list[str]) -> dict[str, _Layout]:
    """One _Layout per task (in name order) of the runs whose value is not NaN."""
    kept = values.notna()
    frame = runs.loc[kept, config].assign(_value=values[kept].to_numpy(), _seed=_seed_codes(runs.loc[kept]))
    return {task: _layout(group, config) for task, group in frame.groupby("task", sort=True, observed=True)}


def _seed_codes(runs: pd.DataFrame) -> np.ndarray:
    """The seed values; a run without one gets a seed of its own (negative, shared with no other run)."""
    seeds = runs["seed"].astype("float64").to_numpy(copy=True)
    missing = np.isnan(seeds)
    seeds[missing] = -1.0 - np.arange(missing.sum())
    return seeds


def _layout(frame: pd.DataFrame, config: list[str]) -> _Layout:
    codes = frame.groupby(config, dropna=False, sort=True, observed=True).ngroup().to_numpy()
    seeds, seed_codes = np.unique(frame["_seed"].to_numpy(), return_inverse=True)
    configs = frame[config].assign(_code=codes).drop_duplicates("_code").sort_values("_code")
    total, number = np.zeros((seeds.size, codes.max() + 1)), np.zeros((seeds.size, codes.max() + 1))
    # a configuration run twice at one seed (only outside the report's latest-per-grid-point frame): the mean
    np.add.at(total, (seed_codes, codes), frame["_value"].to_numpy())
    np.add.at(number, (seed_codes, codes), 1)
    with np.errstate(invalid="ignore"):
        by_seed = total / number
    names = configs["optimizer"].astype(str).to_numpy()
    # sorted by configuration, so each optimizer's configurations are contiguous (in the groupby's order)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    ends = np.r_[starts[1:], names.size]
    return _packed(
        configs.drop(columns="_code").reset_index(drop=True),
        list(names[starts]),
        [slice(int(s), int(e)) for s, e in zip(starts, ends)],
        seeds,
        by_seed,
    )


def _packed(configs, optimizers, slices, seeds, by_seed) -> _Layout:
    counts = (~np.isnan(by_seed)).sum(axis=0)
    first = np.argsort(np.isnan(by_seed), axis=0, kind="stable")
    packed = np.take_along_axis(by_seed, first, axis=0)[: counts.max()]
    return _Layout(configs, optimizers, slices, seeds, by_seed, np.ascontiguousarray(packed), counts)


def _sub_layout(layout: _Layout, which: list[int]) -> _Layout:
    """The configurations of the optimizers `which` (in that order), on the seeds they ran."""
    columns = np.concatenate([np.arange(layout.slices[i].start, layout.slices[i].stop) for i in which])
    by_seed = layout.by_seed[:, columns]
    rows = ~np.isnan(by_seed).all(axis=1)
    sizes = np.cumsum([0] + [layout.slices[i].stop - layout.slices[i].start for i in which])
    return _packed(
        layout.configs.iloc[columns].reset_index(drop=True),
        [layout.optimizers[i] for i in which],
        [slice(int(s), int(e)) for s, e in zip(sizes[:-1], sizes[1:])],
        layout.seeds[rows],
        by_seed[rows],
    )


def _chunks(replicates: int, per_replicate: int):
    size = max(1, CHUNK // max(per_replicate, 1))
    for start in range(0, replicates, size):
        yield min(size, replicates - start)


def _stratified(layout: _Layout, rng: np.random.Generator, replicates: int):
    """Chunks (r, m, C) of resampled values: each configuration's own seeds drawn with replacement (NaN after its
    count)."""
    m, c = layout.packed.shape
    column = np.arange(c, dtype=np.int32)
    uniform = bool((layout.counts == m).all())
    for r in _chunks(replicates, m * c):
        if uniform:
            index = rng.integers(0, m, size=(r, m, c), dtype=np.int32)
        else:
            # float32 draws: an index's probability is off by at most n 2^-24, far below the Monte Carlo error
            index = (rng.random((r, m, c), dtype=np.float32) * layout.counts).astype(np.int32)
            np.minimum(index, layout.counts - 1, out=index)  # u * n rounds up to n for u next to 1
        index *= c
        index += column
        values = layout.packed.ravel().take(index)
        yield values if uniform else np.where(np.arange(m)[:, None] < layout.counts, values, np.nan)


def _joint(layout: _Layout, rng: np.random.Generator, replicates: int):
    """Chunks (r, M, C) of resampled values: the task's seeds drawn with replacement, each draw applied to every
    configuration (NaN where a configuration has no run at the drawn seed)."""
    m, c = layout.by_seed.shape
    for r in _chunks(replicates, m * c):
        yield layout.by_seed[rng.integers(0, m, size=(r, m))]


def _aggregate(x: np.ndarray, kind: str) -> np.ndarray:
    """(r, C): the mean or the interquartile mean of each configuration over axis 1 (seeds), NaN values absent."""
    present = ~np.isnan(x)
    if present.all():  # every configuration has all its seeds: no NaN to step around
        n = x.shape[1]
        return x.mean(axis=1) if kind == "mean" else np.sort(x, axis=1)[:, n // 4 : n - n // 4].mean(axis=1)
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "mean":
            return np.where(present, x, 0.0).sum(axis=1) / count
        ordered = np.sort(x, axis=1)  # NaN last
        cut = count // 4  # scipy.stats.trim_mean(x, 0.25) drops int(0.25 n) values from each end
        position = np.arange(x.shape[1])[None, :, None]
        kept = (position >= cut[:, None, :]) & (position < (count - cut)[:, None, :])
        return np.where(kept, ordered, 0.0).sum(axis=1) / (count - 2 * cut)


def _median(x: np.ndarray) -> np.ndarray:
    """(r, C): the median over axis 1 of the values present (inf allowed); NaN where none is."""
    count = (~np.isnan(x)).sum(axis=1)
    ordered = np.sort(x, axis=1)
    low = np.maximum((count - 1) // 2, 0)[:, None, :]
    high = np.maximum(count // 2, 0)[:, None, :]
    with np.errstate(invalid="ignore"):
        middle = (np.take_along_axis(ordered, low, 1) + np.take_along_axis(ordered, high, 1))[:, 0, :] / 2
    return np.where(count > 0, middle, np.nan)


def _choose(aggregates: np.ndarray, layout: _Layout) -> np.ndarray:
    """(r, O): per replicate each optimizer's configuration with the lowest aggregate (NaN: never chosen)."""
    scored = np.where(np.isnan(aggregates), np.inf, aggregates)
    return np.stack([part.start + scored[:, part].argmin(axis=1) for part in layout.slices], axis=1)
