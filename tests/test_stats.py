"""The report's statistics (harness/report/stats.py) on small constructed runs frames: each estimator against brute
force (every bootstrap resample enumerated exactly, compared with a large-replicate bootstrap), known answers, the
interquartile mean by hand, the seeds-needed estimate, reproducibility, and a size check of the vectorised path."""

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from harness.report import ranking, stats
from harness.report.figures import target, tuning

MANY = stats.Method(replicates=20_000)


def runs_frame(rows: list[tuple], task: str = "t") -> pd.DataFrame:
    """Runs as the report has them, from (optimizer, lr, seed, final val loss[, outcome[, time to target]])."""
    defaults = (None, None, None, None, "completed", 1.0)
    full = [tuple(row) + defaults[len(row) :] for row in rows]
    frame = pd.DataFrame(
        full, columns=["optimizer", "lr", "seed", "final_val_loss", "outcome", "time_to_target_s"]
    )
    frame["final_val_loss"] = frame["final_val_loss"].where(frame["outcome"] == "completed")
    frame = frame.assign(
        task=task,
        batch_size=32,
        batch_label="32",
        total_steps=100,
        initial_val_loss=2.0,
        steps_to_target=frame["time_to_target_s"],
        final_val_accuracy=np.nan,
        time_s=1.0,
        run_id=[f"r{i}" for i in range(len(frame))],
    )
    return frame.astype({"task": "string", "optimizer": "string", "outcome": "string", "seed": "Int64"})


def grid(
    values: dict[tuple[str, float], list[float]], seeds: dict | None = None, task: str = "t"
) -> pd.DataFrame:
    """Runs from {(optimizer, lr): the final losses of seeds 0, 1, ... (or of `seeds[(optimizer, lr)]`)}."""
    rows = []
    for (optimizer, lr), losses in values.items():
        for seed, loss in zip((seeds or {}).get((optimizer, lr), range(len(losses))), losses):
            rows.append((optimizer, lr, seed, loss))
    return runs_frame(rows, task)


