"""The report: a real sweep (quadratic, sgd and adam, three learning rates, two seeds, 30 steps) run once in a
subprocess as a user types it, then loaded, cached, drawn and published from its SQLite store. No mocks.

On the quadratic f(x) = x0^2 + x1^2 from [3, 2], SGD at lr 0.1 gives x_t = 0.8^t x_0, so f after 30 steps is
13 x 0.64^30; SGD at lr 1.5 multiplies x by -2 per step and diverges.
"""

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from harness.report import budget, cli, configs, history, load, profiles, tables
from harness.report.build import write_report
from harness.report.figures.sensitivity import sensitivity_data
from harness.report.runs import RUN_COLUMNS

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
    return load.load_sweep(store, EXPERIMENT)


@pytest.fixture(scope="module")
def report(data, tmp_path_factory):
    return write_report(data, tmp_path_factory.mktemp("report"))


def copy_store(uri: str, directory: Path) -> str:
    """A private copy of the module's store, for tests that change it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(uri.removeprefix("sqlite:///"), directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def sql(uri: str, statement: str, *args) -> list[tuple]:
    with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as conn, conn:
        return conn.execute(statement, args).fetchall()


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
    assert list(runs.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)


def test_tidy_frame_holds_every_logged_point_once(data, store):
    metrics, runs = data.metrics, data.runs
    # Every child's point; the parent's headline metrics (jobs/*, best/val_loss) are not training points.
    children_points = f"SELECT COUNT(*) FROM metrics WHERE run_uuid != '{data.sweep_run_id}'"
    assert len(metrics) == sql(store, children_points)[0][0]
    assert not metrics.duplicated(["run_id", "key", "step"]).any()
    completed = set(runs.loc[runs["outcome"] == "completed", "run_id"])
    train = metrics[(metrics["key"] == "train/loss") & metrics["run_id"].isin(completed)]
    assert all(
        sorted(steps) == list(range(STEPS)) for _, steps in train.groupby("run_id", observed=True)["step"]
    )
    assert train["run_id"].nunique() == len(completed) == 10
    val = metrics[(metrics["key"] == "val/loss") & metrics["run_id"].isin(completed)]
    assert (val.groupby("run_id", observed=True).size() == EVALS).all()
    # Run descriptors travel with every point.
    by_run = runs.set_index("run_id")
    assert (metrics["optimizer"].astype(str) == metrics["run_id"].astype(str).map(by_run["optimizer"])).all()
    # ... and any param or tag on request.
    tidy = data.tidy("params.optimizer.lr", "tags.harness.status")
    assert len(tidy) == len(metrics)
    owner = tidy["run_id"].astype(str)
    assert (tidy["params.optimizer.lr"].astype(str) == owner.map(by_run["params.optimizer.lr"])).all()
    assert (tidy["tags.harness.status"].astype(str) == owner.map(by_run["outcome"])).all()


def test_the_sql_path_reads_what_get_metric_history_returns(store, data):
    client = MlflowClient(tracking_uri=store)
    children = [client.get_run(run_id) for run_id in data.runs["run_id"]]
    fast = history.read_histories(client, children)
    slow = history.read_histories(client, children, via_client=True)
    columns = ["run_id", "key", "step", "value", "timestamp"]
    pd.testing.assert_frame_equal(
        fast[columns].astype({"run_id": str, "key": str}), slow[columns].astype({"run_id": str, "key": str})
    )


def test_second_load_reads_the_cache_not_the_store(store, tmp_path):
    uri, cache_dir = copy_store(store, tmp_path / "store"), tmp_path / "cache"
    first = load.load_sweep(uri, EXPERIMENT, cache_dir=cache_dir)
    assert first.source == "mlflow"
    sql(uri, "DELETE FROM metrics")  # proof: from now on the store has no histories to give
    second = load.load_sweep(uri, EXPERIMENT, cache_dir=cache_dir)
    assert second.source == "cache"
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    # A run that changed (here: its end time) invalidates the cache: the (now empty) store is read again.
    sql(uri, "UPDATE runs SET end_time = end_time + 1 WHERE run_uuid = ?", first.runs["run_id"].iloc[0])
    third = load.load_sweep(uri, EXPERIMENT, cache_dir=cache_dir)
    assert third.source == "mlflow" and third.metrics.empty


def test_a_rerun_grid_point_counts_once_latest_run_wins(store, tmp_path):
    uri = copy_store(store, tmp_path / "store")
    client = MlflowClient(tracking_uri=uri)
    sweep = load.find(uri, EXPERIMENT)
    old = load.load(sweep).runs.iloc[0]
    rerun = client.create_run(
        sweep.experiment.experiment_id,
        tags={
            "mlflow.parentRunId": sweep.run_id,
            "harness.config_hash": old["config_hash"],
            "harness.status": "failed",
            "harness.error": "RuntimeError: boom",
        },
    )
    client.set_terminated(rerun.info.run_id, "FAILED")
    runs = load.load(sweep).runs
    assert (
        len(runs) == 12
        and rerun.info.run_id in set(runs["run_id"])
        and old["run_id"] not in set(runs["run_id"])
    )


# --- analysis --------------------------------------------------------------------------------------------------


def test_quadratic_ranking_matches_the_closed_form(data):
    best = tables.ranked(configs.per_config(data.runs), data.runs)
    top = best.iloc[0]
    assert (top["optimizer"], top["lr"], top["rank"]) == ("sgd", 0.1, 1)
    assert top["val_loss_mean"] == pytest.approx(13 * 0.64**STEPS, rel=1e-9)
    assert (top["trials"], top["diverged"], top["failed"]) == (6, 2, 0)
    assert tables.answer(best, "quadratic").startswith("On quadratic, sgd at lr 0.1 and batch size 1")


def constructed_runs(rows: list[tuple]) -> pd.DataFrame:
    """Runs from (optimizer, lr, seed, outcome, final val loss, run seconds, steps to target)."""
    frame = pd.DataFrame(
        rows, columns=["optimizer", "lr", "seed", "outcome", "final_val_loss", "time_s", "steps_to_target"]
    )
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    frame["task"], frame["batch_size"], frame["batch_label"], frame["total_steps"] = "toy", 32, "32", 100
    frame["final_val_accuracy"] = np.nan
    frame["time_to_target_s"] = frame["steps_to_target"] / 100
    frame["initial_val_loss"] = 2.0
    return frame


def test_ranking_prefers_configs_that_never_diverge_then_loss_then_time():
    runs = constructed_runs(
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
    best = tables.ranked(configs.per_config(runs), runs)
    assert list(zip(best["optimizer"], best["lr"], best["rank"])) == [("b", 0.02, 1), ("a", 0.1, 2)]
    assert best.set_index("optimizer").loc["a", "diverged"] == 1  # counted over the optimizer's whole grid
    assert tables.answer(best, "toy").startswith("On toy, b at lr 0.02 and batch size 32")


def test_fairness_line_names_unequal_trials_and_seeds():
    runs = constructed_runs(
        [("a", 0.1, 0, "completed", 0.5, 1.0, 50), ("a", 0.2, 1, "completed", 0.5, 1.0, 50)]
        + [("b", 0.1, 0, "completed", 0.5, 1.0, 50)]
    )
    line = tables.fairness_line(runs, "toy")
    assert line.startswith("Unfair") and "unequal trials (a: 2; b: 1)" in line and "unequal seeds" in line
    assert tables.fairness_line(runs[runs["optimizer"] == "a"], "toy").startswith("Fair comparison")


def test_expected_best_of_k_trials_is_exact():
    scores = np.array([0.7, 0.2, 0.9, 0.2, 0.4])
    brute = [np.mean([min(c) for c in itertools.combinations(scores, k)]) for k in range(1, 6)]
    np.testing.assert_allclose(budget.expected_best(scores), brute, rtol=1e-12)


def test_performance_profile_on_a_known_case():
    grid = pd.DataFrame(
        {
            "task": ["t1", "t1", "t2", "t2", "t3", "t3"],
            "optimizer": ["a", "b"] * 3,
            "time_to_target_s": [1.0, 2.0, 4.0, 2.0, np.inf, 3.0],  # a never reaches t3's target
        }
    )
    ratios = profiles.ratios(grid).set_index(["task", "optimizer"])["ratio"]
    assert ratios.to_dict() == {
        ("t1", "a"): 1.0,
        ("t1", "b"): 2.0,
        ("t2", "a"): 2.0,
        ("t2", "b"): 1.0,
        ("t3", "a"): np.inf,
        ("t3", "b"): 1.0,
    }
    curve = profiles.profile(profiles.ratios(grid)).set_index(["optimizer", "tau"])["rho"]
    assert curve[("a", 1.0)] == pytest.approx(1 / 3) and curve[("a", 2.0)] == pytest.approx(2 / 3)
    assert curve[("b", 1.0)] == pytest.approx(2 / 3) and curve[("b", 2.0)] == pytest.approx(1.0)


def test_diverged_runs_are_in_the_sensitivity_data(data):
    frame = sensitivity_data(data.runs)
    diverged = frame[frame["outcome"] == "diverged"]
    assert len(diverged) == 2 and set(diverged["lr"]) == {1.5} and diverged["final_val_loss"].isna().all()
    assert len(frame) == len(data.runs)


# --- output ----------------------------------------------------------------------------------------------------


def test_every_figure_is_written_as_png_and_svg(report):
    names = {figure.name for figure in report.figures}
    assert names == {
        "convergence",
        "convergence_by_batch",
        "sensitivity",
        "heatmap",
        "time_to_target",
        "tuning_budget",
    }
    for figure in report.figures:
        assert figure.png.read_bytes().startswith(b"\x89PNG") and figure.png.stat().st_size > 10_000
        assert b"<svg" in figure.svg.read_bytes()[:2000] and figure.svg.stat().st_size > 10_000


def test_html_is_self_contained_and_answers_first(report):
    page = report.html.read_text()
    assert page.count("data:image/png;base64,") == len(report.figures)
    assert "<img" in page and 'src="figures/' not in page  # every image embedded: opens offline
    answer = page.index('class="answer"')
    assert answer < page.index('class="dataframe ranked"') < page.index("<figure")
    assert "On quadratic, sgd at lr 0.1" in page
    assert "](figures/convergence.png)" in report.markdown.read_text()


def test_summary_csv_has_one_row_per_optimizer_and_batch_size(report):
    summary = pd.read_csv(report.summary_csv).set_index("optimizer")
    assert sorted(summary.index) == ["adam", "sgd"] and (summary["batch_size"] == 1).all()
    assert summary.loc["sgd", "diverged"] == 2 and summary.loc["adam", "diverged"] == 0
    assert summary.loc["sgd", "best_lr"] == 0.1 and summary.loc["sgd", "trials"] == 6


def test_several_tasks_get_sections_and_performance_profiles(data, tmp_path):
    # A second task made from the first: same runs, relabelled, with adam twice as fast to the target.
    other = data.runs.assign(task="quadratic_b", run_id=data.runs["run_id"] + "b")
    other["time_to_target_s"] = other["time_to_target_s"].where(other["optimizer"] != "adam", 0.001)
    metrics = data.metrics.assign(run_id=data.metrics["run_id"].astype(str) + "b", task="quadratic_b").astype(
        {"run_id": "category", "task": "category"}
    )
    both = load.SweepData(
        data.experiment,
        data.sweep_run_id,
        data.sweep_name,
        data.sweep_tags,
        pd.concat([data.runs, other], ignore_index=True),
        pd.concat([data.metrics.astype({"task": str}), metrics.astype({"task": str})], ignore_index=True),
        data.source,
    )
    report = write_report(both, tmp_path)
    names = {figure.name for figure in report.figures}
    assert {"performance_profile", "convergence_quadratic", "heatmap_quadratic_b"} <= names
    assert report.directory.joinpath("figures", "performance_profile.png").stat().st_size > 10_000
    assert len(report.answers) == 2


# --- command line ----------------------------------------------------------------------------------------------


def test_command_line_writes_the_report_and_attaches_it_to_the_sweep(store, tmp_path):
    uri = copy_store(store, tmp_path / "store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), "--experiment", EXPERIMENT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sweep = load.find(uri, EXPERIMENT).run_id
    html = Path(done.stdout.strip())
    assert html == (tmp_path / "reports" / EXPERIMENT / sweep / "report.html").resolve() and html.is_file()
    logged = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(sweep, "report")}
    assert {"report/report.html", "report/report.md", "report/summary.csv", "report/figures"} <= logged


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
    sweep = load.find(uri, EXPERIMENT).run_id
    assert load.find(uri, EXPERIMENT, sweep).run_id == sweep
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("other")
    assert cli.main(["--experiment", "other", "--sweep", sweep, "--tracking-uri", uri, "--no-log"]) == 1
    assert f"run {sweep} is not a sweep (parent run) of experiment 'other'" in capsys.readouterr().err
    child = load.load(load.find(uri, EXPERIMENT)).runs["run_id"].iloc[0]
    assert cli.main(["--experiment", EXPERIMENT, "--sweep", child, "--tracking-uri", uri, "--no-log"]) == 1
    assert "is not a sweep" in capsys.readouterr().err


def test_missing_store_is_not_created(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert cli.main(["--experiment", EXPERIMENT, "--tracking-uri", uri]) == 1
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_running_runs_and_sweeps_without_finished_runs_are_refused(store, tmp_path, capsys):
    uri = copy_store(store, tmp_path / "store")
    client = MlflowClient(tracking_uri=uri)
    sweep = load.find(uri, EXPERIMENT)
    running = client.create_run(sweep.experiment.experiment_id, tags={"mlflow.parentRunId": sweep.run_id})
    assert cli.main(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--no-log"]) == 1
    assert "still has 1 running run(s)" in capsys.readouterr().err
    client.set_terminated(running.info.run_id, "FINISHED")

    empty = client.create_experiment("empty")
    parent = client.create_run(empty, tags={"harness.role": "sweep"}).info.run_id
    failed = client.create_run(empty, tags={"mlflow.parentRunId": parent, "harness.error": "ValueError: bad"})
    client.set_terminated(failed.info.run_id, "FAILED")
    assert cli.main(["--experiment", "empty", "--tracking-uri", uri, "--no-log"]) == 1
    err = capsys.readouterr().err
    assert "has no finished runs" in err and "ValueError: bad" in err and len(err.strip().splitlines()) == 1
