"""hydra/launcher=batched_slurm: the batched launcher's pieces as cluster jobs (one job per piece), recorded by the
launching process bitwise as the local batched launcher records them. Through submitit's local processes here; on the
real test cluster (scripts/slurm.sh) in the slow test."""

import re
import subprocess
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


def _start(command: tuple, cwd: Path) -> subprocess.Popen:
    """A sweep process the test acts on while it runs (its stderr piped; its threads dumped if it hangs)."""
    import os
    import sys

    env = {**os.environ, **ENV, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.train", *command], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True
    )


def _jobs(sweep_root: Path) -> set[str]:
    """The submitit job folders (a SLURM job id, or an array task's)."""
    found = sweep_root.glob("multirun/*/*/.submitit/*")
    return {p.name for p in found if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)}


@pytest.mark.slow  # two sweeps' processes, each piece a submitit process
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
        (
            "hydra.launcher.wait=false tracking.enabled=false",
            "hydra.launcher.wait=False is not allowed: only true with tracking.enabled=false",
        ),
    ],
)
def test_bad_cluster_options_are_one_line_before_any_run(tmp_path, bad, line):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_cli(
        *GRID, "hydra/launcher=batched_slurm", *bad.split(), f"tracking.uri={uri}", cwd=tmp_path, env=ENV
    )
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


@pytest.mark.slow  # real SLURM jobs, one of 60,000 steps
def test_pieces_of_other_sizes_go_out_as_their_own_jobs_each_with_its_time_limit(cluster, tmp_path):  # noqa: F811
    """Two batched groups, 30 and 60,000 steps: the short piece asks for the least time limit (10 minutes), the long
    one for its estimate (13), each in its own submission; every point completes once."""
    from hydra_plugins.harness_batched import packed

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    grid = (*GRID[:2], "optimizer=sgd", "optimizer.lr_scale=0.1,1", "seed=0,1", "trainer.max_steps=30,60000")
    command = (*grid, "hydra/launcher=batched_slurm", "hydra.launcher.partition=debug", f"tracking.uri={uri}")
    first = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (
        "2 batched groups in 2 pieces as 2 SLURM jobs (each sized to its piece, partition debug)"
        in first.stderr
    )
    scripts = sorted(tmp_path.glob("multirun/*/*/.submitit/*/*_submission.sh"))
    limits = sorted(re.search(r"#SBATCH --time=(\d+)", p.read_text()).group(1) for p in scripts)
    assert limits == ["10", "13"] and packed.LEAST_MIN == 10
    records = _records(uri)
    assert len(records) == 8 and {r[:2] for r in records.values()} == {("FINISHED", "completed")}
    assert sorted(len(r[3]) for r in records.values()) == [30] * 4 + [60000] * 4


