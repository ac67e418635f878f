"""`hydra/launcher=slurm` on a real SLURM cluster: the one-node cluster of scripts/slurm.sh (munged, slurmctld and
slurmd on this machine), started here when it does not answer yet (.ci/run starts it before the slow tests).

Jobs are counted from the controller's own records: its log has one `_slurm_rpc_submit_batch_job` line per sbatch
(an array is one), its job completion log one line per job or array task that ended. The cluster has no accounting
(`sacct` fails), so the launcher follows the queue (hydra_plugins/harness_batched/slurm_queue.py).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, all_runs, run_cli, wait_for
from submitit.core.utils import UncompletedJobError

from hydra_plugins.harness_batched import slurm, slurm_queue

GRID = ["task=quadratic", "optimizer.lr=0.05,0.1,0.2,0.3", "trainer.max_steps=10"]
SLURM = "hydra/launcher=slurm"


def _answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60, check=False)
    return ping.returncode == 0 and " is UP" in ping.stdout


class Cluster:
    """The running cluster, as `scontrol show config` describes it."""

    def __init__(self) -> None:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True)
        self.config = dict(re.findall(r"^(\w+)\s+= (.*)$", shown.stdout, re.M))

    def submissions(self) -> int:
        """sbatch submissions the controller accepted so far (an array counts once)."""
        return Path(self.config["SlurmctldLogFile"]).read_text().count("_slurm_rpc_submit_batch_job")

    def ended(self) -> list[str]:
        """One line per job or array task that ended, in the job completion log."""
        path = Path(self.config["JobCompLoc"])
        return path.read_text().splitlines() if path.exists() else []


def slurm_script(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm.sh"), action], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="session")
def cluster():
    """The running cluster; started here (and stopped afterwards) when none answers."""
    started_here = False
    if not _answers():
        started = slurm_script("start")
        if started.returncode != 0:
            said = (started.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"no SLURM cluster here, and scripts/slurm.sh start could not make one: {said}")
        started_here = True
    found = Cluster()
    if "filetxt" not in found.config.get("JobCompType", ""):
        pytest.skip(
            "this SLURM cluster keeps no job completion log (scripts/slurm.sh's does): jobs cannot be counted"
        )
    yield found
    if started_here:
        slurm_script("stop")


@pytest.fixture
def on_the_default_partition(monkeypatch):
    monkeypatch.delenv("SLURM_PARTITION", raising=False)


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("multirun/*/*/multirun.yaml"))


def array_tasks(sweep_dir: Path) -> list[str]:
    """The job and array task ids submitit made folders for (an array's own holds its sbatch script): what this
    launch submitted."""
    folder = sweep_dir / ".submitit"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name))


def sweep_runs(store: str) -> tuple[object, list]:
    runs = all_runs(store)
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def counts(parent) -> list[str]:
    return [parent.data.tags[f"harness.jobs.{k}"] for k in ("total", "completed", "failed", "killed")]


def one_error_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return line


# --- the cluster itself ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # the cluster fixture may install and start SLURM
def test_starting_the_cluster_again_changes_nothing(cluster):
    before = subprocess.run(["bash", "scripts/slurm.sh", "status"], cwd=ROOT, capture_output=True, text=True)
    again = subprocess.run(["bash", "scripts/slurm.sh", "start"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"SLURM on {os.uname().nodename}: partition ")
    after = subprocess.run(["bash", "scripts/slurm.sh", "status"], cwd=ROOT, capture_output=True, text=True)
    assert after.stdout == before.stdout  # the same daemons (pids), the same partitions and nodes


# --- a sweep, a relaunch, a cancelled task ---------------------------------------------------------------------------


@pytest.mark.slow  # 4 array tasks, each a process importing torch and MLflow
def test_a_sweep_runs_each_point_once_as_one_array_and_its_relaunch_submits_nothing(
    cluster, store, tmp_path, on_the_default_partition
):
    submitted, ended = cluster.submissions(), len(cluster.ended())
    first = run_cli("-m", SLURM, *GRID, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert cluster.submissions() == submitted + 1  # one sbatch: an array of the 4 points
    [sweep_dir] = sweep_dirs(tmp_path)
    tasks = array_tasks(sweep_dir)
    array = tasks[0]
    assert tasks == [array, *(f"{array}_{i}" for i in range(4))]
    # slurmctld writes a task's line once it has seen the task end, which may be after the launcher read its result.
    wait_for(lambda: len(cluster.ended()) >= ended + 4, timeout=60, what="4 tasks in the job completion log")
    assert len([ln for ln in cluster.ended() if f" ArrayJobId={array} " in ln]) == 4
    assert len(cluster.ended()) == ended + 4
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and counts(parent) == ["4", "4", "0", "0"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.05", "0.1", "0.2", "0.3"]
    assert {c.info.status for c in children} == {"FINISHED"}
    # The store is an SQLite file, and every writer is on this one machine: allowed, with one line of warning.
    assert "[sweep] warning: the tracking store is an SQLite file" in first.stderr

    again = run_cli("-m", SLURM, *GRID, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[sweep] all 4 grid points already done: nothing to launch" in again.stderr.splitlines()
    assert cluster.submissions() == submitted + 1 and len(cluster.ended()) == ended + 4
    assert array_tasks(sweep_dirs(tmp_path)[-1]) == []
    parent_again, children_again = sweep_runs(store)
    assert parent_again.info.run_id == parent.info.run_id and len(children_again) == 4
    assert parent_again.info.status == "FINISHED" and counts(parent_again) == ["4", "4", "0", "0"]


@pytest.mark.slow  # two launches on the cluster, one task at a time
def test_a_task_cancelled_mid_way_then_the_same_command_submits_and_runs_only_the_missing_point(
    cluster, store, tmp_path, on_the_default_partition
):
    command = ["-m", SLURM, "hydra.launcher.array_parallelism=1", *GRID]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.train", *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # One task at a time: once task 1 runs, task 3 is certainly still pending.
        tasks = wait_for(lambda: sweep_dirs(tmp_path) and array_tasks(sweep_dirs(tmp_path)[0]), proc=sweep)
        array = tasks[0]
        wait_for(lambda: running(f"{array}_1"), proc=sweep, what=f"task {array}_1 running")
        subprocess.run(["scancel", f"{array}_3"], check=True)
        _, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.wait(timeout=60)
    assert sweep.returncode == 1, stderr[-3000:]
    parent, children = sweep_runs(store)
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in stderr
    assert line.startswith(
        f"error: SLURM job {array}_3 left the queue (cancelled before it started?) without its "
    )
    assert line.endswith(
        f"; sweep parent run {parent.info.run_id} ended FAILED with 3 of 4 grid points done; run the same command "
        "again once the problem is fixed (done points are skipped): python -m harness.train "
        + " ".join(command)
    )
    assert parent.info.status == "FAILED" and counts(parent) == ["3", "3", "0", "0"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.05", "0.1", "0.2"]

    submitted = cluster.submissions()
    again = run_cli(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[sweep] 3 of 4 grid points already done (not launched): launching the other 1" in again.stderr
    assert cluster.submissions() == submitted + 1
    [job] = array_tasks(sweep_dirs(tmp_path)[-1])  # one job, not an array
    assert "_" not in job
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and counts(parent) == ["4", "4", "0", "0"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.05", "0.1", "0.2", "0.3"]
    assert {c.info.status for c in children} == {"FINISHED"}


def running(task: str) -> bool:
    shown = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i %T"], capture_output=True, text=True
    )
    return f"{task} RUNNING" in shown.stdout.splitlines()


# --- what is refused before anything is submitted --------------------------------------------------------------------


@pytest.mark.slow  # a sweep to continue, then the refused launch: two processes importing torch
def test_a_partition_slurm_does_not_have_is_one_line_and_leaves_the_finished_parent_as_it_was(
    cluster, store, tmp_path
):
    grid = ["-m", "task=quadratic", "optimizer.lr=0.1,-1", "trainer.max_steps=10"]
    assert (
        run_cli(*grid, cwd=tmp_path).returncode == 0
    )  # lr=-1 is refused: a FINISHED parent, one point failed
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED" and counts(parent) == ["2", "1", "1", "0"]
    submitted = cluster.submissions()
    proc = run_cli(*grid, SLURM, "hydra.launcher.partition=nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        "error: hydra.launcher='partition=nope gpus_per_node=0 cpus_per_task=1 mem_gb=4 timeout_min=60 nodes=1' "
        "is not allowed: options SLURM accepts here; sbatch --test-only said: invalid partition specified: nope; "
        "allocation failure: Invalid partition name specified (sinfo lists the partitions and nodes)"
    )
    assert cluster.submissions() == submitted
    after, children_after = sweep_runs(store)
    assert after.info.status == "FINISHED" and after.info.end_time == parent.info.end_time
    assert counts(after) == counts(parent) and len(children_after) == len(children)


@pytest.mark.slow  # a process importing torch and MLflow
def test_an_sqlite_store_is_refused_where_jobs_could_run_on_another_node(cluster, store, tmp_path):
    # scripts/slurm.sh's `wide` partition holds this host and a second node (one that never joins).
    submitted = cluster.submissions()
    proc = run_cli("-m", SLURM, "hydra.launcher.partition=wide", *GRID, cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    here = os.uname().nodename.split(".")[0]
    assert line.startswith(
        f"error: tracking.uri='{store}' is not allowed: a tracking server with hydra/launcher=slurm on partition "
        f"wide (nodes {', '.join(sorted(['ghost', here]))}; this host: {here}): an SQLite file written from "
        "several machines over a network filesystem can lose or corrupt runs (its file locking does not hold "
        "there); start a tracking server with make server (scripts/server.sh) and add tracking=server; "
    )
    assert cluster.submissions() == submitted
    parent, children = sweep_runs(store)
    assert parent.info.status == "FAILED" and children == []


# --- the store every node can reach: the tracking server -------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    from test_server import Server

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (make setup installs it)")
    directory = Path(tempfile.mkdtemp(prefix="harness-server-"))
    directory.chmod(0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
    srv = Server(directory)
    started = srv.run("start")
    if started.returncode != 0:
        srv.run("stop")
        pytest.skip("scripts/server.sh could not start a tracking server: " + started.stderr.strip()[-300:])
    yield srv
    srv.run("stop")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow  # the tracking server takes 15-40 s to start
def test_a_cluster_sweep_records_through_the_tracking_server(cluster, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    grid = ["task=quadratic", "optimizer.lr=0.1,0.2", "trainer.max_steps=10", "tracking.experiment=on-slurm"]
    proc = run_cli("-m", SLURM, "tracking=server", *grid, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SQLite" not in proc.stderr  # a server: nothing to warn about
    parent, children = sweep_runs(server.uri)
    assert parent.info.status == "FINISHED" and counts(parent) == ["2", "2", "0", "0"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.1", "0.2"]
    assert all(c.data.metrics["steps"] == 10 for c in children)


# --- the pieces, without a cluster -----------------------------------------------------------------------------------


def test_the_queue_watcher_takes_a_job_the_queue_no_longer_lists_as_ended():
    watcher = slurm_queue.queue_watcher()
    for job in ("7", "7_0", "7_1", "7_2", "8"):
        watcher.register_job(job)
    info = watcher.read_info("7_0|RUNNING\n7_1|CANCELLED by 0\n")
    assert {job: info[job]["State"] for job in info} == {
        "7_0": "RUNNING",
        "7_1": "CANCELLED",
        "7_2": slurm_queue.GONE,  # a pending task that was cancelled, or one that ended MinJobAge ago
        "8": slurm_queue.GONE,
    }  # "7", the array, still has tasks in the queue
    watcher._info_dict.update(info)
    assert [watcher.is_done(j, mode="cache") for j in ("7_0", "7_1", "7_2")] == [False, True, True]


def test_what_a_failed_launch_says():
    text = (
        "Job 12_3 (task: 0) with path /s/.submitit/12_3/12_3_0_result.pkl\n"
        "has not produced any output (state: FAILED)\nError stream produced:\n----\n"
        "error: no space left on device: /s/mlflow.db\nsrun: error: vm: task 0: Exited with exit code 1\n"
    )
    assert slurm.failure_line(UncompletedJobError(text)) == (
        "SLURM job 12_3 ended FAILED without its result: error: no space left on device: /s/mlflow.db "
        "(its log: /s/.submitit/12_3/12_3_0_log.err)"
    )
    refused = subprocess.CalledProcessError(
        1, ["sbatch", "/s/x.sh"], stderr="sbatch: error: QOSMaxSubmitJobPerUser"
    )
    wrapped = RuntimeError("submission")
    wrapped.__cause__ = refused
    assert (
        slurm.failure_line(wrapped)
        == "sbatch refused the sweep's jobs: sbatch: error: QOSMaxSubmitJobPerUser"
    )
    assert slurm.failure_line(ValueError("a bug")) is None
