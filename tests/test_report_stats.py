"""The statistics in the report (issue 22 item 1), on constructed runs (no store, no subprocess): the ranked table's
score interval is stats.analyse's on the same frame, the headline says how sure the winner is (a dominating
optimizer: probability 1.00; identical seeds: the deterministic wording) in the HTML, the Markdown and the parent's
description, --aggregate iqm selects the interquartile mean, and the tuning curve keeps <= MAX_K values of k."""

import html
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from report_views import toy_view

from harness.report import cli, note, render, stats, tables, view
from harness.report.build import _section
from harness.report.figures import tuning

matplotlib.use("Agg")


def runs_of(values: dict[tuple[str, float], list[float]], outcome: dict | None = None) -> pd.DataFrame:
    """Runs of task "toy" from {(optimizer, lr): the final losses of seeds 0, 1, ...}; batch size 32."""
    rows = [
        (name, lr, seed, loss) for (name, lr), losses in values.items() for seed, loss in enumerate(losses)
    ]
    runs = pd.DataFrame(rows, columns=["optimizer", "lr", "seed", "final_val_loss"])
    runs["outcome"] = "completed"
    for (name, lr, seed), kind in (outcome or {}).items():
        at = (runs["optimizer"] == name) & (runs["lr"] == lr) & (runs["seed"] == seed)
        runs.loc[at, "outcome"] = kind
        runs.loc[at, "final_val_loss"] = np.nan
    runs = runs.assign(
        run_id=[f"r{i}" for i in range(len(runs))],
        task="toy",
        batch_size=32,
        batch_label="32",
        total_steps=100,
        time_s=1.0,
        final_val_accuracy=np.nan,
        error="",
        steps_to_target=np.nan,
        time_to_target_s=np.nan,
        initial_val_loss=2.0,
        batch_trials=pd.NA,
        target=pd.NA,
    )
    return runs.astype({"batch_size": "Int64", "seed": "Int64", "batch_trials": "Int64"})


def view_of(runs: pd.DataFrame, method: stats.Method = stats.DEFAULT_METHOD) -> view.TaskView:
    return toy_view(runs, method=method)


def noisy(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        (name, lr): rng.normal(centre, 0.05, 6)
        for name, centre in (("adam", 1.0), ("sgd", 1.02))
        for lr in (0.01, 0.1)
    }


def test_the_tables_interval_is_stats_analyse_on_the_same_frame():
    runs = runs_of(noisy())
    toy = view_of(runs)
    scores = stats.analyse(runs).scores.set_index("optimizer")
    shown = tables.display_ranked(toy).set_index("optimizer")[tables.SCORE_COLUMN]
    for name, row in scores.iterrows():
        cell = f"{row['score']:.4g} [{row['score_lo']:.4g}, {row['score_hi']:.4g}]"
        same = toy.best.set_index("optimizer").loc[name, "lr"] == row["lr"]
        assert shown[name] == (cell if same else f"{cell} at lr {row['lr']:.3g}, batch size 32")
    numbers = tables.ranking_table([toy]).set_index("optimizer")
    for column in ("score", "score_lo", "score_hi"):
        assert numbers[column].to_dict() == scores[column].to_dict()  # the very numbers, not rounded
    assert (numbers["aggregate"] == "mean").all()
    assert json.loads(note.table_json(tables.ranking_table([toy])))["columns"][-6:] == [
        "score",
        "score_lo",
        "score_hi",
        "score_lr",
        "score_batch_size",
        "aggregate",
    ]


def test_a_configuration_the_bootstrap_chooses_otherwise_is_named_in_the_cell():
    # Seed 2 diverged at lr 1 (it scores 2.0, the untrained model). adam: lr 1 scores (0.05 + 0.05 + 2) / 3 = 0.7,
    # above lr 0.1's 0.5: both choose lr 0.1 (the interval reaches 0.05: resamples without seed 2 choose lr 1).
    # sgd: lr 1 scores (0.1 + 0.1 + 2) / 3 = 0.733 below lr 0.1's 0.9: the bootstrap chooses lr 1, while the
    # ranking puts lr 0.1 (never diverged) first; the cell names the configuration its score is for.
    values = {
        ("adam", 0.1): [0.5, 0.5, 0.5],
        ("adam", 1.0): [0.05, 0.05, np.nan],
        ("sgd", 0.1): [0.9, 0.9, 0.9],
        ("sgd", 1.0): [0.1, 0.1, np.nan],
    }
    runs = runs_of(values, {("adam", 1.0, 2): "diverged", ("sgd", 1.0, 2): "diverged"})
    toy = view_of(runs)
    cells = tables.display_ranked(toy).set_index("optimizer")[tables.SCORE_COLUMN]
    assert toy.best.set_index("optimizer")["lr"].to_dict() == {"adam": 0.1, "sgd": 0.1}
    assert cells["adam"] == "0.5 [0.05, 0.5]"
    assert cells["sgd"].endswith(" at lr 1, batch size 32") and cells["sgd"].startswith("0.7333 [")