def exact(distribution: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an enumerated bootstrap (each resample equally likely) and their CDF."""
    values, counts = np.unique(np.round(distribution, 12), return_counts=True)
    return values, np.cumsum(counts) / len(distribution)


def exact_quantile(distribution: list[float], q: float) -> float:
    """The q-quantile of the enumerated distribution, checked to lie inside one atom with room for the Monte Carlo
    error of MANY, 5 standard errors (else the test would compare an interpolation between two atoms)."""
    values, cdf = exact(distribution)
    i = int(np.searchsorted(cdf, q))
    below, room = cdf[i - 1] if i else 0.0, 5 * math.sqrt(q * (1 - q) / MANY.replicates)
    assert below + room < q < cdf[i] - room, (below, q, cdf[i])
    return float(values[i])


def resamples(values: list[float]) -> list[tuple[float, ...]]:
    """Every resample with replacement of `values` (as ordered draws: each equally likely)."""
    return list(itertools.product(values, repeat=len(values)))


# --- brute force ------------------------------------------------------------------------------------------------


def test_stratified_interval_with_the_choice_inside_matches_every_resample_enumerated():
    c1, c2, other = [1.0, 3.0], [1.5, 2.6, 2.0], [2.1, 2.5]
    runs = grid({("a", 0.1): c1, ("a", 1.0): c2, ("b", 0.1): other}, seeds={("b", 0.1): [5, 6]})
    best = [min(np.mean(r1), np.mean(r2)) for r1 in resamples(c1) for r2 in resamples(c2)]
    first_chosen = np.mean([np.mean(r1) <= np.mean(r2) for r1 in resamples(c1) for r2 in resamples(c2)])
    margins = [np.mean(rb) - b for b in best for rb in resamples(other)]

    # At 83.5 % both tails lie inside an atom of both distributions (at 95 % the margin's do not, by < 0.005).
    result = stats.analyse(runs, stats.Method(replicates=MANY.replicates, confidence=0.835))
    tails = (0.0825, 0.9175)
    a = result.scores.set_index("optimizer").loc["a"]
    assert (a["lr"], a["seeds"], a["configurations"], a["score"]) == (0.1, 2, 2, 2.0)
    assert (a["score_lo"], a["score_hi"]) == pytest.approx(
        tuple(exact_quantile(best, q) for q in tails), abs=1e-12
    )
    assert abs(a["chosen_share"] - first_chosen) < 4.5 * math.sqrt(first_chosen * (1 - first_chosen) / 20_000)
    row = result.comparisons.iloc[0]
    assert (row["better"], row["other"], row["paired"], row["seeds"]) == ("a", "b", False, 2)
    assert row["probability"] == 0.5  # 1.0 beats 2.1 and 2.5, 3.0 beats neither
    assert row["margin"] == pytest.approx(0.3)
    assert row["margin_lo"] == pytest.approx(exact_quantile(margins, tails[0]), abs=1e-12)
    assert row["margin_hi"] == pytest.approx(exact_quantile(margins, tails[1]), abs=1e-12)


def test_paired_interval_resamples_seeds_jointly_as_enumerated():
    a1, a2, b = [1.0, 2.0, 4.0], [1.4, 1.9, 3.1], [1.3, 2.5, 4.4]  # seeds 0, 1, 2 everywhere
    runs = grid({("a", 0.1): a1, ("a", 1.0): a2, ("b", 0.1): b})
    margins, wins = [], []
    for draw in itertools.product(range(3), repeat=3):  # the seeds drawn, the same for every configuration
        pick = [np.mean([c[s] for s in draw]) for c in (a1, a2)]
        chosen = (a1, a2)[int(np.argmin(pick))]
        margins.append(np.mean([b[s] for s in draw]) - min(pick))
        wins.append(np.mean([chosen[s] < b[s] for s in draw]))

    row = stats.analyse(runs, MANY).comparisons.iloc[0]
    assert (row["better"], row["paired"], row["seeds"]) == ("a", True, 3)
    assert row["probability"] == pytest.approx(2 / 3)  # a2 (mean 2.133 < 2.333) beats b on seeds 1 and 2
    assert row["margin_lo"] == pytest.approx(exact_quantile(margins, 0.025), abs=1e-12)
    assert row["margin_hi"] == pytest.approx(exact_quantile(margins, 0.975), abs=1e-12)
    assert row["probability_lo"] == pytest.approx(exact_quantile(wins, 0.025), abs=1e-12)


def test_profile_interval_matches_every_resample_enumerated():
    # Two tasks, one configuration per optimizer, two seeds each: a's time is the median (the mean) of its seeds.
    times = {"t1": {"a": [1.0, 4.0], "b": [2.0, 2.8]}, "t2": {"a": [1.0, 2.0], "b": [1.5, 6.0]}}
    runs = pd.concat(
        [
            runs_frame(
                [(name, 0.1, s, 0.5, "completed", v) for name, vs in opt.items() for s, v in enumerate(vs)],
                task,
            )
            for task, opt in times.items()
        ]
    )
    resampled = {
        task: {name: [np.mean(r) for r in resamples(vs)] for name, vs in opt.items()}
        for task, opt in times.items()
    }
    at_one = []  # a's rho at tau = 1: the share of tasks where it is the fastest
    for a1, b1, a2, b2 in itertools.product(*(resampled[t][n] for t in times for n in ("a", "b"))):
        at_one.append((int(a1 <= b1) + int(a2 <= b2)) / 2)
    result = stats.profile_intervals(runs, method=MANY).set_index(["optimizer", "tau"])
    assert result.loc[("a", 1.0), "rho"] == 0.5  # a 2.5 vs b 2.4 on t1, 1.5 vs 3.75 on t2
    assert result.loc[("a", 1.0), "lo"] == exact_quantile(at_one, 0.025)
    assert result.loc[("a", 1.0), "hi"] == exact_quantile(at_one, 0.975)


# --- known answers ----------------------------------------------------------------------------------------------


def test_identical_seeds_give_zero_width_intervals_and_a_decided_dominating_winner():
    runs = grid({("a", 0.1): [0.2] * 3, ("a", 1.0): [0.4] * 3, ("b", 0.1): [0.5] * 3})
    result = stats.analyse(runs)
    scores = result.scores.set_index("optimizer")
    assert scores["score"].to_dict() == pytest.approx({"a": 0.2, "b": 0.5})
    assert (scores["score_lo"] == scores["score"]).all() and (scores["score_hi"] == scores["score"]).all()
    assert scores["chosen_share"].to_dict() == {"a": 1.0, "b": 1.0}
    row = result.comparisons.iloc[0]
    assert (row["probability"], row["probability_lo"], row["probability_hi"], row["decided"]) == (
        1,
        1,
        1,
        True,
    )
    assert row["margin_lo"] == row["margin_hi"] == row["margin"] == pytest.approx(0.3)
    assert np.isnan(row["more_seeds"])
    assert bool(row["identical"])
    assert stats.headline(result.comparisons, "t") == (
        "a beats b by 0.3 on every seed: each of the two configurations gave the identical final validation loss "
        "on all 3 seeds: the seeds change nothing here, so no interval or probability is needed"
    )


def test_a_dominating_optimizer_beats_every_other_with_probability_one():
    rng = np.random.default_rng(3)
    values = {
        ("a", 0.1): rng.uniform(0, 1, 5),
        ("b", 0.1): rng.uniform(2, 3, 5),
        ("c", 0.1): rng.uniform(1, 2, 5),
    }
    table = stats.analyse(grid(values)).comparisons
    assert table[["better", "other"]].values.tolist() == [["a", "c"], ["a", "b"]]  # runner-up first
    assert table["probability"].tolist() == [1.0, 1.0] and table["probability_lo"].tolist() == [1.0, 1.0]
    assert table["decided"].all()


def test_symmetric_optimizers_are_even_and_undecidable():
    paired = stats.analyse(grid({("a", 0.1): [1.0, 2.0, 3.0, 4.0], ("b", 0.1): [2.0, 1.0, 4.0, 3.0]}))
    row = paired.comparisons.iloc[0]
    assert (row["paired"], row["probability"], row["margin"], row["decided"]) == (True, 0.5, 0.0, False)
    assert row["more_seeds"] == math.inf
    assert stats.headline(paired.comparisons, "t").endswith(
        ": they score the same on these seeds, more seeds are not expected to separate them"
    )
    runs = grid({("a", 0.1): [1.0, 2.0], ("b", 0.1): [1.0, 2.0]}, seeds={("b", 0.1): [7, 8]})
    row = stats.analyse(runs).comparisons.iloc[0]
    assert (row["paired"], row["probability"], row["seeds"]) == (
        False,
        0.5,
        2,
    )  # Mann-Whitney: ties count half


def test_interquartile_mean_by_hand_and_as_scipy_trims():
    # 8 seeds: int(8 / 4) = 2 cut from each end of 1, 2, 3, 5, 6, 7, 40, 100: the mean of 3, 5, 6, 7.
    runs = grid({("a", 0.1): [7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 40.0], ("b", 0.1): [9.0] * 8})
    scores = stats.analyse(runs, stats.Method(aggregate="iqm")).scores.set_index("optimizer")
    assert scores.loc["a", "score"] == 5.25 and scores.loc["a", "aggregate"] == "iqm"
    assert stats.analyse(runs).scores.set_index("optimizer").loc["a", "score"] == 20.5  # the mean: 164 / 8
    rng = np.random.default_rng(0)
    values = {(f"o{n}", 0.1): rng.normal(size=n) for n in range(1, 10)}  # unequal seeds: the padded path
    table = stats.analyse(grid(values), stats.Method(aggregate="iqm", replicates=1)).scores
    expected = {name: scipy.stats.trim_mean(v, 0.25) for (name, _), v in values.items()}
    assert table.set_index("optimizer")["score"].to_dict() == pytest.approx(expected, rel=1e-12)


def test_diverged_runs_score_as_the_untrained_model_and_failed_ones_are_left_out():
    runs = runs_frame(
        [
            ("a", 0.1, 0, 0.5),
            ("a", 0.1, 1, np.nan, "diverged"),  # scores 2.0, the initial validation loss
            ("a", 0.1, 2, np.nan, "failed"),
            ("a", 0.1, 3, np.nan, "killed"),
            ("a", 0.1, 4, np.nan, "running"),
        ]
    )
    assert stats.run_scores(runs).tolist()[:2] == [0.5, 2.0] and stats.run_scores(runs)[2:].isna().all()
    row = stats.analyse(runs).scores.iloc[0]
    assert (row["score"], row["seeds"]) == (1.25, 2)


def test_seeds_needed_on_constructed_cases():
    assert stats.seeds_needed(0.1, -0.1, 4) == 13  # n' > 4 (0.2 / 0.1)^2 = 16: 17 seeds, 13 more
    assert stats.seeds_needed(0.1, -0.0001, 4) == 1  # just undecided: one more
    assert stats.seeds_needed(0.1, 0.01, 4) is None  # decided
    assert stats.seeds_needed(0.0, -0.1, 4) == math.inf
    assert stats.seeds_needed(0.1, -0.1, 1) is None  # one seed: no spread to scale


def test_seeds_needed_from_a_paired_difference():
    # Per seed b - a = 0.1 +- 0.25 (alternating) on top of a large seed effect that pairing cancels. The bootstrap
    # mean of 8 such differences is 0.1 + 0.25 (2K / 8 - 1), K ~ Binomial(8, 1/2): its 2.5 % point is K = 1,
    # -0.0875, so n' > 8 (0.1875 / 0.1)^2 = 28.125: 29 seeds, 21 more.
    d = 0.1 + 0.25 * np.array([1, -1] * 4)
    base = 10.0 * np.arange(8)
    result = stats.analyse(grid({("a", 0.1): base, ("b", 0.1): base + d}), MANY)
    row = result.comparisons.iloc[0]
    assert (row["paired"], row["seeds"], row["decided"]) == (True, 8, False)
    assert (row["margin"], row["margin_lo"], row["margin_hi"]) == pytest.approx((0.1, -0.0875, 0.2875))
    assert row["more_seeds"] == 21
    assert stats.headline(result.comparisons, "t") == (
        "a vs b: not decided (probability 0.50; paired over 8 seeds; 95 % CI of b's minus a's final validation "
        "loss: -0.0875 to 0.287): about 21 more seeds per configuration would be needed"
    )
    unpaired = result.scores.set_index("optimizer")  # the seed effect is in each score's own interval
    assert unpaired.loc["a", "score_hi"] - unpaired.loc["a", "score_lo"] > 20


def test_one_seed_is_never_decided():
    result = stats.analyse(grid({("a", 0.1): [0.1], ("b", 0.1): [0.9]}))
    row = result.comparisons.iloc[0]
    assert (row["decided"], np.isnan(row["more_seeds"])) == (False, True)
    assert stats.headline(result.comparisons, "t").endswith(
        ": one seed per configuration measures no seed-to-seed spread; run at least 2 seeds"
    )
    assert stats.headline(stats.analyse(grid({("a", 0.1): [0.1]})).comparisons, "t") is None


def test_tuning_intervals_are_the_reports_curve_with_the_scores_interval_at_k_equal_n():
    rng = np.random.default_rng(1)
    values = {(name, lr): rng.uniform(0, 1, 4) for name in ("a", "b") for lr in (0.01, 0.1, 1.0)}
    runs = grid(values)
    curves = stats.tuning_intervals(runs)
    pd.testing.assert_frame_equal(stats.analyse(runs).tuning, curves)  # the report's: the same replicates
    means = ranking.per_config(runs).groupby("optimizer")["budget_score"]  # no run failed: the same scores
    report = np.concatenate([tuning.expected_best(means.get_group(name).to_numpy()) for name in ("a", "b")])
    np.testing.assert_allclose(curves["expected_best"], report, rtol=1e-12)
    assert curves["k"].tolist() == [1, 2, 3, 1, 2, 3]
    last = curves[curves["k"] == 3].set_index("optimizer")  # the best of all N: the tuned score, same draws
    scores = stats.analyse(runs).scores.set_index("optimizer")
    for column, bound in (("lo", "score_lo"), ("hi", "score_hi")):
        assert last[column].to_dict() == pytest.approx(scores[bound].to_dict(), rel=1e-12)
    flat = stats.tuning_intervals(grid({("a", 0.1): [0.3] * 3, ("a", 1.0): [0.6] * 3}))
    assert flat["lo"].tolist() == flat["hi"].tolist() == flat["expected_best"].tolist()
    assert flat["expected_best"].tolist() == pytest.approx([0.45, 0.3])


@pytest.mark.parametrize("rule", list(ranking.TARGET_RULES))
def test_profile_point_is_the_reports_profile(rule):
    rng = np.random.default_rng(2)
    rows = [
        (task, name, lr, seed, rng.choice([np.nan, *rng.uniform(1, 10, 3)]))
        for task in ("t1", "t2", "t3")
        for name in ("a", "b", "c")
        for lr in (0.1, 1.0)
        for seed in range(3)
    ]
    runs = pd.concat(
        [runs_frame([(n, lr, s, 0.5, "completed", v)], task) for task, n, lr, s, v in rows], ignore_index=True
    )
    times = pd.concat(
        [
            ranking.target_times(part, ranking.per_config(part), rule)
            for _, part in runs.groupby("task", sort=True)
        ]
    )
    report = target.profile(target.ratios(times))
    ours = stats.profile_intervals(runs, rule=rule)
    pd.testing.assert_frame_equal(ours[["optimizer", "tau", "rho"]], report, check_dtype=False)
    assert ((0 <= ours["lo"]) & (ours["lo"] <= ours["hi"]) & (ours["hi"] <= 1)).all()
    flat = stats.profile_intervals(runs[runs["seed"] == 0], rule=rule)  # one seed: nothing to resample
    assert (flat["lo"] == flat["rho"]).all() and (flat["hi"] == flat["rho"]).all()


# --- reproducibility, settings, size ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_intervals_and_a_task_is_independent_of_the_others():
    rng = np.random.default_rng(4)
    runs = grid({(name, lr): rng.normal(1, 0.2, 5) for name in ("a", "b") for lr in (0.1, 1.0)})
    first, again = stats.analyse(runs), stats.analyse(runs)
    pd.testing.assert_frame_equal(first.scores, again.scores)
    pd.testing.assert_frame_equal(first.comparisons, again.comparisons)
    other = stats.analyse(runs, stats.Method(seed=1)).scores
    assert not np.array_equal(other["score_lo"], first.scores["score_lo"])
    with_another_task = pd.concat([runs, runs.assign(task="u")])
    scores = stats.analyse(with_another_task).scores
    pd.testing.assert_frame_equal(scores[scores["task"] == "t"].reset_index(drop=True), first.scores)


def test_method_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"aggregate='median': allowed are mean, iqm"):
        stats.Method(aggregate="median")
    with pytest.raises(ValueError, match="confidence=1.5"):
        stats.Method(confidence=1.5)
    with pytest.raises(ValueError, match=r"rule='fastest': allowed are median-seeds, algoperf"):
        stats.profile_intervals(grid({("a", 0.1): [1.0]}), rule="fastest")


def big_grid(configurations: int, seeds: int = 8) -> pd.DataFrame:
    """Four optimizers, `configurations` in all; the best of each known (its lr 0), every seed equal."""
    per = configurations // 4
    names = np.repeat(["adam", "momentum", "rmsprop", "sgd"], per)
    lr = np.tile(np.arange(per, dtype=float), 4)
    loss = np.repeat(0.1 * np.arange(1, 5), per) + 0.001 * lr
    frame = pd.DataFrame({"optimizer": names, "lr": lr, "final_val_loss": loss})
    frame = frame.loc[frame.index.repeat(seeds)].assign(seed=np.tile(np.arange(seeds), configurations))
    rows = frame.assign(outcome="completed", time_to_target_s=1.0)[
        ["optimizer", "lr", "seed", "final_val_loss", "outcome", "time_to_target_s"]
    ]
    return runs_frame(list(rows.itertuples(index=False)))


def python_calls_from_stats(function) -> int:
    """How many functions (Python or C) stats.py calls while `function` runs: a loop over configurations in it
    would call as many more as there are configurations."""
    here, calls = str(Path(stats.__file__)), [0]

    def count(frame, event, _):
        caller = frame if event == "c_call" else frame.f_back
        if event in ("call", "c_call") and caller is not None and caller.f_code.co_filename == here:
            calls[0] += 1

    sys.setprofile(count)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls[0]


def test_the_bootstrap_of_2500_configurations_by_8_seeds_loops_over_no_configuration(monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 1 << 30)  # one chunk whatever the size: the calls are comparable
    method = stats.Method(replicates=100)
    small, large = big_grid(4 * (stats.MAX_K + 4)), big_grid(2500)  # both above MAX_K: the same k path
    result = stats.analyse(large, method)
    assert result.scores["optimizer"].tolist() == ["adam", "momentum", "rmsprop", "sgd"]
    assert result.scores["lr"].tolist() == [0.0] * 4 and result.scores["configurations"].tolist() == [625] * 4
    assert (result.scores["score_lo"] == result.scores["score_hi"]).all()
    assert result.comparisons["decided"].all() and (result.comparisons["seeds"] == 8).all()
    assert python_calls_from_stats(lambda: stats.analyse(large, method)) == python_calls_from_stats(
        lambda: stats.analyse(small, method)
    )
