"""Real Hydra multiruns in a subprocess, typed the way users type them, against a real SQLite store."""

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import all_runs, history, mlflow_client, run_cli, wait_for

# 2 optimizers x 2 lrs x 2 devices: lr 1.5 diverges for SGD on x^2 (x -> -2x); cuda:7 is never there.
GRID = [
    "task=quadratic",
    "optimizer=sgd,adam",
    "optimizer.lr=0.1,1.5",
    "device=cpu,cuda:7",
    "trainer.max_steps=40",
    "tracking.experiment=grid",
    "hydra.callbacks.sweep.progress_every_s=600",  # the first job's progress line only, however slow the machine
]


def parents_and_children(store):
    runs = all_runs(store)
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def sweep_output(proc, sweep_dir) -> list[str]:
    """What the sweep printed: its lines on stderr, nothing on stdout (Hydra's console), the same lines in its log
    file <sweep dir>/sweep.log (stamped there; in the order each process wrote them)."""
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    logged = [line.split("] - ", 1)[1] for line in (sweep_dir / "sweep.log").read_text().splitlines()]
    assert sorted(logged) == sorted(lines)
    return lines


def the_sweep_dir(tmp_path):
    [found] = tmp_path.glob("multirun/*/*/multirun.yaml")
    return found.parent


def check_grid_output(store, lines, parent_id, launcher: str) -> None:
    """GRID's 8 jobs said in 6 lines and one line per failure (4)."""
    assert len(lines) == 6 + 4, "\n".join(lines)
    [start] = [ln for ln in lines if ln.startswith("[sweep] 8 jobs · ")]
    assert start.startswith(f"[sweep] 8 jobs · {launcher} · experiment 'grid' in {store}"), start
    assert len([ln for ln in lines if re.fullmatch(r"\[sweep\] [1-7]/8 jobs done · .*", ln)]) == 1
    failures = [ln for ln in lines if ln.startswith("[sweep] failed: device='cuda:7' is not allowed: ")]
    assert len(failures) == 4 and all(" · re-run it alone: python -m harness.train " in ln for ln in failures)
    assert lines[-4].startswith("[sweep] finished: 8/8 jobs done · 4 failed, 1 diverged · ")
    assert lines[-3] == (
        f"[sweep] parent run {parent_id}: 8 grid points: 3 completed, 1 diverged, 4 failed · the same sweep command "
        "runs the 4 without a result again (each failure above says how to re-run it alone) and skips the grid "
        "points already done"
    )
    # SGD at lr 0.1 on x^2 (f shrinks 0.64x a step) beats Adam's better lr; one seed each, no spread to state.
    assert lines[-2] == f"[sweep] {grid_answer(store)}"
    # Not the project's store (make ui serves that one): the commands name it.
    assert lines[-1].startswith(f"[sweep] see it: mlflow ui --backend-store-uri {store} · the report: ")
    assert lines[-1].endswith("harness-report --experiment grid")


def grid_answer(store) -> str:
    """GRID's headline sentence, from its runs: SGD at lr 0.1, runner-up Adam at its better lr."""
    _, children = parents_and_children(store)
    done = {
        (c.data.params["optimizer.name"], float(c.data.params["optimizer.lr"])): c.data.metrics[
            "final/val_loss"
        ]
        for c in children
        if c.data.tags["harness.status"] == "completed"
    }
    adam_lr = min((lr for name, lr in done if name == "adam"), key=lambda lr: done["adam", lr])
    return (
        f"On quadratic, sgd at lr 0.1 and batch size 1 reached the lowest final validation loss, "
        f"{done['sgd', 0.1]:.4g} over 1 seed(s); runner-up adam (lr {adam_lr:.3g}, batch size 1): "
        f"{done['adam', adam_lr]:.4g}."
    )


def check_grid_sweep(store, proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    parents, children = parents_and_children(store)
    [parent] = parents
    assert parent.info.status == "FINISHED"
    assert len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.experiment_id for c in children} == {parent.info.experiment_id}
    client = mlflow_client(store)
    assert client.get_experiment(parent.info.experiment_id).name == "grid"
    assert client.search_runs(["0"]) == []  # nothing landed in the Default experiment
    status = {
        (c.data.params["optimizer.name"], c.data.params["optimizer.lr"], c.data.params["device"]): c
        for c in children
    }
    for key, child in status.items():
        name, lr, device = key
        if device == "cuda:7":
            assert child.info.status == "FAILED" and child.data.tags["harness.status"] == "failed"
            assert "device='cuda:7'" in child.data.tags["harness.error"]
        elif name == "sgd" and lr == "1.5":
            assert child.info.status == "FINISHED" and child.data.tags["harness.status"] == "diverged"
            assert len(history(store, child.info.run_id, "train/loss")) == 8  # steps 0..7, see test_cli
        else:
            assert child.info.status == "FINISHED" and child.data.tags["harness.status"] == "completed", key
            assert [s for s, _ in history(store, child.info.run_id, "train/loss")] == list(range(40))
    tags = parent.data.tags
    assert (tags["harness.jobs.completed"], tags["harness.jobs.diverged"], tags["harness.jobs.failed"]) == (
        "3",
        "1",
        "4",
    )
    assert tags["harness.grid_size"] == "8"
    reruns = [ln for ln in proc.stderr.splitlines() if "re-run it alone: python -m harness.train" in ln]
    assert len(reruns) == 4 and all("device=cuda" in ln and "optimizer.lr=" in ln for ln in reruns)


