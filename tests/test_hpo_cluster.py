"""Cluster launching (submitit) and Optuna search: real multiruns in a subprocess against a private SQLite store."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, ROOT, all_runs, history, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness.errors import Stopped
from harness.sweep.hpo import failure_budget
from harness.sweep.run import objective


def _fresh_experiments(store: str) -> list:
    import sqlite3
    from types import SimpleNamespace

    with sqlite3.connect(store.removeprefix("sqlite:///")) as connection:
        rows = connection.execute("SELECT experiment_id, name FROM experiments").fetchall()
    return [SimpleNamespace(experiment_id=str(i), name=n) for i, n in rows]


def check_one_parent(store, children_expected: int, experiment: str):
    """One FINISHED parent run in `experiment`, every child under it and in it, nothing in the Default experiment.

    The Optuna tests share a store (its migrations then run once), each in an experiment of its own.
    """
    runs = all_runs(store)
    # all_runs reads the store afresh; a client kept from an earlier test in this process can hold an old snapshot.
    experiment_ids = {e.experiment_id for e in _fresh_experiments(store) if e.name == experiment}
    [experiment_id] = experiment_ids
    [parent] = [
        r
        for r in runs
        if r.data.tags.get("harness.role") == "sweep" and r.info.experiment_id == experiment_id
    ]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == children_expected
    assert {c.info.experiment_id for c in children} == {experiment_id}
    in_experiment = [r for r in runs if r.info.experiment_id == experiment_id]
    assert len(in_experiment) == children_expected + 1
    # The callback's state reached every job (pickled to submitit workers too): no run fell back to Default.
    assert [r for r in runs if r.info.experiment_id == "0"] == []
    return parent, children


def sweep_dir(cwd: Path) -> Path:
    [path] = (cwd / "multirun").glob("*/*")
    return path


# --- SLURM: what would be submitted, rendered by submitit itself; sbatch is a stub that keeps the script ------------
# (tests/test_slurm.py submits to a real cluster)


def compose_launcher(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg  # what Hydra's setup() sets; launch() only reads the sweep dir from it
    return launcher


@pytest.mark.parametrize(
    ("partition", "gpu_overrides", "gpus"),
    [(None, [], "0"), ("a100", ["hydra.launcher.gpus_per_node=1"], "1")],
)
def test_the_slurm_launcher_asks_for_cpu_jobs_or_a_gpu_each_in_a_capped_array(
    tmp_path, monkeypatch, partition, gpu_overrides, gpus
):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    stubs = {"sbatch": f'cp "$1" {tmp_path}/submitted.sh\necho refused >&2\nexit 1', "srun": "exit 1"}
    for name, body in stubs.items():
        (fake_bin / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    if partition is None:
        monkeypatch.delenv("SLURM_PARTITION", raising=False)
    else:
        monkeypatch.setenv("SLURM_PARTITION", partition)
    launcher = compose_launcher(
        "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", *gpu_overrides
    )
    jobs = [[f"optimizer.lr={lr}"] for lr in (0.01, 0.1, 1.0)]
    # The stub keeps the script, then refuses the array: one line (harness.errors.Stopped: exit 1, no traceback).
    with pytest.raises(Stopped, match="^sbatch refused the sweep's jobs: refused$"):
        launcher.launch(jobs, initial_job_idx=0)
    flags = {
        line.split()[1].lstrip("-").split("=")[0]: line.split("=", 1)[1]
        for line in (tmp_path / "submitted.sh").read_text().splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    }
    assert flags.get("partition") == partition  # none: the cluster's default partition
    assert flags["gpus-per-node"] == gpus
    assert flags["ntasks-per-node"] == "1" and flags["nodes"] == "1"
    assert flags["cpus-per-task"] == "1" and flags["mem"] == "4GB" and flags["time"] == "60"
    assert flags["array"] == "0-2%3"  # 3 jobs, at most min(3, array_parallelism=8) at once


# --- submitit_local: every job in a process of its own, two at a time ----------------------------------------------


@pytest.mark.slow  # four processes, each importing torch and mlflow: ~5 s apiece on an idle 2-core machine
def test_a_grid_sweep_through_submitit_runs_capped_waves_under_one_parent(store, tmp_path):
    lrs = ["0.05", "0.1", "0.2", "1.5"]  # 1.5 diverges for SGD on x^2
    proc = run_cli(
        "-m",
        "hydra/launcher=local_cluster",
        "hydra.sweeper.max_batch_size=2",
        "task=quadratic",
        f"optimizer.lr={','.join(lrs)}",
        "trainer.max_steps=20",
        "tracking.experiment=cluster",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = check_one_parent(store, 4, "cluster")
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert sorted(by_lr) == sorted(lrs)
    for lr, child in by_lr.items():
        assert child.info.status == "FINISHED"
        if lr == "1.5":
            assert child.data.tags["harness.status"] == "diverged"
        else:
            assert child.data.tags["harness.status"] == "completed"
            assert [s for s, _ in history(store, child.info.run_id, "train/loss")] == list(range(20))
    tags = parent.data.tags
    counts = [tags[f"harness.{k}"] for k in ("jobs.completed", "jobs.diverged", "jobs.failed", "grid_size")]
    assert counts == ["3", "1", "0", "4"]
    assert tags["harness.launcher"].endswith("submitit_launcher.LocalLauncher")
    # Each job ran in a submitit process of its own, and the second wave started after the first had ended.
    assert len(list((sweep_dir(tmp_path) / ".submitit").glob("*/*_result.pkl"))) == 4
    first, second = [by_lr[lr] for lr in lrs[:2]], [by_lr[lr] for lr in lrs[2:]]
    assert min(c.info.start_time for c in second) >= max(c.info.end_time for c in first)


# --- Optuna ----------------------------------------------------------------------------------------------------------


def optuna_cli(tmp_path: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    common = ["+hparams_search=optuna", "task=quadratic", "trainer.max_steps=30"]
    return run_cli("-m", *common, *args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})


def failed_trials_told_to_optuna(proc) -> int:
    return (proc.stdout + proc.stderr).count("Failed experiment: Return value must be float-castable")


@pytest.fixture(scope="module")
def optuna_store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('optuna-store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory, optuna_store):
    """The issue's example search, run once for the tests that read it."""
    cwd = tmp_path_factory.mktemp("optuna")
    proc = optuna_cli(cwd, optuna_store, "hydra.sweeper.n_trials=8", "tracking.experiment=opt")
    return cwd, optuna_store, proc


