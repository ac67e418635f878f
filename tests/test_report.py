"""The report: a real sweep (quadratic, sgd and adam, three learning rates, two seeds, 30 steps) run once in a
subprocess as a user types it, then loaded, cached, drawn and published from its SQLite store. No mocks.

On the quadratic f(x) = x0^2 + x1^2 from [3, 2], SGD at lr 0.1 gives x_t = 0.8^t x_0, so f after 30 steps is
13 x 0.64^30; SGD at lr 1.5 multiplies x by -2 per step and diverges.
"""

import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from report_views import toy_view

from harness.report import cli, curves, load, source, tables, view
from harness.report.build import write_report
from harness.report.figures import style, target, tuning
from harness.report.figures.sensitivity import sensitivity_data
from harness.report.source import ReportError
from harness.tracking import port, schema

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "t"
SWEEP = [
    "-m",
    "task=quadratic",
    "optimizer=sgd,adam",
    "optimizer.lr=0.01,0.1,1.5",
    "seed=0,1",
    "trainer.max_steps=30",
    f"tracking.experiment={EXPERIMENT}",
]
STEPS = 30
EVALS = 16  # steps 0, 2, ..., 30: about 20 evaluations per run, every ceil(30 / 20) = 2 steps


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """The tracking URI of a store holding the sweep; built once for the module."""
    directory = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "harness.train", *SWEEP],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return uri


@pytest.fixture(scope="module")
def data(store) -> load.SweepData:
    return load.load(store, EXPERIMENT)


@pytest.fixture(scope="module")
def views(data) -> list[view.TaskView]:
    return view.task_views(data, style.palette(data.runs["optimizer"]), "median-seeds")


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return write_report(load.load(store, EXPERIMENT), tmp_path_factory.mktemp("report"))


