"""hydra/launcher=batched_slurm: the batched launcher's pieces as cluster jobs (one job per piece), recorded by the
launching process bitwise as the local batched launcher records them. Through submitit's local processes here; on the
real test cluster (scripts/slurm.sh) in the slow test."""

import re
from pathlib import Path

import pytest
from conftest import mlflow_client, run_cli
from test_slurm import cluster  # noqa: F401 - the real test cluster (a session fixture)

GRID = (
    "-m",
    "task=linreg_10d",
    "optimizer=sgd,adam",
    "optimizer.lr_scale=0.1,1",
    "seed=0,1",
    "trainer.max_steps=30",
)
ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def _records(uri: str) -> dict[str, tuple]:
    """Each grid point's latest child run by its overrides (the store URI left out): status, outcome, final
    metrics, train/loss history."""
    client = mlflow_client(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "linreg_10d"]
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["harness.role"] == "job"]
    found = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        point = " ".join(
            o for o in run.data.tags["harness.overrides"].split() if not o.startswith("tracking.")
        )
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]
        final = {k: v for k, v in run.data.metrics.items() if k.startswith(("final/", "best/"))}
        found[point] = (run.info.status, run.data.tags["harness.status"], final, history)
    return found


def _jobs(sweep_root: Path) -> set[str]:
    """The submitit job folders (a SLURM job id, or an array task's)."""
    found = sweep_root.glob("multirun/*/*/.submitit/*")
    return {p.name for p in found if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)}


def test_pieces_as_jobs_record_what_the_local_batched_launcher_records_and_a_relaunch_submits_nothing(
    tmp_path,
):
    local_uri, packed_uri = f"sqlite:///{tmp_path}/local.db", f"sqlite:///{tmp_path}/packed.db"
    local = run_cli(*GRID, "hydra/launcher=batched", f"tracking.uri={local_uri}", cwd=tmp_path, env=ENV)
    assert local.returncode == 0, local.stderr[-3000:]
    packed_dir = tmp_path / "packed"
    packed_dir.mkdir()
    command = (
        *GRID,
        "hydra/launcher=batched_slurm",
        "hydra.launcher.cluster=local",
        f"tracking.uri={packed_uri}",
    )
    packed = run_cli(*command, cwd=packed_dir, env=ENV)
    assert packed.returncode == 0, packed.stderr[-3000:]
    [pieces] = re.findall(r"in (\d+) pieces as \1 local submitit processes", packed.stderr)
    assert len(_jobs(packed_dir)) == int(pieces) == 2  # sgd's and adam's group: one job each, not 8
    mine, theirs = _records(packed_uri), _records(local_uri)
    assert len(mine) == 8 and mine.keys() == theirs.keys()
    for point, record in mine.items():
        assert record == theirs[point], point  # bitwise: the same engine, the same writes
        assert record[:2] == ("FINISHED", "completed") and len(record[3]) == 30

    again = run_cli(*command, cwd=packed_dir, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "all 8 grid points already done: nothing to launch" in again.stderr
    assert len(_jobs(packed_dir)) == 2 and len(_records(packed_uri)) == 8


@pytest.mark.parametrize(
    "bad, line",
    [
        ("hydra.launcher.cluster=kubernetes", "hydra.launcher.cluster='kubernetes' is not allowed"),
        ("hydra.launcher.timeout_min=0", "hydra.launcher.timeout_min=0 is not allowed"),
    ],
)
def test_bad_cluster_options_are_one_line_before_any_run(tmp_path, bad, line):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_cli(*GRID, "hydra/launcher=batched_slurm", bad, f"tracking.uri={uri}", cwd=tmp_path, env=ENV)
    assert done.returncode == 2, done.stderr[-2000:]
    assert line in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # real SLURM jobs: each imports torch on the node
def test_the_demo_grid_on_the_cluster_is_one_job_per_piece_each_point_once(cluster, tmp_path):  # noqa: F811
    """The real test cluster: a 24-point grid of 2 groups goes out as 2 SLURM jobs (an array), each point recorded
    once, completed; the relaunch submits nothing."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    grid = (*GRID[:-2], "seed=range(0,6)", "trainer.max_steps=30")
    command = (*grid, "hydra/launcher=batched_slurm", "hydra.launcher.partition=debug", f"tracking.uri={uri}")
    first = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 batched groups in 2 pieces as 2 SLURM jobs" in first.stderr
    [array] = {job for job in _jobs(tmp_path) if "_" not in job}  # one array, two tasks
    assert _jobs(tmp_path) == {array, f"{array}_0", f"{array}_1"}
    records = _records(uri)
    assert len(records) == 24 and {r[:2] for r in records.values()} == {("FINISHED", "completed")}
    again = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert again.returncode == 0 and "nothing to launch" in again.stderr, again.stderr[-3000:]
    assert len(_jobs(tmp_path)) == 3


@pytest.mark.slow  # two launches on the real cluster, one piece at a time
def test_a_cancelled_piece_ends_its_runs_killed_and_the_same_command_trains_only_them(cluster, tmp_path):  # noqa: F811
    """One piece at a time: while piece 0 trains, piece 1 is pending; `scancel` of it ends its 4 runs KILLED in one
    line each, the other 4 complete. The same command again submits one job, for the 4 missing points only."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import wait_for
    from test_slurm import array_tasks, running, sweep_dirs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = (
        *GRID[:-1],
        "trainer.max_steps=400",
        "hydra/launcher=batched_slurm",
        "hydra.launcher.array_parallelism=1",
        f"tracking.uri={uri}",
    )
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.train", *command],
        cwd=tmp_path,
        env={**os.environ, **ENV, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tasks = wait_for(lambda: sweep_dirs(tmp_path) and array_tasks(sweep_dirs(tmp_path)[0]), proc=sweep)
        array = tasks[0].split("_")[0]
        wait_for(lambda: running(f"{array}_0"), proc=sweep, what=f"task {array}_0 running")
        subprocess.run(["scancel", f"{array}_1"], check=True)
        _, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.wait(timeout=60)
    assert "Traceback" not in stderr
    records = _records(uri)
    outcomes = sorted((r[0], r[1]) for r in records.values())
    assert outcomes == [("FINISHED", "completed")] * 4 + [("KILLED", "killed")] * 4, stderr[-3000:]
    said = (
        f"[sweep] killed: SLURM job {array}_1 "  # "ended CANCELLED", or "left the queue" when squeue lost it
    )
    lines = [line for line in stderr.splitlines() if line.startswith(said) and "without its result" in line]
    assert len(lines) == 4  # one per trial
    killed = {p for p, r in records.items() if r[1] == "killed"}

    again = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 of 8 grid points already done (not launched): launching the other 4" in again.stderr
    assert "1 batched group in 1 piece as 1 SLURM job (one array)" in again.stderr
    records = _records(uri)
    assert {r[1] for r in records.values()} == {"completed"} and len(records) == 8
    assert killed <= set(records)