def test_an_optuna_search_is_one_parent_with_a_child_per_trial_and_finds_a_good_lr(optuna_sweep):
    cwd, uri, proc = optuna_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = check_one_parent(uri, 8, "opt")
    tags = parent.data.tags
    counts = [tags[f"harness.{k}"] for k in ("grid_size", "jobs.total", "jobs.completed", "jobs.failed")]
    assert counts == ["8", "8", "8", "0"]
    assert "optimizer.lr=tag(log, interval(1e-4, 1))" in tags["harness.sweep_overrides"]
    assert tags["mlflow.runName"] == "sweep quadratic: optimizer.lr x data.batch_size (8 points)"
    lrs = [float(c.data.params["optimizer.lr"]) for c in children]
    assert len(set(lrs)) == 8 and all(1e-4 <= lr <= 1 for lr in lrs)
    assert {c.data.params["data.batch_size"] for c in children} <= {"16", "32", "64", "128"}
    # SGD on x^2 contracts by |1 - 2 lr| per step: the best of the trials is the lr nearest 0.5, and Optuna agrees.
    best = min(children, key=lambda c: c.data.metrics["final/val_loss"])
    assert float(best.data.params["optimizer.lr"]) > 0.05
    results = yaml.safe_load((sweep_dir(cwd) / "optimization_results.yaml").read_text())
    assert results["best_params"]["optimizer.lr"] == pytest.approx(float(best.data.params["optimizer.lr"]))
    assert results["best_value"] == pytest.approx(best.data.metrics["final/val_loss"])
    assert failed_trials_told_to_optuna(proc) == 0


