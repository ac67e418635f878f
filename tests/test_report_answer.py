"""The report's answer and figures on constructed runs (no store, no subprocess): the one ranking definition, the
heatmap's lr bins, zeros on log axes, figures left out when they carry no information, the identical-seeds warning,
batched clocks, the note's length. The same runs frames the report builds (load.RUN_COLUMNS' names)."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from report_views import toy_view

from harness.report import note, render, tables
from harness.report.figures import convergence, heatmap, sensitivity, style, target, tuning
from harness.tracking import queries

matplotlib.use("Agg")


def runs_of(rows: list[tuple], **columns) -> pd.DataFrame:
    """Runs from (optimizer, lr, batch size, seed, outcome, final val loss); every other column as given or plain."""
    runs = pd.DataFrame(rows, columns=["optimizer", "lr", "batch_size", "seed", "outcome", "final_val_loss"])
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    defaults = {
        "task": "toy",
        "batch_label": runs["batch_size"].astype(str),
        "total_steps": 100,
        "time_s": 1.0,
        "final_val_accuracy": np.nan,
        "error": "",
        "steps_to_target": np.nan,
        "time_to_target_s": np.nan,
        "initial_val_loss": 2.0,
        "batch_trials": pd.NA,
        "target": pd.NA,
    }
    for name, value in {**defaults, **columns}.items():
        runs[name] = value
    return runs.astype({"batch_size": "Int64", "seed": "Int64", "batch_trials": "Int64"})


view_of = toy_view


# --- the ranking's one definition ----------------------------------------------------------------------------------


def test_the_ranking_is_one_pure_function_over_plain_rows():
    rows = [
        {
            "task": "t",
            "optimizer": "a",
            "lr": 0.1,
            "batch_size": 32,
            "outcome": "completed",
            "final_val_loss": 0.5,
        },
        {
            "task": "t",
            "optimizer": "a",
            "lr": 0.1,
            "batch_size": 32,
            "outcome": "completed",
            "final_val_loss": 0.3,
        },
        # Better on its one completed seed, but it diverged on the other: ranked after every config that never did.
        {
            "task": "t",
            "optimizer": "a",
            "lr": 1.0,
            "batch_size": 32,
            "outcome": "completed",
            "final_val_loss": 0.1,
        },
        {
            "task": "t",
            "optimizer": "a",
            "lr": 1.0,
            "batch_size": 32,
            "outcome": "diverged",
            "final_val_loss": None,
        },
        {
            "task": "t",
            "optimizer": "b",
            "lr": 0.01,
            "batch_size": 32,
            "outcome": "completed",
            "final_val_loss": 0.2,
        },
        {
            "task": "t",
            "optimizer": "b",
            "lr": 0.01,
            "batch_size": 32,
            "outcome": "failed",
            "final_val_loss": None,
        },
    ]
    ranked = queries.rank_configurations(rows)
    assert [(c.optimizer, c.lr, c.rank) for c in ranked] == [("b", 0.01, 1), ("a", 0.1, 2), ("a", 1.0, 3)]
    assert (ranked[1].val_loss_mean, ranked[1].completed, ranked[0].runs) == (0.4, 2, 2)
    assert (ranked[2].diverged_share, ranked[0].diverged_share) == (0.5, 0.0)  # a failure counts neither way
    best = queries.best_per_optimizer(ranked)
    assert [(c.optimizer, c.lr) for c in best] == [("b", 0.01), ("a", 0.1)]
    assert queries.headlines(rows) == {"t": queries.Headline("t", "b", 0.01, 32, 0.2, 1)}


def test_the_reports_ranking_is_the_pure_functions():
    runs = runs_of(
        [
            ("a", 0.1, 32, 0, "completed", 0.5),
            ("a", 0.1, 32, 1, "completed", 0.3),
            ("a", 1.0, 32, 0, "completed", 0.1),
            ("a", 1.0, 32, 1, "diverged", np.nan),
            ("b", 0.01, 32, 0, "completed", 0.2),
            ("b", 0.01, 64, 0, "completed", 0.25),
        ]
    )
    toy = view_of(runs)
    rows = runs[[*queries.CONFIG_KEYS, "outcome", "final_val_loss", "time_s"]].to_dict("records")
    pure = queries.best_per_optimizer(queries.rank_configurations(rows))
    assert list(
        zip(toy.best["optimizer"], toy.best["lr"], toy.best["batch_size"], toy.best["val_loss_mean"])
    ) == [(c.optimizer, c.lr, c.batch_size, c.val_loss_mean) for c in pure]
    [headline] = queries.headlines(rows).values()
    assert tables.answer(toy).startswith(
        f"On toy, {headline.optimizer} at lr {headline.lr:.3g} and batch size 32"
    )


# --- what the report says --------------------------------------------------------------------------------------


def test_identical_seeds_are_said_in_a_warning_and_in_the_headline():
    runs = runs_of(
        [
            ("a", 0.1, 32, 0, "completed", 0.5),
            ("a", 0.1, 32, 1, "completed", 0.5),
            ("a", 0.2, 32, 0, "completed", 0.25),
            ("a", 0.2, 32, 1, "completed", 0.25),
        ]
    )
    toy = view_of(runs)
    assert toy.configs["identical_seeds"].tolist() == [True, True]
    assert tables.answer(toy) == (
        "On toy, a at lr 0.2 and batch size 32 reached the lowest final validation loss, 0.25, identical on all 2 "
        "seeds."
    )
    [warning] = tables.identical_seeds(toy)
    assert warning.startswith("Every seed gave the identical final validation loss in all 2 configurations")
    runs.loc[1, "final_val_loss"] = 0.5000001  # one seed differs: no longer identical
    toy = view_of(runs)
    assert "in 1 of the 2 configurations" in tables.identical_seeds(toy)[0]
    assert "0.25, identical on all 2 seeds" in tables.answer(toy)


def test_the_target_and_the_clock_of_batched_trials_are_stated():
    runs = runs_of(
        [("a", 0.1, 32, 0, "completed", 0.5), ("a", 0.1, 32, 1, "completed", 0.5)],
        steps_to_target=10.0,
        time_to_target_s=0.25,
        batch_trials=8,
        target="val/accuracy >= 0.95",
    )
    toy = view_of(runs)
    assert tables.display_ranked(toy).loc[0, "time to target (s)"] == "0.25 (group of 8)"
    score, first, clock = tables.table_notes(toy)
    assert score == tables.score_note(toy) and score.startswith("Score: the mean over seeds")
    assert first.startswith("Steps and time to target val/accuracy >= 0.95") and "group's clock" in clock
    assert target.batched_clock(toy.runs) == "batched trials: their group's clock (8 trials together)"
    alone = view_of(runs.assign(batch_trials=1, target=pd.NA))
    assert tables.table_notes(alone) == [
        tables.score_note(alone),
        "Steps and time to the task's target (not recorded by these runs): the first evaluation that met it.",
    ]
    assert tables.display_ranked(alone).loc[0, "time to target (s)"] == "0.25"


def test_the_note_keeps_every_answer_within_mlflows_tag_limit():
    ranked = pd.DataFrame(
        {
            column: [f"{column} {i}" for i in range(300)]
            for column in [*note.MAIN_COLUMNS, "trials", "completed"]
        }
    )
    sections = [render.Section(f"task{i}", f"Answer {i}.", "", [], ranked, []) for i in range(3)]
    content = render.Content("t", None, [], sections, [], pd.DataFrame())
    text = note.note(content, "report")
    assert len(text) <= note.MAX_NOTE and all(f"**Answer {i}.**" in text for i in range(3))
    assert "| # | optimizer |" in text and "| trials |" not in text  # cut to the main columns, then to rows
    assert text.count("more rows in `report/report.md`") == 3
    small = render.Content(
        "t", None, [], [render.Section("t", "A.", "", [], ranked.head(2), [])], [], pd.DataFrame()
    )
    assert "| trials | completed |" in note.note(small, "report") and "more rows" not in note.note(
        small, "report"
    )


def test_logged_table_json_and_tag_are_mlflows():
    table = pd.DataFrame(
        {"a": [0.1 + 0.2, np.nan], "b": ["x", None], "n": pd.array([1, pd.NA], dtype="Int64")}
    )
    assert (
        note.table_json(table)
        == '{"columns": ["a", "b", "n"], "data": [[0.30000000000000004, "x", 1], [null, null, null]]}'
    )
    tag = note.logged_artifacts(None, "report/ranking.json")
    assert tag == '[{"path": "report/ranking.json", "type": "table"}]'
    assert note.logged_artifacts(tag, "report/ranking.json") == tag  # once


# --- figures ---------------------------------------------------------------------------------------------------


def test_the_heatmap_bins_learning_rates_beyond_what_fits():
    lrs = np.geomspace(1e-4, 1.0, 30)
    rows = [
        ("a", lr, bs, seed, "completed", 1.0 + abs(np.log10(lr) + 2) + seed / 10)
        for lr in lrs
        for bs in (32, 64)
        for seed in (0, 1)
    ]
    toy = view_of(runs_of(rows))
    grid = heatmap.cells(toy.configs)
    assert grid.binned and len(grid.row_labels) == heatmap.MAX_ROWS and grid.sizes == [32, 64]
    assert grid.row_labels[0].startswith("0.46–1 (") and grid.row_labels[-1].startswith("0.0001–0.00022 (")
    held = [int(label.rsplit("(", 1)[1].rstrip(")")) for label in grid.row_labels]
    assert sum(held) == 30
    # The best lr (1e-2) is in the bin holding it, and each cell shows its bin's best configuration.
    edges = np.geomspace(1e-4, 1.0, heatmap.MAX_ROWS + 1)[::-1]
    row = int(np.searchsorted(-edges, -1e-2 + 1e-12, side="right") - 1)
    best = toy.configs.loc[toy.configs["batch_size"] == 32].sort_values("val_loss_mean").iloc[0]
    assert grid.best == (row, 0) and grid.loss[row, 0] == best["val_loss_mean"]
    few = heatmap.cells(view_of(runs_of([r for r in rows if r[1] in lrs[:5]])).configs)
    assert not few.binned and few.row_labels == [f"{lr:.3g}" for lr in lrs[:5][::-1]]


def test_a_final_loss_of_zero_is_drawn_on_a_marked_floor():
    rows = [
        ("a", 0.1, 32, 0, "completed", 0.0),
        ("a", 0.01, 32, 0, "completed", 1e-3),
        ("a", 1.0, 32, 0, "diverged", np.nan),
    ]
    toy = view_of(runs_of(rows))
    assert style.zero_floor(toy.runs["final_val_loss"]) == pytest.approx(1e-4)
    figure = sensitivity.draw_sensitivity(toy)
    ax = figure.axes[0]
    drawn = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    assert pytest.approx(1e-4) in list(drawn)  # the zero, at the floor
    assert ax.get_ylim()[0] < 1e-4 and any(t.get_text() == style.ZERO_LABEL for t in ax.texts)
    assert style.zero_floor([0.5, 1.0]) is None and style.zero_floor([0.0]) == 1.0


def test_the_tuning_budget_is_evaluated_at_a_bounded_set_of_k():
    scores = np.random.default_rng(0).random(1000)
    ks = tuning.draws(len(scores))
    assert ks[0] == 1 and ks[-1] == 1000 and len(ks) <= tuning.MAX_K and np.all(np.diff(ks) > 0)
    np.testing.assert_allclose(
        tuning.expected_best(scores, ks), tuning.expected_best(scores)[ks - 1], rtol=1e-12
    )
    assert list(tuning.draws(5)) == [1, 2, 3, 4, 5]


def test_figures_without_information_are_left_out():
    one = view_of(runs_of([("a", 0.1, 32, 0, "completed", 0.5), ("a", 0.1, 32, 1, "completed", 0.4)]))
    assert not target.PROFILES.shows([one, one])  # one optimizer: its profile is flat at 1
    assert not convergence.BY_BATCH.shows(one)  # one batch size: the convergence figure's samples column
    assert not tuning.BUDGET.shows(one)  # one configuration: one point
    two = view_of(
        runs_of(
            [
                ("a", 0.1, 32, 0, "completed", 0.5),
                ("b", 0.1, 64, 0, "completed", 0.4),
                ("b", 0.2, 64, 0, "completed", 0.3),
                ("b", 0.2, 32, 0, "completed", 0.3),
            ]
        )
    )
    assert target.PROFILES.shows([two]) and convergence.BY_BATCH.shows(two) and tuning.BUDGET.shows(two)


def test_the_figures_look_is_seaborns():
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
    assert style.SEABORN_RC == {k: v for k, v in rc.items() if k != "image.cmap"}
    assert style.COLORBLIND == [tuple(c) for c in sns.color_palette("colorblind")]
    assert list(style.palette([f"o{i}" for i in range(9)]).values()) == list(sns.color_palette("husl", 9))


# --- at scale ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_report_of_thousands_of_runs_stays_small(tmp_path):
    """5,000 runs (2,500 lrs x sgd, adam; quadratic, 10 steps) trained by the batched launcher as a user types it,
    then the report as a whole process: its peak memory, and figures that draw bins, not thousands of rows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    lrs = ",".join(f"{lr:.6g}" for lr in np.logspace(-3, 0.5, 2500))
    sweep = ["-m", "hydra/launcher=batched", "task=quadratic", "optimizer=sgd,adam", f"optimizer.lr={lrs}"]
    sweep += ["trainer.max_steps=10", "tracking.experiment=many"]
    done = subprocess.run(
        [sys.executable, "-m", "harness.train", *sweep], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # The report as a whole process, with its peak resident memory (its own, and its figure workers').
    code = (
        "import resource, runpy, sys\n"
        "sys.argv = [sys.argv[1], '--experiment', 'many', '--no-log']\n"
        "code = 0\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as exc:\n    code = exc.code\n"
        "peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "print(f'peak {peak}', file=sys.stderr)\nsys.exit(code)\n"
    )
    report = subprocess.run(
        [sys.executable, "-c", code, str(root / "scripts" / "report.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    peak_kib = int(report.stderr.strip().splitlines()[-1].removeprefix("peak "))
    assert peak_kib < 1024 * 1024  # 1 GiB
    folder = Path(report.stdout.strip()).parent
    names = ("convergence", "sensitivity", "heatmap", "time_to_target", "tuning_budget")
    assert {path.stem for path in (folder / "figures").glob("*.png")} == set(names)
    assert (folder / "figures" / "sensitivity.svg").stat().st_size < 1_000_000  # a band, not 5,000 markers
    assert "2500 runs of" not in report.stderr and "5000 runs of sweep" in report.stderr