def test_a_sweep_with_a_diverging_lr_and_a_missing_device_basic_launcher(store, tmp_path):
    proc = run_cli("-m", *GRID, cwd=tmp_path)
    check_grid_sweep(store, proc)
    [parent], _ = parents_and_children(store)
    lines = sweep_output(proc, the_sweep_dir(tmp_path))
    assert [ln.split(" · ")[0] for ln in lines[:2]] == [
        "[sweep] 8 jobs",
        "[sweep] 1/8 jobs done",
    ]  # in job order
    check_grid_output(store, lines, parent.info.run_id, "basic launcher")
    assert lines[0].endswith(f" · parent run {parent.info.run_id}")
    # Each job's own lines (its summary, why it was refused) are in its log file, not on the terminal.
    job_log = (the_sweep_dir(tmp_path) / "1" / "train.log").read_text()
    assert "job refused: device='cuda:7' is not allowed" in job_log


def test_the_same_sweep_with_the_joblib_launcher(store, tmp_path):
    # Fast on purpose: it is also the test that the command's exit (harness.entry.exit_now) stops loky's threads.
    proc = run_cli("-m", *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)
    check_grid_sweep(store, proc)
    [parent], _ = parents_and_children(store)
    lines = sweep_output(proc, the_sweep_dir(tmp_path))
    check_grid_output(store, lines, parent.info.run_id, "joblib launcher (n_jobs=2)")


def test_running_the_sweep_again_skips_what_is_done_and_reruns_failures(store, tmp_path):
    args = ["-m", "task=quadratic", "optimizer.lr=0.1", "device=cpu,cuda:7", "trainer.max_steps=10"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0
    assert "1 grid points already done" in second.stderr and "1 already done" in second.stderr
    parents, children = parents_and_children(store)
    assert len(parents) == 1
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FINISHED"]  # the cpu job ran once
    third = run_cli(*args, "hydra.callbacks.sweep.rerun=all", cwd=tmp_path)
    assert third.returncode == 0
    parents, children = parents_and_children(store)
    assert len(parents) == 2 and len(children) == 5  # rerun=all: a fresh parent with every job


def sgd_history(store, parent_id):
    [run] = [
        c
        for c in all_runs(store)
        if c.data.tags.get("mlflow.parentRunId") == parent_id and c.data.params["optimizer.name"] == "sgd"
    ]
    return [history(store, run.info.run_id, k) for k in ("train/loss", "val/loss", "grad_norm")]


JOBLIB_ONE_WORKER = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"]


@pytest.mark.parametrize(
    "launcher", [[], pytest.param(JOBLIB_ONE_WORKER, marks=pytest.mark.slow)], ids=["basic", "joblib"]
)
def test_jobs_sharing_a_process_do_not_leak_state(store, tmp_path, launcher):
    # The SGD job runs after an Adam job in the same process (basic launcher, or one reused joblib worker), and
    # alone; every RNG, thread setting and tracker state must be reset, so its curves are bit-identical.
    common = ["task=digits_mlp", "trainer.max_steps=40", "data.batch_size=16", "seed=3", *launcher]
    assert (
        run_cli("-m", "optimizer=adam,sgd", *common, "tracking.experiment=pair", cwd=tmp_path).returncode == 0
    )
    assert run_cli("-m", "optimizer=sgd", *common, "tracking.experiment=alone", cwd=tmp_path).returncode == 0
    parents, children = parents_and_children(store)
    by_experiment = {
        mlflow_client(store).get_experiment(p.info.experiment_id).name: p.info.run_id for p in parents
    }
    assert sgd_history(store, by_experiment["pair"]) == sgd_history(store, by_experiment["alone"])
    assert all(c.data.tags["harness.status"] == "completed" for c in children)


@pytest.mark.slow
def test_a_sweep_killed_half_way_and_started_again_completes_the_grid_once(store, tmp_path):
    args = ["-m", "task=digits_mlp", "optimizer=sgd,adam", "seed=0,1,2", "trainer.max_steps=500"]
    cmd = [sys.executable, "-m", "harness.train", *args]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )

    # Kill it (a hard crash: no clean-up) once at least three jobs have finished and the next one is training, as
    # observed in the store: whatever the machine's speed, the counts below follow from what was observed.
    def half_done_and_one_running():
        _, children = parents_and_children(store)
        finished = sum(c.info.status == "FINISHED" for c in children)
        return 3 <= finished < 6 and any(c.info.status == "RUNNING" for c in children)

    wait_for(half_done_and_one_running, what="3 finished jobs and the next one RUNNING", proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _, children = parents_and_children(store)
    finished = sum(c.info.status == "FINISHED" for c in children)
    assert 3 <= finished < 6 and len(children) == finished + 1  # one job was training when the sweep died

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    completed = [c for c in children if c.data.tags["harness.status"] == "completed"]
    assert len(completed) == 6
    assert len({c.data.tags["harness.config_hash"] for c in completed}) == 6
    assert len(children) == 7  # the six points once, plus the run the crash left behind
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)  # no run left RUNNING
    [stale] = [c for c in children if c.info.status == "KILLED"]
    assert "stale" in stale.data.tags["harness.error"]
    assert parents[0].data.tags["harness.jobs.completed"] == "6"