def test_a_dominating_optimizer_is_said_with_probability_one_everywhere(tmp_path):
    rng = np.random.default_rng(5)
    values = {("adam", lr): rng.uniform(0.1, 0.2, 4) for lr in (0.01, 0.1)}
    values |= {("sgd", lr): rng.uniform(0.5, 0.6, 4) for lr in (0.01, 0.1)}
    toy = view_of(runs_of(values))
    sentence = tables.confidence(toy)
    assert sentence.startswith(
        "adam beats sgd with probability 1.00 (paired over 4 seeds; 95 % CI of sgd's minus"
    )
    section = _section(toy, [])
    assert section.confidence == sentence
    content = render.Content("t", None, [], [section], [], pd.DataFrame())
    assert f"{sentence}." in note.note(content, "report")  # the parent's description
    assert f"{sentence}." in render.to_markdown(content, tmp_path)
    escaped = html.escape(sentence, quote=True)
    assert f'<span class="confidence">{escaped}</span>' in render.to_html(content, tmp_path)


def test_identical_seeds_get_the_deterministic_wording():
    toy = view_of(runs_of({("adam", 0.1): [0.25] * 3, ("sgd", 0.1): [0.5] * 3}))
    assert tables.confidence(toy) == (
        "adam beats sgd by 0.25 on every seed: each of the two configurations gave the identical final validation "
        "loss on all 3 seeds: the seeds change nothing here, so no interval or probability is needed"
    )
    tie = view_of(runs_of({("adam", 0.1): [0.5] * 2, ("sgd", 0.1): [0.5] * 2}))
    assert tables.confidence(tie).startswith("adam and sgd tie on every seed")
    assert tables.confidence(view_of(runs_of({("adam", 0.1): [0.5] * 2}))) is None  # one optimizer


def test_aggregate_iqm_is_the_interquartile_mean_in_the_table_and_on_the_command_line():
    # 8 seeds: the IQM cuts 2 from each end of 1, 2, 3, 5, 6, 7, 40, 100: the mean of 3, 5, 6, 7 is 5.25.
    runs = runs_of({("adam", 0.1): [7.0, 1.0, 100.0, 3.0, 5.0, 2.0, 6.0, 40.0], ("sgd", 0.1): [9.0] * 8})
    iqm = view_of(runs, stats.Method(aggregate="iqm"))
    assert tables.tuned_scores(iqm).loc["adam", "score"] == 5.25
    assert (
        tables.display_ranked(iqm)
        .set_index("optimizer")
        .loc["adam", tables.SCORE_COLUMN]
        .startswith("5.25 [")
    )
    assert tables.score_note(iqm).startswith("Score: the interquartile mean over seeds")
    assert tables.tuned_scores(view_of(runs)).loc["sgd", "score"] == 9.0  # rank order: sgd 9 first by mean
    assert cli.parse(["--experiment", "e", "--aggregate", "iqm"]).aggregate == "iqm"
    assert cli.parse(["--experiment", "e"]).aggregate == "mean"
    assert cli.default_out("e", "abc", "median-seeds", "iqm").name == "abc-iqm"
    assert cli.default_out("e", "abc", "algoperf", "iqm").name == "abc-algoperf-iqm"
    with pytest.raises(SystemExit):
        cli.parse(["--experiment", "e", "--aggregate", "median"])
    assert "interquartile mean" in stats.how_computed(iqm.method)


def test_the_tuning_band_keeps_max_k_values_and_ends_at_the_tables_interval():
    n = 2 * tuning.MAX_K
    rng = np.random.default_rng(7)
    values = {("adam", float(lr)): rng.uniform(0, 1, 2) for lr in range(n)}
    values[("sgd", 0.1)] = [0.4, 0.6]
    method = stats.Method(replicates=200)
    toy = view_of(runs_of(values), method)
    curve = toy.tuning[toy.tuning["optimizer"] == "adam"]
    assert curve["k"].tolist() == stats.draws(n).tolist() and len(curve) <= tuning.MAX_K
    means = np.array([np.mean(v) for (name, _), v in values.items() if name == "adam"])
    np.testing.assert_allclose(curve["expected_best"], stats.expected_best(means, stats.draws(n)), rtol=1e-12)
    last = curve.iloc[-1]
    adam = tables.tuned_scores(toy).loc["adam"]
    assert (last["expected_best"], last["lo"], last["hi"]) == pytest.approx(
        (adam["score"], adam["score_lo"], adam["score_hi"]), rel=1e-12
    )
    # 600 configurations of 2 seeds: a replicate's best of k is taken over noisier means than the data's, so from
    # some k on the band lies below the curve (the choice's optimism, larger in the bootstrap: see stats' docstring).
    assert (curve["lo"] <= curve["expected_best"]).all() and last["hi"] < last["expected_best"]


def test_best_of_k_weights_are_the_order_statistics_by_brute_force():
    import itertools

    scores = np.array([0.3, 0.1, 0.7, 0.2, 0.5])
    weights = stats.best_of_k_weights(5, np.arange(1, 6))
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-12)
    for k in range(1, 6):
        brute = np.mean([min(c) for c in itertools.combinations(scores, k)])
        assert np.sort(scores) @ weights[:, k - 1] == pytest.approx(brute, rel=1e-12)