@pytest.mark.slow  # the report draws every figure
def test_the_report_reads_an_optuna_sweep(optuna_sweep, tmp_path):
    cwd, uri, _ = optuna_sweep
    args = ["--experiment", "opt", "--no-log", "--out", str(tmp_path / "report")]
    report = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), *args],
        cwd=cwd,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "report.html").exists()
    assert "8 runs" in report.stderr


def test_diverged_trials_are_failed_trials_for_optuna_and_the_study_goes_on(optuna_store, tmp_path):
    # lr in [0.5, 2]: SGD on x^2 maps x -> (1 - 2 lr) x, so above lr 1 the loss grows by (2 lr - 1)^2 per step.
    proc = optuna_cli(
        tmp_path,
        optuna_store,
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=tag(log, interval(0.5, 2))",
        "tracking.experiment=div",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = check_one_parent(optuna_store, 4, "div")
    diverged = [c for c in children if c.data.tags["harness.status"] == "diverged"]
    assert 1 <= len(diverged) <= 2  # within the budget: max_failure_rate 0.5 x 4 trials
    # Diverged: the loss passed 1e4 x its initial value within the 30 steps, i.e. (2 lr - 1)^58 > 1e4.
    growth_limit = 1e4 ** (1 / 58)
    for child in children:
        lr = float(child.data.params["optimizer.lr"])
        assert (child.data.tags["harness.status"] == "diverged") == (2 * lr - 1 > growth_limit), lr
    assert all(c.info.status == "FINISHED" and "final/val_loss" not in c.data.metrics for c in diverged)
    assert parent.data.tags["harness.jobs.diverged"] == str(len(diverged))
    assert failed_trials_told_to_optuna(proc) == len(diverged)
    results = yaml.safe_load((sweep_dir(tmp_path) / "optimization_results.yaml").read_text())
    assert results["best_params"]["optimizer.lr"] < 1


def test_more_failures_than_max_failure_rate_allows_stop_the_study_and_end_its_parent_run(
    optuna_store, tmp_path
):
    # Every lr in [1.5, 2] diverges; 0.25 x 4 trials tolerates one failure, so the third trial never starts.
    proc = optuna_cli(
        tmp_path,
        optuna_store,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        "optimizer.lr=tag(log, interval(1.5, 2))",
        "tracking.experiment=stop",
    )
    assert proc.returncode == 1
    assert (
        "2 trials failed or diverged, more than the 1 that hydra.sweeper.max_failure_rate=0.25" in proc.stderr
    )
    parent, children = check_one_parent(optuna_store, 2, "stop")
    assert all(c.data.tags["harness.status"] == "diverged" for c in children)
    assert parent.data.tags["harness.jobs.diverged"] == "2"
    assert "study stopped" in parent.data.tags["harness.stopped"]


def failure_budget_for(rate: float, n_trials: int) -> int:
    return failure_budget(
        OmegaConf.create({"hydra": {"sweeper": {"max_failure_rate": rate, "n_trials": n_trials}}})
    )


@pytest.mark.parametrize(
    ("rate", "n_trials", "allowed"), [(0.0, 20, 0), (0.5, 20, 10), (0.1, 30, 3), (1.0, 8, 8)]
)
def test_the_failure_budget_is_a_share_of_the_whole_study(rate, n_trials, allowed):
    assert failure_budget_for(rate, n_trials) == allowed


@pytest.mark.parametrize(("loss", "value"), [(0.25, 0.25), (None, None), (math.nan, None), (math.inf, None)])
def test_a_job_without_a_finite_loss_returns_none_which_optuna_records_as_a_failed_trial(loss, value):
    # NaN would not do: optuna 2.10 refuses it, then refuses the FAIL the plugin records instead, ending the sweep.
    assert objective(loss) == value