@pytest.mark.parametrize(
    "name,size,optimizers",
    [
        ("demo", 144, {"sgd", "momentum", "adam", "rmsprop"}),
        ("gd_vs_sgd", 54, set()),  # plain SGD throughout: set by the sweep's defaults, not swept
        (
            "optimizers_digits",
            270,
            {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam"},
        ),
    ],
)
def test_named_sweeps_expand_to_their_grids(name, size, optimizers):
    from conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    from harness.sweep import grid

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    jobs = grid.expand_grid(config)
    assert len(jobs) == size == grid.grid_size(config)
    assert {o.split("=")[1] for job in jobs for o in job if o.startswith("optimizer=")} == optimizers
    assert grid.experiment_name(config) == name
    if not optimizers:
        assert config.optimizer.name == "sgd"
    assert grid.sweep_name(config, size).startswith(f"sweep {name}: ")
    assert grid.sweep_name(config, size).endswith(f" ({size} points)")


def test_one_identity_rule_for_the_config_hash_and_the_sweep_key():
    # Where a run is recorded (tracking.*) and how it is scheduled (threads) are not what it computes.
    from conftest import CONF_DIR, compose_config
    from hydra import compose, initialize_config_dir

    from harness.config import config_hash
    from harness.sweep import grid

    base = config_hash(compose_config("optimizer.lr=0.1"))
    assert config_hash(compose_config("optimizer.lr=0.1", "tracking.run_name=x", "threads=1")) == base
    assert config_hash(compose_config("optimizer.lr=0.2")) != base

    def key(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return grid.sweep_key(compose("config", overrides=list(overrides), return_hydra_config=True), "e")

    assert key("optimizer.lr=0.1", "tracking.progress=false", "threads=2") == key("optimizer.lr=0.1")
    assert key("optimizer.lr=0.2") != key("optimizer.lr=0.1")


@pytest.mark.slow
def test_job_lines_true_prints_what_hydra_and_each_job_print_as_well(store, tmp_path):
    args = ["-m", "optimizer.lr=0.1,0.2", "trainer.max_steps=5", "hydra.callbacks.sweep.job_lines=true"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Hydra's console (stdout): the basic launcher's lines, then each job's own summary.
    said = [ln.split("] ", 2)[-1] for ln in proc.stdout.splitlines()]
    assert [ln for ln in said if not ln.startswith("- completed: 5 steps")] == [
        "Launching 2 jobs locally",
        "\t#0 : optimizer.lr=0.1 trainer.max_steps=5",
        "\t#1 : optimizer.lr=0.2 trainer.max_steps=5",
    ]
    assert len(said) == 5
    assert len(proc.stderr.splitlines()) == 6  # the sweep's own lines, as without it


@pytest.mark.slow
@pytest.mark.parametrize(
    "option,line",
    [
        ("progress_every_s=-1", "progress_every_s=-1 is not allowed: a number of seconds >= 0"),
        ("job_lines=maybe", "job_lines='maybe' is not allowed: true or false"),
    ],
)
def test_a_bad_sweep_option_is_one_line_and_creates_no_run(store, tmp_path, option, line):
    proc = run_cli("-m", "seed=0,1", "trainer.max_steps=3", f"hydra.callbacks.sweep.{option}", cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [f"error: hydra.callbacks.sweep.{line}"]
    assert parents_and_children(store) == ([], [])
