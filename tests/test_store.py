"""The store across processes: concurrent creation, a sweep launched twice at once, spool files as input."""

import json
import os
import subprocess
import sys

import pytest
from conftest import all_runs, run_cli, running_runs, wait_for

from harness.sync import main as sync_main
from harness.tracking import store as stores
from harness.tracking.stores import open_store

FAST = ["trainer.max_steps=3", "tracking.progress=false"]


def launch(args, cwd, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.train", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_launches_at_once_create_one_sound_store(tmp_path):
    # No MLFLOW_TRACKING_URI: both create the default store, mlruns/mlflow.db, in the same new launch directory.
    env = {"MLFLOW_TRACKING_URI": ""}
    procs = [launch([*FAST, f"optimizer={name}"], tmp_path, env) for name in ("sgd", "adam", "rmsprop")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    uri = stores.default_uri(tmp_path)
    assert sorted(r.data.params["optimizer.name"] for r in all_runs(uri)) == ["adam", "rmsprop", "sgd"]
    assert {r.info.status for r in all_runs(uri)} == {"FINISHED"}
    tables = (
        subprocess.run(
            ["sqlite3", str(tmp_path / "mlruns" / "mlflow.db"), ".tables"], capture_output=True, text=True
        ).stdout
        if _has_sqlite3_cli()
        else ""
    )
    assert "_alembic_tmp" not in tables


def _has_sqlite3_cli() -> bool:
    from shutil import which

    return which("sqlite3") is not None


def test_the_same_sweep_launched_twice_at_once_runs_once(store, tmp_path):
    args = ["-m", "task=digits_mlp", "trainer.max_steps=1000000", "seed=0,1", "tracking.progress=false"]
    first = launch(args, tmp_path)
    try:
        wait_for(lambda: running_runs(store, children_only=True), proc=first, what="the first sweep's job")
        second = run_cli(*args, cwd=tmp_path)
        assert second.returncode == 1
        [line] = [ln for ln in second.stderr.splitlines() if "error" in ln]
        assert "this sweep is already running (pid" in line and "starting it twice" in line
        runs = all_runs(store)
        assert len([r for r in runs if r.data.tags.get("harness.role") == "sweep"]) == 1
        assert [r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags] == [
            "RUNNING"
        ]  # not stale
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert {r.info.status for r in all_runs(store)} == {"KILLED"}


def spool_file(tmp_path, header: dict) -> str:
    path = tmp_path / "unsent.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps({"tags": {"x": "1"}}) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///{tmp}/elsewhere/new/mlflow.db", "postgresql://user@localhost/newdb", "file:{tmp}/files"],
)
def test_a_crafted_spool_header_creates_nothing_where_it_points(tmp_path, capsys, uri):
    uri = uri.format(tmp=tmp_path)
    path = spool_file(tmp_path, {"run_id": "0" * 32, "tracking_uri": uri})
    assert sync_main([path]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unsent.jsonl"]  # no directory, no database


def test_sync_of_an_unknown_run_or_a_bad_run_id_is_one_line(store, tmp_path, capsys):
    open_store(store)
    path = spool_file(tmp_path, {"run_id": "f" * 32, "tracking_uri": store})
    assert sync_main([path]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {path}: run {'f' * 32} does not exist in {store}"
    ]
    path = spool_file(tmp_path, {"run_id": "' or 1=1 --", "tracking_uri": store})
    assert sync_main([path]) == 1
    assert "is not an MLflow run id" in capsys.readouterr().err


@pytest.mark.slow  # two launches; the basic launcher's twin stays in the default suite
def test_a_fresh_batched_sweep_launched_while_the_same_runs_refuses_before_training(store, tmp_path):
    """hydra/launcher=batched opens a fresh sweep's parent run late (rerun=all: nothing to resume), but it takes the
    sweep lock first: a second launch of a running sweep refuses before it trains anything: one line, exit 1, no run
    of its own."""
    args = [
        "-m", "hydra/launcher=batched", "task=digits_mlp", "trainer.max_steps=1000000", "seed=0,1,2,3",
        "tracking.progress=false",
    ]  # fmt: skip
    first = launch(args, tmp_path)
    try:
        wait_for(lambda: running_runs(store, children_only=True), proc=first, what="the first sweep's trials")
        second = run_cli(*args, "hydra.callbacks.sweep.rerun=all", cwd=tmp_path)
        assert second.returncode == 1, second.stderr[-2000:]
        assert "Training" not in second.stdout
        [line] = [ln for ln in second.stderr.splitlines() if "error" in ln]
        assert "this sweep is already running (pid" in line
        runs = all_runs(store)
        assert len([r for r in runs if r.data.tags.get("harness.role") == "sweep"]) == 1
        assert sorted(r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags) == ["RUNNING"] * 4
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert {r.info.status for r in all_runs(store)} == {"KILLED"}