@pytest.mark.slow  # two launches on the real cluster, one piece at a time
def test_cancelled_pieces_end_their_runs_killed_with_what_they_trained_and_the_same_command_trains_only_them(
    cluster,  # noqa: F811
    tmp_path,
):
    """One piece at a time, three pieces: `scancel` of the running one once it has trained some steps, and of a
    pending one. The running one's 4 runs end KILLED with the steps it trained (its node got SIGTERM), the pending
    one's 4 KILLED with none, one line per trial; the third piece's 4 complete. The same command again submits one
    job per missing piece, for the 8 missing points only."""
    import signal
    import subprocess

    from conftest import ended, wait_for
    from test_slurm import array_tasks, running, sweep_dirs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = (
        *GRID[:2],
        "optimizer=sgd,adam,rmsprop",
        *GRID[3:-1],
        "trainer.max_steps=20000",
        "hydra/launcher=batched_slurm",
        "hydra.launcher.array_parallelism=1",
        f"tracking.uri={uri}",
    )
    sweep = _start(command, tmp_path)
    try:
        tasks = wait_for(lambda: sweep_dirs(tmp_path) and array_tasks(sweep_dirs(tmp_path)[0]), proc=sweep)
        array = tasks[0].split("_")[0]
        wait_for(lambda: running(f"{array}_0") and _streams(tmp_path), proc=sweep, what=f"{array}_0 training")
        subprocess.run(["scancel", f"{array}_0", f"{array}_1"], check=True)
        _, stderr = ended(sweep, timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.wait(timeout=60)
    assert "Traceback" not in stderr
    records = _records(uri)
    outcomes = sorted((r[0], r[1]) for r in records.values())
    assert outcomes == [("FINISHED", "completed")] * 4 + [("KILLED", "killed")] * 8, stderr[-3000:]
    killed = {p: r for p, r in records.items() if r[1] == "killed"}
    trained = sorted(len(r[3]) for r in killed.values())
    assert trained[:4] == [0] * 4 and 0 < trained[4] == trained[7] < 20000
    for _, _, final, history in killed.values():
        assert [s for s, _ in history] == list(range(len(history))) and final == {}
    stopped = f"[sweep] killed: SLURM job {array}_0 was stopped by SIGTERM on its node"
    lines = [line for line in stderr.splitlines() if line.startswith(stopped)]
    assert len(lines) == 4 and all(f"its runs keep the {trained[4]} steps trained" in ln for ln in lines)
    # "ended CANCELLED", or "left the queue" when squeue lost it
    lines = [ln for ln in stderr.splitlines() if ln.startswith(f"[sweep] killed: SLURM job {array}_1 ")]
    assert len(lines) == 4 and all("without its result" in ln and "it trained no step" in ln for ln in lines)

    again = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 of 12 grid points already done (not launched): launching the other 8" in again.stderr
    assert "2 batched groups in 2 pieces as 2 SLURM jobs (each sized to its piece" in again.stderr
    records = _records(uri)
    assert {r[1] for r in records.values()} == {"completed"} and len(records) == 12
    assert set(killed) <= set(records) and all(len(r[3]) == 20000 for r in records.values())


def _streams(sweep_root: Path) -> list[Path]:
    """The pieces' column streams that hold at least one record (harness_batched.packed.Stream)."""
    return [p for p in sweep_root.glob("multirun/*/*/.submitit/streams/*.columns") if p.stat().st_size > 0]


@pytest.mark.slow  # a piece long enough to be signalled mid-way, then trained again
def test_a_piece_signalled_on_its_node_ends_its_runs_killed_with_the_steps_it_trained(tmp_path):
    """submitit's time-limit / preemption signal (SIGUSR2) to a piece's process once it has trained some steps: its 4
    runs end KILLED, each with the same contiguous train/loss curve the piece reached, one line per trial saying so;
    the same command trains the 4 points again, once."""
    import os
    import signal

    from conftest import ended, wait_for

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = (
        "-m",
        "task=linreg_10d",
        "optimizer=sgd",
        "optimizer.lr_scale=0.1,1",
        "seed=0,1",
        "trainer.max_steps=20000",
        "hydra/launcher=batched_slurm",
        "hydra.launcher.cluster=local",
        f"tracking.uri={uri}",
    )
    sweep = _start(command, tmp_path)
    try:
        wait_for(lambda: _streams(tmp_path), proc=sweep, what="the piece's first columns")
        # A local job's id is its controller's process id; the piece trains in the controller's child.
        [job] = _jobs(tmp_path)
        [task] = Path(f"/proc/{job}/task/{job}/children").read_text().split()
        os.kill(int(task), signal.SIGUSR2)  # what the controller sends before the job's time limit
        _, stderr = ended(sweep, timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    records = _records(uri)
    assert {r[:2] for r in records.values()} == {("KILLED", "killed")} and len(records) == 4
    [steps] = {len(r[3]) for r in records.values()}
    assert 0 < steps < 20000
    for _, _, final, history in records.values():
        assert [s for s, _ in history] == list(range(steps)) and final == {}
    said = (
        f"[sweep] killed: local job {job} was stopped by SIGUSR2 on its node (scancel, its time limit of 10 min "
        "(hydra.launcher.timeout_min) or"
    )
    lines = [ln for ln in stderr.splitlines() if ln.startswith(said)]
    assert len(lines) == 4, stderr[-3000:]
    assert all(f"its runs keep the {steps} steps trained" in ln for ln in lines)

    again = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "launching the other 4" in again.stderr or "4 jobs" in again.stderr
    records = _records(uri)
    assert {r[:2] for r in records.values()} == {("FINISHED", "completed")} and len(records) == 4
    assert all(len(r[3]) == 20000 for r in records.values())


def test_a_stream_gives_whole_records_in_order_and_waits_for_one_half_written(tmp_path):
    from hydra_plugins.harness_batched.packed import Stream

    node, here = Stream(tmp_path / "piece.columns"), Stream(tmp_path / "piece.columns")
    assert here.read_new() == []  # nothing logged yet: no file
    node.append((0, [0, 1], {"train/loss": [2.0, 1.5]}))
    node.append((1, [0, 1], {"train/loss": [3.0, 2.5]}))
    assert here.read_new() == [
        (0, [0, 1], {"train/loss": [2.0, 1.5]}),
        (1, [0, 1], {"train/loss": [3.0, 2.5]}),
    ]
    whole = (tmp_path / "piece.columns").read_bytes()
    node.append((0, [2], {"train/loss": [1.25]}))
    record = (tmp_path / "piece.columns").read_bytes()[len(whole) :]
    (tmp_path / "piece.columns").write_bytes(whole + record[:-3])  # the node is still writing it
    assert here.read_new() == []
    (tmp_path / "piece.columns").write_bytes(whole + record)
    assert here.read_new() == [(0, [2], {"train/loss": [1.25]})] and here.read_new() == []


@pytest.mark.slow  # three launches on the real cluster
def test_a_sweep_left_on_the_cluster_is_collected_by_the_same_command(cluster, tmp_path):  # noqa: F811
    """hydra.launcher.wait=false: the launch submits 2 pieces (one at a time) and returns with the parent RUNNING; the
    same command while they are out (submitted held) says so and launches nothing, and rerun=all is
    refused; once they are done it records them (each point
    once, completed), ends the parent, and a third run has nothing to launch."""
    from conftest import wait_for
    from test_slurm import array_tasks, sweep_dirs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = (
        *GRID[:-1],
        "trainer.max_steps=20000",
        "hydra/launcher=batched_slurm",
        "hydra.launcher.array_parallelism=1",
        "hydra.launcher.wait=false",
        # Submitted held (sbatch --hold) until the checks while they are out are done: no race with their training.
        "+hydra.launcher.additional_parameters.hold=true",
        f"tracking.uri={uri}",
    )
    first = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    [array] = {t.split("_")[0] for t in array_tasks(sweep_dirs(tmp_path)[0])}
    assert (
        f"left on the cluster (hydra.launcher.wait=false): 2 pieces as SLURM array {array} (2 tasks)"
        in first.stderr
    )
    client = mlflow_client(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "linreg_10d"]
    [parent] = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'sweep'")
    assert parent.info.status == "RUNNING" and parent.data.tags["harness.detached"].endswith(".pkl")
    assert parent.data.tags["harness.jobs.total"] == "8" and parent.data.tags["harness.jobs.completed"] == "0"
    assert {r[0] for r in _records(uri).values()} == {"RUNNING"}

    second = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (
        "[sweep] still on the cluster: " in second.stderr
        and "run the same command again later" in second.stderr
    )
    assert len(_jobs(tmp_path)) == 3  # nothing submitted: still the one array and its 2 tasks
    # Starting afresh now would leave the pieces training into runs nobody records: refused, nothing created.
    afresh = run_cli(*command, "hydra.callbacks.sweep.rerun=all", cwd=tmp_path, env=ENV, timeout=600)
    assert afresh.returncode == 2, afresh.stderr[-3000:]
    assert (
        f"hydra.callbacks.sweep.rerun='all' is not allowed: once the pieces parent run {parent.info.run_id} left on "
        "the cluster are in" in afresh.stderr
    ) and "Traceback" not in afresh.stderr
    assert len(client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'sweep'")) == 1
    subprocess.run(["scontrol", "release", array], check=True, capture_output=True)  # now they may train

    def queued() -> str:
        return subprocess.run(["squeue", "--noheader", "--array"], capture_output=True, text=True).stdout

    wait_for(lambda: array not in queued(), timeout=300, what=f"array {array} done")
    third = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "all 8 grid points already done: nothing to launch" in third.stderr
    records = _records(uri)
    assert len(records) == 8 and {r[:2] for r in records.values()} == {("FINISHED", "completed")}
    assert all([s for s, _ in r[3]] == list(range(20000)) for r in records.values())
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["harness.detached"] == ""
    assert parent.data.tags["harness.jobs.completed"] == "8" and len(_jobs(tmp_path)) == 3


def test_each_piece_asks_for_the_memory_and_time_its_own_work_needs():
    """Sized from the piece, not the largest: a 12-step piece gets the least time limit; one trial of a million
    steps of the 26,122-parameter digits MLP the estimate's minutes; a piece past a GB of trials one GB more; pieces
    asking the same go out as one array, the others as their own; `timeout_min` set is every piece's."""
    import dataclasses
    import math

    import torch
    from test_batched import make_spec

    from harness.batched import engine
    from hydra_plugins.harness_batched import packed

    small = [make_spec("digits_mlp", "adam", 1e-3, seed) for seed in range(4)]
    assert packed.piece_minutes(small, threads=1, gpus=0) == packed.LEAST_MIN == 10
    long = [make_spec("digits_mlp", "adam", 1e-3, 0, batch_size=128, total_steps=10**6, eval_every=1000)]
    validation = len(long[0].splits.val[0])
    flops = 6 * 26122 * 128 * 10**6 + 2 * 26122 * validation * 1001
    seconds = flops / 1e9 + 10**6 * 2e-3 + 10**6 * 1e-4
    assert packed.piece_minutes(long, threads=1, gpus=0) == math.ceil(3 * seconds / 60) + 5 == 1115
    assert packed.piece_minutes(long, threads=4, gpus=0) == math.ceil(3 * (flops / 4e9 + 2100) / 60) + 5
    assert packed.piece_resources(small, threads=2) == {"cpus": 2, "gpus": 0, "mem_gb": 2, "minutes": 10}
    many = small * (2**30 // (4 * engine.trial_bytes(small[0])) + 1)  # over a GB of trials
    assert packed.piece_resources(many, threads=1)["mem_gb"] == 3

    options = packed.ClusterOptions(cluster="local")
    sized = [packed._parameters(piece, options, 1) for piece in (small, long, small, many)]
    assert [p["timeout_min"] for p in sized] == [10, 1115, 10, packed.piece_minutes(many, 1, 0)]
    assert packed.arrays(sized) == [[0, 2], [1], [3]]
    fixed = packed.ClusterOptions(cluster="local", timeout_min=60, mem_gb=4)
    assert packed.arrays([packed._parameters(p, fixed, 1) for p in (small, long, small)]) == [[0, 1, 2]]

    # Trials on cuda (device=auto on a GPU node): one GPU for the piece, its time at the GPU's rate; the GPU path is
    # sized here without one (a piece on a real GPU: see BENCHMARKS.md).
    on_gpu = [dataclasses.replace(spec, device=torch.device("cuda")) for spec in long]
    assert packed.piece_resources(on_gpu, threads=1)["gpus"] == 1
    assert packed.piece_minutes(on_gpu, 1, 1) == math.ceil(3 * (flops / 1e11 + 2100) / 60) + 5 == 121
    assert packed.piece_resources(on_gpu, threads=1, gpus_per_piece=0)["gpus"] == 0
    gpu_job = packed._parameters(on_gpu, packed.ClusterOptions(cluster="slurm", partition="gpu"), 1)
    assert (gpu_job["gpus_per_node"], gpu_job["slurm_partition"], gpu_job["timeout_min"]) == (1, "gpu", 121)


@pytest.mark.slow  # real SLURM jobs
def test_a_race_on_the_cluster_sends_each_round_as_pieces(cluster, tmp_path):  # noqa: F811
    """hydra/sweeper=race with the packed launcher: round 1 (2 seeds of 4 configurations) goes out as one piece per
    batched group; lr_scale 0.01 loses within each optimizer and adam to sgd, so 8 of the 24 trials decide it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = (
        *GRID[:3],
        "optimizer.lr_scale=0.01,1",
        "seed=range(0,6)",
        "trainer.max_steps=200",
        "hydra/sweeper=race",
        "hydra/launcher=batched_slurm",
        "hydra.launcher.partition=debug",
        f"tracking.uri={uri}",
    )
    done = run_cli(*command, cwd=tmp_path, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 batched groups in 2 pieces as 2 SLURM jobs" in done.stderr
    assert "[race] linreg_10d: sgd (optimizer=sgd optimizer.lr_scale=1) beats adam" in done.stderr
    assert "[race] 8 of 24 trials trained" in done.stderr
    records = _records(uri)
    assert len(records) == 8 and {r[:2] for r in records.values()} == {("FINISHED", "completed")}
    assert len({job for job in _jobs(tmp_path) if "_" in job}) == 2
