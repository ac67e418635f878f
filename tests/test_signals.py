"""SIGINT and SIGTERM leave no run RUNNING: real signals to real processes, waiting on the store, not on a clock."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import all_runs, ended, history, running_runs, wait_for

from harness.tracking import sqlite_store

LONG = ["task=digits_mlp", "trainer.max_steps=1000000", "tracking.progress=false"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.train", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt(proc: subprocess.Popen, signum: int, store: str, running: int = 1, sweep: bool = False) -> str:
    """Send `signum` once `running` runs train (seen in the store: a sweep's jobs, not its parent); the process's
    stderr once it has ended."""

    def training() -> bool:
        runs = running_runs(store, children_only=sweep)
        # A run is RUNNING from before its first step: wait until each has written training points.
        return len(runs) >= running and all(history(store, r.info.run_id, "train/loss") for r in runs)

    wait_for(training, proc=proc, what="runs training")
    proc.send_signal(signum)
    _, err = ended(proc)
    return err


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_ends_killed_with_its_metrics_and_one_line(store, tmp_path, signum, code):
    proc = start(LONG, tmp_path)
    err = interrupt(proc, signum, store)
    assert proc.returncode == code
    name = signal.Signals(signum).name
    assert said(err) == [
        f"interrupted by {name}: the run ended KILLED; run it again with: python -m harness.train {shlex.join(LONG)}"
    ]
    [run] = all_runs(store)
    assert run.info.status == "KILLED" and run.data.tags["harness.status"] == "killed"
    assert run.data.tags["harness.error"] == f"interrupted (Interrupted: {name})"
    losses = history(store, run.info.run_id, "train/loss")
    assert len(losses) > 0 and [s for s, _ in losses] == list(range(len(losses)))  # buffered points flushed


def said(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and "INFO mlflow" not in ln]


@pytest.mark.slow
def test_a_signal_while_the_first_store_is_made_says_no_run_was_created(store, tmp_path):
    """SIGTERM while MLflow's migrations build a new store for a single run: the store is made whole (or not at all)
    and the line says that nothing was recorded, not that a run ended."""
    db = Path(store.removeprefix("sqlite:///"))
    proc = start(LONG, tmp_path)
    wait_for(lambda: sqlite_store.building_path(db).exists(), proc=proc, what="the store's build")
    proc.send_signal(signal.SIGTERM)
    _, err = ended(proc)
    assert proc.returncode == 143, err[-3000:]
    assert said(err) == [
        "interrupted by SIGTERM: no run was created, nothing was recorded; run it again with: python -m "
        f"harness.train {shlex.join(LONG)}"
    ]
    assert not sqlite_store.building_path(db).exists() and all_runs(store) == []


@pytest.mark.slow
def test_a_signal_to_an_untracked_run_says_nothing_was_recorded(store, tmp_path):
    """...and the command it prints to run it again holds no credential the user typed."""
    args = [*LONG, "tracking.enabled=false", "tracking.uri=http://alice:s3cret@127.0.0.1:9/"]
    proc = start(args, tmp_path)
    # Hydra writes the job's config once the harness handles signals (harness.entry.run) and the job is starting.
    wait_for(lambda: list(tmp_path.glob("outputs/*/*/.hydra/config.yaml")), proc=proc, what="the job's start")
    proc.send_signal(signal.SIGTERM)
    _, err = ended(proc)
    assert proc.returncode == 143, err[-3000:]
    assert said(err) == [
        "interrupted by SIGTERM: no run was created, nothing was recorded; run it again with: python -m "
        f"harness.train {shlex.join(args[:-1])} tracking.uri=http://***@127.0.0.1:9/"
    ]
    assert not Path(store.removeprefix("sqlite:///")).parent.exists()  # no store was made


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], JOBLIB], ids=["basic", "joblib"])
def test_a_signalled_sweep_ends_its_jobs_and_parent_killed_with_counts(store, tmp_path, launcher):
    args = ["-m", *LONG, "seed=0,1,2", *launcher]
    proc = start(args, tmp_path)
    err = interrupt(proc, signal.SIGTERM, store, running=2 if launcher else 1, sweep=True)
    assert proc.returncode == 143
    runs = all_runs(store)
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == (2 if launcher else 1)
    assert all(r.info.status == "KILLED" for r in runs)  # nothing left RUNNING, the parent included
    tags = parent.data.tags
    assert (tags["harness.jobs.killed"], tags["harness.jobs.completed"], tags["harness.jobs.total"]) == (
        str(len(children)),
        "0",
        str(len(children)),
    )
    [line] = [ln for ln in err.splitlines() if ln.startswith("interrupted by SIGTERM")]
    assert f"sweep parent run {parent.info.run_id} ended KILLED with 0 of 3 grid points done" in line
    assert "resume it (done points are skipped) with: python -m harness.train -m" in line


@pytest.mark.parametrize(
    "workers", ["1", pytest.param("2", marks=pytest.mark.slow)], ids=["in-process", "worker-processes"]
)
def test_a_signalled_batched_sweep_ends_its_trials_and_parent_killed(store, tmp_path, workers):
    """Two groups (sgd, adam) of two trials, trained here or in two worker processes: SIGTERM ends all four runs
    KILLED with the steps they recorded, the parent too, and leaves no worker behind."""
    args = ["-m", *LONG, "optimizer=sgd,adam", "seed=0,1", "hydra/launcher=batched"]
    proc = start([*args, f"hydra.launcher.workers={workers}"], tmp_path)
    err = interrupt(proc, signal.SIGTERM, store, running=2 if workers == "1" else 4, sweep=True)
    assert proc.returncode == 143, err[-3000:]
    runs = all_runs(store)
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert all(r.info.status == "KILLED" for r in runs)
    assert len(children) == (2 if workers == "1" else 4)
    for child in children:
        losses = history(store, child.info.run_id, "train/loss")
        assert len(losses) > 0 and [s for s, _ in losses] == list(range(len(losses)))
    assert parent.data.tags["harness.jobs.killed"] == str(len(children))
    [line] = [ln for ln in err.splitlines() if ln.startswith("interrupted by SIGTERM")]
    assert f"sweep parent run {parent.info.run_id} ended KILLED with 0 of 4 grid points done" in line
    wait_for(lambda: not processes_in(tmp_path), timeout=30, what="the worker processes to end")


def processes_in(directory) -> list[int]:
    """Pids of the processes whose working directory is `directory` (Linux's /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == Path(directory):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_signal_inside_a_held_block_is_raised_when_the_block_ends():
    """harness.signals.held (RunGroup.flush): the write inside ends whole, then the signal is handled."""
    from harness import signals

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signals._handle)
    signals.received = None
    steps = []
    try:
        with pytest.raises(signals.Interrupted) as raised:
            with signals.held():
                os.kill(os.getpid(), signal.SIGTERM)
                steps += [1, 2]  # the handler has run by now (bytecode boundaries), without raising
            steps.append(3)
        assert steps == [1, 2] and raised.value.exit_code == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        signals.received = None


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher,debug",
    [
        ([], "HARNESS_DEBUG"),
        (JOBLIB, "HYDRA_FULL_ERROR"),
        (["hydra/launcher=batched", "hydra.launcher.workers=1", "optimizer=sgd,adam"], "HARNESS_DEBUG"),
    ],
    ids=["basic", "joblib", "batched"],
)
def test_debug_mode_ends_a_signalled_sweep_as_without_it(store, tmp_path, monkeypatch, launcher, debug):
    """HARNESS_DEBUG=1 / HYDRA_FULL_ERROR=1 add a traceback to what is printed; the runs end as without them."""
    monkeypatch.setenv(debug, "1")
    proc = start(["-m", *LONG, "seed=0,1", *launcher], tmp_path)
    running = 1 if not launcher else 2
    err = interrupt(proc, signal.SIGTERM, store, running=running, sweep=True)
    assert proc.returncode == 143, err[-3000:]
    runs = all_runs(store)
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == running and all(r.info.status == "KILLED" for r in runs)
    assert parent.data.tags["harness.jobs.killed"] == str(running)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback (most recent call last):" in err  # what debug mode is for
    assert lines[-1].startswith(f"interrupted by SIGTERM: sweep parent run {parent.info.run_id} ended KILLED")