def copy_store(uri: str, directory: Path) -> str:
    """A private copy of the module's store, for tests that change it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(uri.removeprefix("sqlite:///"), directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def sql(uri: str, statement: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as conn, conn:
        return conn.execute(statement, args).fetchall()


def report_cli(*arguments: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python scripts/report.py ...` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), *arguments],
        cwd=cwd,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


# --- loading -------------------------------------------------------------------------------------------------


def test_runs_are_the_sweeps_grid_with_their_outcomes(data):
    runs = data.runs
    assert len(runs) == 12
    assert set(zip(runs["optimizer"], runs["lr"], runs["seed"])) == set(
        itertools.product(["sgd", "adam"], [0.01, 0.1, 1.5], [0, 1])
    )
    diverged = runs[runs["outcome"] == "diverged"]
    assert sorted(zip(diverged["optimizer"], diverged["lr"])) == [("sgd", 1.5), ("sgd", 1.5)]
    assert (runs.loc[runs["outcome"] == "completed", "total_steps"] == STEPS).all()
    assert list(runs.columns[: len(load.RUN_COLUMNS)]) == list(load.RUN_COLUMNS)
    # f([3, 2]) before any update, read for the runs that did not complete (what they score in the tuning budget)
    unfinished = runs["outcome"] != "completed"
    assert runs.loc[unfinished, "initial_val_loss"].eq(13.0).all() and unfinished.sum() == 2
    assert runs.loc[~unfinished, "initial_val_loss"].isna().all()
    assert data.grid == load.Grid("FINISHED", 12, 12, 0, {})


def test_histories_hold_every_logged_point_once(data, store):
    ids = data.runs["run_id"].tolist()
    frame = data.tidy()
    keys = ",".join(f"'{k}'" for k in load.HISTORY_KEYS)
    assert len(frame) == sql(store, f"SELECT COUNT(*) FROM metrics WHERE key IN ({keys})")[0][0]
    assert not frame.duplicated(["run_id", "key", "step"]).any()
    completed = set(data.runs.loc[data.runs["outcome"] == "completed", "run_id"])
    train = frame[(frame["key"] == schema.TRAIN_LOSS) & frame["run_id"].isin(completed)]
    assert all(sorted(steps) == list(range(STEPS)) for _, steps in train.groupby("run_id")["step"])
    assert train["run_id"].nunique() == len(completed) == 10
    val = frame[(frame["key"] == schema.VAL_LOSS) & frame["run_id"].isin(completed)]
    assert (val.groupby("run_id").size() == EVALS).all()
    # Run columns travel with every point, any param or tag on request.
    tidy = data.tidy("params.optimizer.lr")
    by_run = data.runs.set_index("run_id")
    assert (tidy["optimizer"].astype(str) == tidy["run_id"].map(by_run["optimizer"])).all()
    assert (
        tidy["params.optimizer.lr"].astype(str) == tidy["run_id"].map(by_run["params.optimizer.lr"])
    ).all()
    assert set(frame["run_id"]) == set(ids)


def test_the_sql_reader_reads_what_the_mlflow_client_reads(store, data):
    ids = data.runs["run_id"].tolist()
    from harness.tracking import stores
    from harness.tracking.sqlite_store import SqliteStore

    fast, slow = source.open_source(store), stores.open_store(store, read_only=True, adapter="mlflow")
    assert isinstance(fast, SqliteStore)
    keys = list(load.HISTORY_KEYS)

    def ordered(frame):
        return frame.sort_values(["run_id", "key", "step"]).reset_index(drop=True).astype({"step": "int64"})

    pd.testing.assert_frame_equal(ordered(fast.histories(ids, keys)), ordered(slow.histories(ids, keys)))
    by_sql = {
        run.info.run_id: run for run in fast.children(data.parent.info.experiment_id, data.sweep_run_id)
    }
    by_client = {
        run.info.run_id: run for run in slow.children(data.parent.info.experiment_id, data.sweep_run_id)
    }
    assert by_sql.keys() == by_client.keys() and len(by_sql) == 12
    for run_id, run in by_client.items():
        mine = by_sql[run_id]
        assert (mine.data.params, mine.data.tags, mine.data.metrics) == (
            run.data.params,
            run.data.tags,
            run.data.metrics,
        )
        assert (mine.info.status, mine.info.start_time, mine.info.end_time) == (
            run.info.status,
            run.info.start_time,
            run.info.end_time,
        )


def test_second_report_reads_the_cache_not_the_store(store, tmp_path):
    uri, cache_dir = copy_store(store, tmp_path / "store"), tmp_path / "cache"
    first = load.load(uri, EXPERIMENT, cache_dir=cache_dir)
    ids = first.runs["run_id"].tolist()
    points = first.histories(ids)
    assert first.history_source == "store" and len(points) > 0
    sql(uri, "DELETE FROM metrics")  # proof: from now on the store has no histories to give
    second = load.load(uri, EXPERIMENT, cache_dir=cache_dir)
    pd.testing.assert_frame_equal(points, second.histories(ids))
    assert second.history_source == "cache"
    # A run that changed (here: its end time) invalidates the cache: the (now empty) store is read again.
    sql(uri, "UPDATE runs SET end_time = end_time + 1 WHERE run_uuid = ?", ids[0])
    third = load.load(uri, EXPERIMENT, cache_dir=cache_dir)
    assert third.histories(ids).empty and third.history_source == "store"


def test_a_rerun_grid_point_counts_once_latest_run_wins(store, tmp_path):
    uri = copy_store(store, tmp_path / "store")
    client = MlflowClient(tracking_uri=uri)
    before = load.load(uri, EXPERIMENT)
    old = before.runs.iloc[0]
    rerun = client.create_run(
        before.parent.info.experiment_id,
        tags={
            schema.PARENT_RUN_ID: before.sweep_run_id,
            schema.CONFIG_HASH: old["config_hash"],
            schema.STATUS: "failed",
            schema.ERROR: "RuntimeError: boom",
        },
    )
    client.set_terminated(rerun.info.run_id, "FAILED")
    runs = load.load(uri, EXPERIMENT).runs
    assert (
        len(runs) == 12
        and rerun.info.run_id in set(runs["run_id"])
        and old["run_id"] not in set(runs["run_id"])
    )


# --- analysis --------------------------------------------------------------------------------------------------


def test_quadratic_ranking_matches_the_closed_form(views):
    [task] = views
    top = task.best.iloc[0]
    assert (top["optimizer"], top["lr"], top["rank"]) == ("sgd", 0.1, 1)
    assert top["val_loss_mean"] == pytest.approx(13 * 0.64**STEPS, rel=1e-9)
    assert (top["trials"], top["diverged"], top["failed"]) == (6, 2, 0)
    assert tables.answer(task).startswith("On quadratic, sgd at lr 0.1 and batch size 1")
    # The quadratic starts from a fixed point on full-batch data: the seed changes nothing, and the report says so.
    assert f"{13 * 0.64**STEPS:.4g}, identical on all 2 seeds" in tables.answer(task)
    assert tables.identical_seeds(task)[0].startswith(
        "Every seed gave the identical final validation loss in all 5 configurations with several completed seeds"
    )
    assert tables.table_notes(task) == [
        tables.score_note(task),
        "Steps and time to target train/loss <= 0.0001: the first evaluation that met it.",
    ]


def constructed_view(rows: list[tuple], rule: str = "median-seeds") -> view.TaskView:
    """A task view over runs given as (optimizer, lr, seed, outcome, final val loss, run seconds, steps to target)."""
    runs = pd.DataFrame(
        rows, columns=["optimizer", "lr", "seed", "outcome", "final_val_loss", "time_s", "steps_to_target"]
    )
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["task"], runs["batch_size"], runs["batch_label"], runs["total_steps"] = "toy", 32, "32", 100
    runs["final_val_accuracy"], runs["error"] = np.nan, ""
    runs["time_to_target_s"] = runs["steps_to_target"] / 100
    runs["initial_val_loss"] = 2.0
    return toy_view(runs, rule)


def test_ranking_prefers_configs_that_never_diverge_then_loss_then_time():
    toy = constructed_view(
        [
            ("a", 0.1, 0, "completed", 0.50, 1.0, 50),
            ("a", 0.1, 1, "completed", 0.50, 1.0, 50),
            ("a", 1.0, 0, "completed", 0.01, 1.0, 10),  # better loss, but diverges on the other seed
            ("a", 1.0, 1, "diverged", np.nan, 0.1, np.nan),
            ("b", 0.01, 0, "completed", 0.30, 2.0, 80),
            ("b", 0.01, 1, "completed", 0.30, 2.0, 80),
            ("b", 0.02, 0, "completed", 0.30, 1.0, 40),  # same loss, faster: wins the tie
            ("b", 0.02, 1, "completed", 0.30, 1.0, 40),
        ]
    )
    best = toy.best
    assert list(zip(best["optimizer"], best["lr"], best["rank"])) == [("b", 0.02, 1), ("a", 0.1, 2)]
    assert best.set_index("optimizer").loc["a", "diverged"] == 1  # counted over the optimizer's whole grid
    assert tables.answer(toy).startswith("On toy, b at lr 0.02 and batch size 32")


def test_fairness_line_names_unequal_trials_and_seeds():
    rows = [("a", 0.1, 0, "completed", 0.5, 1.0, 50), ("a", 0.2, 1, "completed", 0.5, 1.0, 50)]
    line = tables.fairness_line(constructed_view(rows + [("b", 0.1, 0, "completed", 0.5, 1.0, 50)]))
    assert line.startswith("Unfair") and "unequal trials (a: 2; b: 1)" in line and "unequal seeds" in line
    assert tables.fairness_line(constructed_view(rows)).startswith("Fair comparison")


def test_best_lr_at_the_edge_of_the_grid_is_flagged():
    toy = constructed_view(
        [
            ("a", 0.1, 0, "completed", 0.9, 1.0, 50),
            ("a", 0.2, 0, "completed", 0.5, 1.0, 50),
            ("a", 0.4, 0, "completed", 0.3, 1.0, 50),  # best at the largest lr tried
            ("b", 0.1, 0, "completed", 0.9, 1.0, 50),
            ("b", 0.2, 0, "completed", 0.2, 1.0, 50),  # best inside the grid
            ("b", 0.4, 0, "diverged", np.nan, 1.0, np.nan),
            ("c", 0.01, 0, "completed", 0.1, 1.0, 50),  # best at the smallest
            ("c", 0.1, 0, "completed", 0.8, 1.0, 50),
        ]
    )
    assert tables.edge_of_grid(toy) == [
        "c's best lr 0.01 is the smallest it tried (0.01–0.1): widen the grid below it, the best lr may lie outside.",
        "a's best lr 0.4 is the largest it tried (0.1–0.4): widen the grid above it, the best lr may lie outside.",
    ]


def test_expected_best_of_k_trials_is_exact():
    scores = np.array([0.7, 0.2, 0.9, 0.2, 0.4])
    brute = [np.mean([min(c) for c in itertools.combinations(scores, k)]) for k in range(1, 6)]
    np.testing.assert_allclose(tuning.expected_best(scores), brute, rtol=1e-12)


def test_performance_profile_on_a_known_case():
    times = pd.DataFrame(
        {
            "task": ["t1", "t1", "t2", "t2", "t3", "t3"],
            "optimizer": ["a", "b"] * 3,
            "time_to_target_s": [1.0, 2.0, 4.0, 2.0, np.inf, 3.0],  # a never reaches t3's target
        }
    )
    ratios = target.ratios(times).set_index(["task", "optimizer"])["ratio"]
    assert ratios.to_dict() == {
        ("t1", "a"): 1.0,
        ("t1", "b"): 2.0,
        ("t2", "a"): 2.0,
        ("t2", "b"): 1.0,
        ("t3", "a"): np.inf,
        ("t3", "b"): 1.0,
    }
    curve = target.profile(target.ratios(times)).set_index(["optimizer", "tau"])["rho"]
    assert curve[("a", 1.0)] == pytest.approx(1 / 3) and curve[("a", 2.0)] == pytest.approx(2 / 3)
    assert curve[("b", 1.0)] == pytest.approx(2 / 3) and curve[("b", 2.0)] == pytest.approx(1.0)


def test_a_time_to_target_of_zero_counts_as_reached():
    # On t1 the initial model of a and b already meets the target (time 0); c needs 5 s.
    times = pd.DataFrame(
        {
            "task": ["t1", "t1", "t1", "t2", "t2", "t2"],
            "optimizer": ["a", "b", "c"] * 2,
            "time_to_target_s": [0.0, 0.0, 5.0, 2.0, np.inf, 1.0],
        }
    )
    ratios = target.ratios(times).set_index(["task", "optimizer"])["ratio"]
    assert ratios[("t1", "a")] == 1.0 and ratios[("t1", "b")] == 1.0 and ratios[("t1", "c")] == np.inf
    curve = target.profile(target.ratios(times)).set_index(["optimizer", "tau"])["rho"]
    assert curve[("a", 1.0)] == pytest.approx(0.5) and curve[("a", 2.0)] == pytest.approx(1.0)
    assert curve[("b", 2.0)] == pytest.approx(0.5)  # t1 counted as solved, t2 never
    # In the tables, a configuration whose seeds all start at the target reached it at 0 steps.
    toy = constructed_view([("a", 0.1, 0, "completed", 0.5, 1.0, 0), ("a", 0.1, 1, "completed", 0.5, 1.0, 0)])
    row = tables.display_ranked(toy).iloc[0]
    assert row["steps to target"] == "0" and toy.targets["steps_to_target"].tolist() == [0.0]


def test_algoperf_rule_takes_the_fastest_trial_per_seed_then_the_median():
    rows = [  # (optimizer, lr, seed, outcome, loss, seconds, steps to target)
        ("a", 0.1, 0, "completed", 0.5, 1.0, 10),
        ("a", 0.1, 1, "completed", 0.5, 1.0, np.nan),  # lr 0.1 reaches it on one seed of two: median inf
        ("a", 0.2, 0, "completed", 0.5, 1.0, 40),
        ("a", 0.2, 1, "completed", 0.5, 1.0, 60),
    ]
    assert constructed_view(rows).targets["steps_to_target"].tolist() == [50.0]  # the best config's median
    assert constructed_view(rows, "algoperf").targets["steps_to_target"].tolist() == [35.0]  # median(10, 60)


def test_diverged_runs_are_in_the_sensitivity_data(data):
    frame = sensitivity_data(data.runs)
    diverged = frame[frame["outcome"] == "diverged"]
    assert len(diverged) == 2 and set(diverged["lr"]) == {1.5} and diverged["final_val_loss"].isna().all()
    assert len(frame) == len(data.runs)


# --- curves ----------------------------------------------------------------------------------------------------


def test_binned_curves_keep_the_mean_of_the_points_they_bin(data, views, monkeypatch):
    [task] = views
    chosen = task.runs[(task.runs["optimizer"] == "adam") & (task.runs["lr"] == 0.1)]
    histories = data.histories(task.runs["run_id"])
    points = curves.points(histories, chosen, schema.TRAIN_LOSS).assign(optimizer="adam")
    exact = curves.pool(points, "step", ["optimizer"])  # 30 steps: one bin per step
    assert exact["x"].tolist() == list(range(STEPS)) and (exact["n"] == 2).all()
    by_step = points.assign(log=np.log10(points["value"])).groupby("step")["log"].mean()
    np.testing.assert_allclose(np.log10(exact["center"]), by_step.to_numpy(), rtol=1e-12)
    monkeypatch.setattr(curves, "MAX_POINTS", 7)  # 30 steps into 7 bins
    binned = curves.pool(points, "step", ["optimizer"])
    assert len(binned) == 7
    edges = np.linspace(0, STEPS - 1, 8)
    where = np.clip(np.searchsorted(edges, points["step"], side="right") - 1, 0, 6)
    # Per run the mean log in the bin, then the mean over runs: here every run has the same steps in a bin, so
    # it equals the mean over all the bin's points.
    unbinned = points.assign(bin=where, log=np.log10(points["value"])).groupby("bin")["log"].mean()
    np.testing.assert_allclose(np.log10(binned["center"]), unbinned.to_numpy(), rtol=1e-12)


def test_epochs_and_samples_derive_from_the_step_and_the_runs_params():
    runs = pd.DataFrame(
        {"run_id": ["new", "old"], "batch_size": [32, 10], "steps_per_epoch": [4.0, np.nan]}
    ).astype({"batch_size": "Int64"})
    rows = [("new", schema.TRAIN_LOSS, k, 1.0 / (k + 1)) for k in range(10)]
    rows += [("new", schema.WALL_S, k, 0.1 * (k + 1)) for k in range(10)]
    rows += [("new", schema.EPOCH, k, float(k // 4)) for k in (0, 5, 10)]  # evaluation points only
    rows += [("old", schema.TRAIN_LOSS, k, 1.0) for k in range(10)]
    rows += [("old", schema.EPOCH, k, float(k // 3)) for k in range(10)]  # logged at every step
    histories = pd.DataFrame(rows, columns=port.HISTORY_COLUMNS).astype(
        {"run_id": "category", "key": "category"}
    )
    placed = curves.points(histories, runs, schema.TRAIN_LOSS).set_index(["run_id", "step"])
    assert placed.loc[("new", 6), "epoch"] == 1.5 and placed.loc[("new", 6), "samples"] == 192
    assert placed.loc[("new", 6), "wall_s"] == pytest.approx(0.6) and placed.loc[("new", 0), "wall_s"] == 0
    assert placed.loc[("old", 6), "epoch"] == 2.0 and placed.loc[("old", 6), "samples"] == 60


# --- output ----------------------------------------------------------------------------------------------------


def test_every_figure_is_written_as_png_and_svg(report):
    names = {figure.name for figure in report.figures}
    # One batch size: the by-batch-size curves would repeat the convergence figure's, so they are left out.
    assert names == {"convergence", "sensitivity", "heatmap", "time_to_target", "tuning_budget"}
    for figure in report.figures:
        assert figure.png.read_bytes().startswith(b"\x89PNG") and figure.png.stat().st_size > 10_000
        assert b"<svg" in figure.svg.read_bytes()[:2000] and figure.svg.stat().st_size > 10_000


def test_html_is_self_contained_and_answers_first(report):
    page = report.html.read_text()
    assert page.count("data:image/png;base64,") == len(report.figures)
    assert "<img" in page and 'src="figures/' not in page  # every image embedded: opens offline
    answer = page.index('class="answer"')
    assert answer < page.index('class="dataframe ranked"') < page.index("<figure")
    assert "On quadratic, sgd at lr 0.1" in page and 'class="banner"' not in page
    assert "median over seeds" in page  # the time-to-target rule is stated
    assert "](figures/convergence.png)" in report.markdown.read_text()


def test_summary_csv_has_one_row_per_optimizer_and_batch_size(report):
    summary = pd.read_csv(report.summary_csv).set_index("optimizer")
    assert sorted(summary.index) == ["adam", "sgd"] and (summary["batch_size"] == 1).all()
    assert summary.loc["sgd", "diverged"] == 2 and summary.loc["adam", "diverged"] == 0
    assert summary.loc["sgd", "best_lr"] == 0.1 and summary.loc["sgd", "trials"] == 6


def test_several_tasks_get_sections_and_performance_profiles(store, tmp_path):
    # A second task made from the first: the same runs, relabelled in a copy of the store.
    uri = copy_store(store, tmp_path / "store")
    data = load.load(uri, EXPERIMENT)
    relabelled = data.runs["run_id"][data.runs["seed"] == 1].tolist()
    marks = ",".join("?" * len(relabelled))
    sql(
        uri,
        f"UPDATE params SET value = 'quadratic_b' WHERE key = 'task.name' AND run_uuid IN ({marks})",
        *relabelled,
    )
    both = load.load(uri, EXPERIMENT)
    report = write_report(both, tmp_path / "out", workers=2)
    names = [figure.name for figure in report.figures]
    assert names[-1] == "performance_profile" and {"convergence_quadratic", "heatmap_quadratic_b"} <= set(
        names
    )
    assert len(names) == 11 and len(report.answers) == 2  # 5 per task (one batch size) and the profiles
    assert report.directory.joinpath("figures", "performance_profile.png").stat().st_size > 10_000


# --- unfinished sweeps -----------------------------------------------------------------------------------------


def test_an_unfinished_sweep_says_so_at_the_top(store, tmp_path):
    # As a killed sweep leaves it: the parent KILLED, two of sgd's grid points killed mid-run, one still RUNNING.
    uri = copy_store(store, tmp_path / "store")
    data = load.load(uri, EXPERIMENT)
    sgd = data.runs[data.runs["optimizer"] == "sgd"]["run_id"].tolist()
    sql(uri, "UPDATE runs SET status = 'KILLED' WHERE run_uuid IN (?, ?)", *sgd[:2])
    sql(uri, "UPDATE runs SET status = 'RUNNING', end_time = NULL WHERE run_uuid = ?", sgd[2])
    sql(uri, "UPDATE runs SET status = 'KILLED' WHERE run_uuid = ?", data.sweep_run_id)
    unfinished = load.load(uri, EXPERIMENT)
    assert unfinished.grid == load.Grid("KILLED", 12, 9, 1, {"sgd": 3})
    report = write_report(unfinished, tmp_path / "out", workers=1)
    assert report.banner == (
        "Unfinished sweep (parent run killed): 9 of 12 grid points are in. 1 run(s) still running are not "
        "compared. Missing points: sgd 3. Results below may change when the sweep completes (run the same sweep "
        "command again to resume)."
    )
    page = report.html.read_text()
    assert page.index('class="banner"') < page.index('class="facts"') < page.index('class="answer"')
    assert report.markdown.read_text().splitlines()[2].startswith("> **Unfinished sweep")
    assert (
        pd.read_csv(report.summary_csv).set_index("optimizer").loc["sgd", "trials"] == 5
    )  # running: not compared


def test_a_finished_sweep_with_failed_points_says_its_grid_is_incomplete():
    grid = load.Grid("FINISHED", 12, 11, 0, {"adam": 1})
    assert tables.unfinished_banner(grid).startswith(
        "Incomplete grid: 11 of 12 grid points have a result (the others failed or were killed). Missing points: "
        "adam 1."
    )
    assert tables.unfinished_banner(load.Grid("FINISHED", 12, 12, 0, {})) is None
    assert "an unknown number of" in tables.unfinished_banner(load.Grid("RUNNING", None, 3, 1, {}))
    running = pd.DataFrame({"outcome": ["running"] * 3, "error": [None] * 3})
    with pytest.raises(
        ReportError, match=r"no finished runs \(\{'running': 3\}\); its pieces were left on the clus"
    ):
        load.check_reportable(running, "abc", detached=True)
    detached = tables.unfinished_banner(load.Grid("RUNNING", 144, 36, 108, {}, detached=True))
    assert detached.startswith(
        "Unfinished sweep (parent run still running): 36 of 144 grid points are in. 108 run"
    )
    assert (
        "left on the cluster (hydra.launcher.wait=false): the same sweep command run again records"
        in detached
    )


def test_a_sweep_without_finished_runs_is_refused(store, tmp_path, capsys):
    uri = copy_store(store, tmp_path / "store")
    client = MlflowClient(tracking_uri=uri)
    empty = client.create_experiment("empty")
    parent = client.create_run(empty, tags={schema.ROLE: schema.ROLE_SWEEP}).info.run_id
    failed = client.create_run(empty, tags={schema.PARENT_RUN_ID: parent, schema.ERROR: "ValueError: bad"})
    client.set_terminated(failed.info.run_id, "FAILED")
    assert (
        cli.main(["--experiment", "empty", "--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "o")])
        == 1
    )
    err = capsys.readouterr().err
    assert "has no finished runs ({'failed': 1})" in err and "ValueError: bad" in err
    assert len(err.strip().splitlines()) == 1


# --- command line ----------------------------------------------------------------------------------------------


def test_command_line_writes_the_report_and_attaches_it_to_the_sweep(store, tmp_path):
    uri = copy_store(store, tmp_path / "store")
    done = report_cli("--experiment", EXPERIMENT, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr
    data = load.load(uri, EXPERIMENT)
    sweep, client = data.sweep_run_id, MlflowClient(tracking_uri=uri)
    html = Path(done.stdout.strip())
    assert html == (tmp_path / "reports" / EXPERIMENT / sweep / "report.html").resolve() and html.is_file()
    logged = {a.path for a in client.list_artifacts(sweep, "report")}
    assert {"report/report.html", "report/report.md", "report/summary.csv", "report/ranking.json"} <= logged
    figures = {a.path for a in client.list_artifacts(sweep, "report/figures")}
    assert "report/figures/convergence.png" in figures and len(figures) == 10
    # The MLflow UI answers by itself: the answer and the ranked table are the parent's description, and the
    # table is a logged table (mlflow.load_table reads it back, the numbers the report's own).
    tags = client.get_run(sweep).data.tags
    answer = tables.answer(views_of(data)[0])
    description = tags[schema.NOTE_CONTENT]
    assert description.startswith(f"**{answer}**") and len(description) <= port.MAX_TAG_LENGTH
    assert "| # | optimizer | best lr |" in description and "`report/report.html`" in description
    assert json.loads(tags[schema.LOGGED_ARTIFACTS]) == [{"path": "report/ranking.json", "type": "table"}]
    expected = tables.ranking_table(views_of(data))
    file = json.loads(
        Path(client.download_artifacts(sweep, "report/ranking.json", str(tmp_path / "t"))).read_text()
    )
    assert file["columns"] == list(expected.columns) and file["data"] == plain(expected)  # every digit kept
    loaded = logged_table(uri, sweep, "report/ranking.json")  # pandas' JSON reader rounds the last digit
    assert list(loaded.columns) == list(expected.columns) and len(loaded) == 2
    assert plain(loaded) == [
        [pytest.approx(v, rel=1e-14) if isinstance(v, float) else v for v in row] for row in plain(expected)
    ]
    html_before = html.read_bytes()
    # Another time-to-target rule writes beside the default report, never over it, and keeps its description.
    again = report_cli(
        "--experiment",
        EXPERIMENT,
        "--target-rule",
        "algoperf",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert again.returncode == 0, again.stderr
    beside = Path(again.stdout.strip())
    assert beside == (tmp_path / "reports" / EXPERIMENT / f"{sweep}-algoperf" / "report.html").resolve()
    assert "AlgoPerf&#x27;s rule: per seed (a study) the fastest configuration" in beside.read_text()
    assert html.read_bytes() == html_before and "AlgoPerf" not in html.read_text()
    assert "report-algoperf/report.html" in {a.path for a in client.list_artifacts(sweep, "report-algoperf")}
    downloaded = client.download_artifacts(sweep, "report/report.html", str(tmp_path / "dl"))
    assert Path(downloaded).read_bytes() == html_before
    tags = client.get_run(sweep).data.tags
    assert tags[schema.NOTE_CONTENT] == description
    assert json.loads(tags[schema.LOGGED_ARTIFACTS]) == [
        {"path": "report/ranking.json", "type": "table"},
        {"path": "report-algoperf/ranking.json", "type": "table"},
    ]


def views_of(data: load.SweepData, rule: str = "median-seeds") -> list[view.TaskView]:
    return view.task_views(data, style.palette(data.runs["optimizer"]), rule)


def plain(frame: pd.DataFrame) -> list[list]:
    """The values as Python objects, None where missing (NaN, NA)."""
    return frame.astype(object).where(frame.notna(), None).to_numpy().tolist()


def logged_table(uri: str, run_id: str, path: str) -> pd.DataFrame:
    """A table as MLflow's own reader loads it (mlflow.load_table, in a subprocess: it sets a tracking URI and an
    active experiment, which are process-wide)."""
    code = (
        "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment(sys.argv[2]); "
        "import json; table = mlflow.load_table(sys.argv[3], run_ids=[sys.argv[4]]); "
        "print(json.dumps(table.to_dict(orient='split', index=False)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri, EXPERIMENT, path, run_id],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout.strip().splitlines()[-1])
    return pd.DataFrame(table["data"], columns=table["columns"])


def test_harness_report_is_an_installed_command_pointing_at_the_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["harness-report"].split(":")
    assert (module, function) == ("harness.report.cli", "main") and callable(cli.main)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--experiment", "nope"], "unknown experiment 'nope'"),
        (["--experiment", EXPERIMENT, "--sweep", "0123456789abcdef"], "unknown sweep '0123456789abcdef'"),
    ],
)
def test_unknown_experiment_or_sweep_is_one_line_and_exit_1(store, arguments, message, capsys, tmp_path):
    code = cli.main([*arguments, "--tracking-uri", store, "--out", str(tmp_path / "out"), "--no-log"])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_sweep_is_found_by_id_and_only_in_its_experiment(store, tmp_path, capsys):
    uri = copy_store(store, tmp_path / "store")
    data = load.load(uri, EXPERIMENT)
    assert load.load(uri, EXPERIMENT, data.sweep_run_id).sweep_run_id == data.sweep_run_id
    MlflowClient(tracking_uri=uri).create_experiment("other")
    out = ["--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "o")]
    assert cli.main(["--experiment", "other", "--sweep", data.sweep_run_id, *out]) == 1
    assert (
        f"run {data.sweep_run_id} is not a sweep (parent run) of experiment 'other'"
        in capsys.readouterr().err
    )
    assert cli.main(["--experiment", EXPERIMENT, "--sweep", data.runs["run_id"].iloc[0], *out]) == 1
    assert "is not a sweep" in capsys.readouterr().err


def one_line_failure(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_store_and_uri_failures_are_one_line_and_leave_the_store_as_it_was(tmp_path):
    missing = tmp_path / "none" / "mlflow.db"
    line = one_line_failure(
        report_cli("--experiment", "x", "--tracking-uri", f"sqlite:///{missing}", cwd=tmp_path)
    )
    assert "no MLflow store at" in line and not missing.parent.exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    line = one_line_failure(
        report_cli("--experiment", "x", "--tracking-uri", f"sqlite:///{empty}", cwd=tmp_path)
    )
    assert "is empty (0 bytes)" in line and empty.stat().st_size == 0  # not silently made a new store

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database " * 200)
    line = one_line_failure(
        report_cli("--experiment", "x", "--tracking-uri", f"sqlite:///{corrupt}", cwd=tmp_path)
    )
    assert f"{corrupt} is not an SQLite database (corrupt?): pass the right --tracking-uri" in line

    line = one_line_failure(report_cli("--experiment", "x", "--tracking-uri", "nonsense://x", cwd=tmp_path))
    assert line.startswith("error: --tracking-uri='nonsense://x' is not allowed: sqlite:///")
    line = one_line_failure(report_cli("--experiment", "x", "--tracking-uri", "file:./mlruns", cwd=tmp_path))
    assert "--tracking-uri='file:./mlruns' is not allowed" in line

    debug = report_cli(
        "--experiment", "x", "--tracking-uri", f"sqlite:///{empty}", cwd=tmp_path, env={"HARNESS_DEBUG": "1"}
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_an_out_folder_that_cannot_be_written_is_one_line_and_nothing_is_written(store, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = report_cli(
        "--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(blocker / "r"), cwd=tmp_path
    )
    assert one_line_failure(done).startswith(
        f"error: --out='{blocker / 'r'}' is not allowed: a folder you can write"
    )
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o555)
        done = report_cli(
            "--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(read_only / "r"), cwd=tmp_path
        )
        assert "Permission denied" in one_line_failure(done) and not any(read_only.iterdir())
