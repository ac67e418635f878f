"""`hydra/launcher=batched` and the harness sweeper: real multiruns in subprocesses against a real SQLite store.

The batched launcher must record what the basic launcher records (params, tags, metric names, steps, counts,
final values, config.yaml), resume and isolate failures the same way, and tag each run with its engine and K.
"""

import math
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import all_runs, history, mlflow_client, run_cli
from test_sweeps import (
    GRID,
    check_grid_output,
    check_grid_sweep,
    parents_and_children,
    sweep_output,
    the_sweep_dir,
)

from harness.sweep import answer
from harness.tracking import schema

BATCHED = "hydra/launcher=batched"
QUADRATIC = [
    "task=quadratic",
    "optimizer=sgd,adam",
    "optimizer.lr=0.05,1.5",  # sgd at 1.5 diverges: its record ([diverged] name) must be the same too
    "seed=0,1",
    "trainer.max_steps=12",
]
# Recorded differently by design: where the run sits, how it was launched, and the clock.
NOT_COMPARED_PARAMS = ("tracking.", "sweep.")
NOT_COMPARED_TAGS = (schema.PARENT_RUN_ID, schema.OVERRIDES, schema.ENGINE, schema.BATCH_TRIALS)
CLOCK_METRICS = (schema.WALL_S, schema.TOTAL_S, schema.TIME_TO_TARGET_S)


def children_of(store, experiment: str) -> dict[tuple, object]:
    client = mlflow_client(store)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = [
        r
        for r in all_runs(store)
        if r.info.experiment_id == experiment_id and schema.PARENT_RUN_ID in r.data.tags
    ]
    return {
        (r.data.params["optimizer.name"], r.data.params["optimizer.lr"], r.data.params["seed"]): r
        for r in runs
    }


def record(store, run) -> dict:
    """What a reader sees of a run, minus what differs by design."""
    client = mlflow_client(store)
    params = {k: v for k, v in run.data.params.items() if not k.startswith(NOT_COMPARED_PARAMS)}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(NOT_COMPARED_TAGS)}
    histories = {key: history(store, run.info.run_id, key) for key in run.data.metrics}
    config = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, schema.CONFIG_ARTIFACT)).read_text()
    )
    for key in ("tracking", "sweep"):
        config.pop(key, None)
    return {
        "status": (run.info.status, run.info.run_name, run.info.user_id),
        "params": params,
        "tags": tags,
        "histories": histories,
        "config": config,
    }


def assert_same_record(store, basic_run, batched_run) -> None:
    a, b = record(store, basic_run), record(store, batched_run)
    assert (a["status"], a["params"], a["tags"], a["config"]) == (
        b["status"],
        b["params"],
        b["tags"],
        b["config"],
    )
    assert sorted(a["histories"]) == sorted(b["histories"])
    for key, points in a["histories"].items():
        other = b["histories"][key]
        assert [s for s, _ in points] == [s for s, _ in other], key  # same steps, same count
        if key not in CLOCK_METRICS:
            for (_, x), (_, y) in zip(points, other):
                assert math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12), (key, x, y)


@pytest.mark.slow
def test_a_batched_sweep_records_what_the_basic_launcher_records(store, tmp_path):
    basic = run_cli("-m", *QUADRATIC, "tracking.experiment=basic", cwd=tmp_path)
    assert basic.returncode == 0, basic.stderr[-3000:]
    batched = run_cli(
        "-m", *QUADRATIC, "tracking.experiment=batched", BATCHED, "hydra.sweep.dir=b", cwd=tmp_path
    )
    assert batched.returncode == 0, batched.stderr[-3000:]
    assert "[sweep] finished: 8/8 jobs done" in batched.stderr
    one_by_one, together = children_of(store, "basic"), children_of(store, "batched")
    assert len(one_by_one) == len(together) == 8 and one_by_one.keys() == together.keys()
    for point, run in one_by_one.items():
        assert_same_record(store, run, together[point])
        diverged = run.data.tags[schema.STATUS] == schema.DIVERGED
        assert len(history(store, run.info.run_id, schema.TRAIN_LOSS)) < 12 if diverged else 12
        assert together[point].info.run_name.startswith("[diverged] ") == diverged
        assert run.data.tags[schema.ENGINE] == schema.ENGINE_SINGLE
    assert (
        sum(r.data.tags[schema.STATUS] == schema.DIVERGED for r in together.values()) == 2
    )  # sgd lr=1.5 x 2 seeds
    parents, _ = parents_and_children(store)
    assert sorted(p.data.tags[schema.job_count_tag("completed")] for p in parents) == ["6", "6"]
    for p in parents:
        assert p.data.tags[schema.USER] and p.data.tags[schema.SOURCE_NAME] == "harness.train"
    # No job directories (unless hydra.launcher.write_job_dirs=true): only the sweep's own files.
    assert [p.name for p in (tmp_path / "b").iterdir() if p.is_dir()] == []
    assert (tmp_path / "b" / "multirun.yaml").exists()


def test_a_mixed_grid_runs_lbfgs_alone_and_tags_every_run_with_its_engine(store, tmp_path):
    args = ["task=quadratic", "optimizer=lbfgs,adam", "seed=0,1,2", "trainer.max_steps=8", BATCHED]
    proc = run_cli("-m", *args, "hydra.callbacks.sweep.progress_every_s=600", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [parent], children = parents_and_children(store)
    assert len(children) == 6
    # Six lines for six jobs: no launch line per job, no job's own line.
    lines = sweep_output(proc, the_sweep_dir(tmp_path))
    assert len(lines) == 6, proc.stderr
    assert lines[0] == (
        "[sweep] 6 jobs · batched launcher: 1 batched group in 1 piece in this process, 3 jobs alone · "
        f"experiment 'quadratic' in {store}"
    )
    assert re.fullmatch(r"\[sweep\] [1-5]/6 jobs done · 0:\d\d elapsed · ~\d+:\d\d left", lines[1]), lines[1]
    assert lines[2].startswith("[sweep] finished: 6/6 jobs done · 0:")
    assert lines[3] == f"[sweep] parent run {parent.info.run_id}: 6 grid points: 6 completed"
    assert lines[4].startswith("[sweep] On quadratic, ") and " identical on all 3 seeds" in lines[4]
    assert lines[5].startswith(f"[sweep] see it: mlflow ui --backend-store-uri {store} · the report: ")
    engines = {
        (c.data.params["optimizer.name"], c.data.tags[schema.ENGINE], c.data.tags[schema.BATCH_TRIALS])
        for c in children
    }
    assert ("lbfgs", schema.ENGINE_SINGLE, "1") in engines
    assert {e for e in engines if e[0] == "adam"} == {("adam", schema.ENGINE_BATCHED, "3")}
    assert all(c.data.tags[schema.STATUS] == schema.COMPLETED for c in children)


def test_rmsprop_and_adagrad_jobs_train_batched_and_the_parent_states_the_reports_answer(store, tmp_path):
    """Each optimizer's 4 jobs (2 lrs x 2 seeds) form one group of K = 4; none runs alone. The parent's headline
    metric is the report's headline number, and its description the report's answer and ranked rows."""
    args = ["task=linreg_1d", "optimizer=rmsprop,adagrad", "optimizer.lr_scale=0.3,1", "seed=0,1"]
    proc = run_cli("-m", *args, "trainer.max_steps=6", BATCHED, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [parent], children = parents_and_children(store)
    engines = sorted(
        (c.data.params["optimizer.name"], c.data.tags[schema.ENGINE], c.data.tags[schema.BATCH_TRIALS])
        for c in children
    )
    assert (
        engines
        == [("adagrad", schema.ENGINE_BATCHED, "4")] * 4 + [("rmsprop", schema.ENGINE_BATCHED, "4")] * 4
    )
    assert all(c.data.tags[schema.STATUS] == schema.COMPLETED for c in children)
    check_the_parents_answer(store, parent, children, "linreg_1d")


def check_the_parents_answer(store, parent, children, task: str) -> None:
    from harness.report import load, tables, view
    from harness.report.figures import style

    data = load.load(store, task)
    [seen] = view.task_views(data, style.palette(data.runs["optimizer"]), "median-seeds")
    top = seen.best.iloc[0]
    metrics, tags = parent.data.metrics, parent.data.tags
    assert (
        metrics[schema.BEST_VAL_LOSS] == top["val_loss_mean"]
    )  # one number, one meaning: exactly the report's
    # ... which is the mean over the two seeds of the best configuration, not its best seed
    losses = {}
    for c in children:
        key = (c.data.params["optimizer.name"], float(c.data.params[schema.RESOLVED_LR]))
        losses.setdefault(key, []).append(c.data.metrics[schema.FINAL_VAL_LOSS])
    means = {key: math.fsum(v) / len(v) for key, v in losses.items()}
    best = min(means, key=means.get)
    assert (best, metrics[schema.BEST_VAL_LOSS]) == ((top["optimizer"], top["lr"]), means[best])
    single = min(c.data.metrics[schema.FINAL_VAL_LOSS] for c in children)
    assert metrics[schema.BEST_SINGLE_RUN_VAL_LOSS] == single < metrics[schema.BEST_VAL_LOSS]
    assert tags[schema.BEST_OPTIMIZER] == top["optimizer"]
    # The description: the report's own answer sentence, then a row per optimizer as the report's table has it.
    note = tags[schema.NOTE_CONTENT]
    assert note.startswith(f"**{tables.answer(seen)}**\n\n| # | optimizer | best lr | batch size |")
    shown = tables.display_ranked(seen)
    for row in shown[answer.COLUMNS].itertuples(index=False):  # the note's columns are the report's
        assert "| " + " | ".join(row) + " |" in note.splitlines()
    assert (
        len(note.splitlines()) == 2 + 2 + len(shown) + 2
    )  # answer, blank, header, rule, rows, blank, footer


@pytest.mark.slow
def test_a_failing_and_a_diverging_job_do_not_stop_the_others(store, tmp_path):
    proc = run_cli("-m", *GRID, BATCHED, "hydra.launcher.workers=2", cwd=tmp_path)
    check_grid_sweep(store, proc)
    [parent], _ = parents_and_children(store)
    lines = sweep_output(proc, the_sweep_dir(tmp_path))
    launcher = "batched launcher: 2 batched groups in 2 pieces on 2 worker processes, 4 jobs alone"
    check_grid_output(store, lines, parent.info.run_id, launcher)


@pytest.mark.slow
def test_running_it_again_skips_the_done_points_and_reruns_the_failures(store, tmp_path):
    args = [
        "-m",
        "task=quadratic",
        "optimizer.lr=0.1,0.2",
        "device=cpu,cuda:7",
        "trainer.max_steps=10",
        BATCHED,
    ]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 grid points already done" in second.stderr and "2 already done" in second.stderr
    parents, children = parents_and_children(store)
    assert len(parents) == 1
    assert sorted(c.info.status for c in children) == ["FAILED"] * 4 + ["FINISHED"] * 2


@pytest.mark.slow  # three sweep processes
def test_the_same_grid_typed_in_another_order_is_the_same_sweep(store, tmp_path):
    first = run_cli("-m", "optimizer=sgd,adam", "seed=0,1", "trainer.max_steps=5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli("-m", "seed=1,0", "trainer.max_steps=5", "optimizer=adam,sgd", BATCHED, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 grid points already done" in again.stderr
    parents, children = parents_and_children(store)
    assert len(parents) == 1 and len(children) == 4
    other = run_cli("-m", "seed=1,2", "trainer.max_steps=5", "optimizer=adam,sgd", cwd=tmp_path)
    assert other.returncode == 0
    assert len(parents_and_children(store)[0]) == 2  # another grid: another sweep


def test_job_directories_only_when_asked(store, tmp_path):
    args = ["-m", "seed=0,1", "trainer.max_steps=3", BATCHED, "hydra.launcher.write_job_dirs=true"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [d0, d1] = sorted(tmp_path.glob("multirun/*/*/[0-9]*"), key=lambda p: p.name)
    assert (d0.name, d1.name) == ("0", "1")
    assert yaml.safe_load((d1 / ".hydra" / "overrides.yaml").read_text()) == ["seed=1", "trainer.max_steps=3"]
    assert yaml.safe_load((d1 / ".hydra" / "config.yaml").read_text())["seed"] == 1
    assert yaml.safe_load((d1 / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"] == 1


def test_a_bad_value_in_the_grid_is_refused_before_any_job(store, tmp_path):
    proc = run_cli("-m", "optimizer.lr=0.1,abc", "trainer.max_steps=3", BATCHED, cwd=tmp_path)
    assert proc.returncode != 0
    assert "optimizer.lr" in proc.stderr
    assert parents_and_children(store)[1] == []


def exact_record(store, run) -> dict:
    """record() with the histories' values (clock metrics aside) as they are: for runs of the same engine."""
    seen = record(store, run)
    seen["histories"] = {k: v for k, v in seen["histories"].items() if k not in CLOCK_METRICS}
    return seen


def test_groups_train_side_by_side_in_worker_processes_exactly_as_here(store, tmp_path):
    """Two groups (sgd, adam) in two worker processes record bit for bit what one process records."""
    here = run_cli(
        "-m", *QUADRATIC, "tracking.experiment=here", BATCHED, "hydra.launcher.workers=1", cwd=tmp_path
    )
    assert here.returncode == 0, here.stderr[-3000:]
    assert "2 batched groups in 2 pieces in this process · " in here.stderr.splitlines()[0]
    apart = run_cli(
        "-m", *QUADRATIC, "tracking.experiment=apart", BATCHED, "hydra.launcher.workers=2", cwd=tmp_path
    )
    assert apart.returncode == 0, apart.stderr[-3000:]
    assert "2 batched groups in 2 pieces on 2 worker processes · " in apart.stderr.splitlines()[0]
    one, two = children_of(store, "here"), children_of(store, "apart")
    assert len(one) == len(two) == 8 and one.keys() == two.keys()
    for point, run in one.items():
        assert exact_record(store, run) == exact_record(store, two[point])
        assert two[point].data.tags[schema.BATCH_TRIALS] == "4"
        diverged = run.data.tags[schema.STATUS] == schema.DIVERGED
        assert len(history(store, run.info.run_id, schema.TRAIN_LOSS)) < 12 if diverged else 12


def test_a_worker_that_dies_fails_its_trials_and_the_sweep_goes_on(store, tmp_path):
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        )
    }
    args = ["task.module=user_tasks", "task.name=user_dies_in_worker", "optimizer=sgd,adam,lbfgs", "seed=0,1"]
    proc = run_cli(
        "-m", *args, "trainer.max_steps=5", BATCHED, "hydra.launcher.workers=2", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[sweep] finished: 6/6 jobs done · 4 failed" in proc.stderr
    parents, children = parents_and_children(store)
    outcome = sorted((c.data.params["optimizer.name"], c.info.status) for c in children)
    assert outcome == [("adam", "FAILED")] * 2 + [("lbfgs", "FINISHED")] * 2 + [("sgd", "FAILED")] * 2
    for child in children:
        if child.info.status == "FAILED":
            assert child.data.tags[schema.ERROR] == "worker process died (exit code 3)"
    [parent] = parents
    assert parent.info.status == "FINISHED" and parent.data.tags[schema.job_count_tag("failed")] == "4"


@pytest.mark.parametrize(
    "override,line",
    [
        ("workers=0", "hydra.launcher.workers=0 is not allowed: an integer >= 1, or null"),
        ("memory_budget_mb=-5", "hydra.launcher.memory_budget_mb=-5.0 is not allowed: a number of MiB > 0"),
    ],
)
def test_a_bad_launcher_option_is_one_line_naming_it_and_creates_no_run(store, tmp_path, override, line):
    proc = run_cli(
        "-m", "seed=0,1", "trainer.max_steps=3", BATCHED, f"hydra.launcher.{override}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [f"error: {line}"]
    assert parents_and_children(store) == ([], [])


def test_max_trials_caps_a_batched_program(store, tmp_path):
    args = ["task=quadratic", "optimizer=adam", "seed=range(0,5)", "trainer.max_steps=4", BATCHED]
    proc = run_cli("-m", *args, "hydra.launcher.max_trials=2", "hydra.launcher.workers=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, children = parents_and_children(store)
    assert sorted(c.data.tags[schema.BATCH_TRIALS] for c in children) == ["1", "2", "2", "2", "2"]
    assert sorted(c.data.tags[schema.ENGINE] for c in children) == [schema.ENGINE_BATCHED] * 5


# Runs harness.train as `python -m harness.train` does, then writes which of MLflow, SQLAlchemy and pandas the
# launching process had imported by its end (harness.entry ends the process with os._exit after the atexit handlers).
_MODULES_AT_EXIT = """
import atexit, os, runpy, sys
pid = os.getpid()
def _write():
    if os.getpid() == pid:
        with open(os.environ["MODULES_AT_EXIT"], "w") as f:
            f.write(" ".join(m for m in ("mlflow", "sqlalchemy", "pandas") if m in sys.modules))
atexit.register(_write)
sys.argv = ["harness.train", *sys.argv[1:]]
runpy.run_module("harness.train", run_name="__main__", alter_sys=True)
"""


def test_a_fresh_batched_sweep_records_its_parent_as_mlflow_does_without_importing_it(store, tmp_path):
    """On an existing store, a new batched sweep's launcher writes its parent run, the groups' runs and the parent's
    end with sqlite3 alone (MLflow's import is 2 s of CPU), and the parent reads as the MLflow path writes it."""
    import subprocess
    import sys

    grid = ["task=quadratic", "optimizer=sgd,adam", "optimizer.lr=0.05,0.2", "trainer.max_steps=6"]
    basic = run_cli(
        "-m", *grid, "tracking.experiment=viamlflow", cwd=tmp_path
    )  # creates the store, through MLflow
    assert basic.returncode == 0, basic.stderr[-3000:]
    modules = tmp_path / "modules.txt"
    batched = subprocess.run(
        [
            sys.executable,
            "-c",
            _MODULES_AT_EXIT,
            "-m",
            *grid,
            "tracking.experiment=direct",
            BATCHED,
            "hydra.sweep.dir=b",
        ],
        cwd=tmp_path,
        env={**os.environ, "MODULES_AT_EXIT": str(modules)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert batched.returncode == 0, batched.stderr[-3000:]
    assert modules.read_text() == ""  # no MLflow, SQLAlchemy or pandas in the launcher
    client = mlflow_client(store)
    parents = {}
    for experiment in ("viamlflow", "direct"):
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        [parent] = [
            r
            for r in all_runs(store)
            if r.info.experiment_id == experiment_id and r.data.tags.get(schema.ROLE) == schema.ROLE_SWEEP
        ]
        grid_json = Path(client.download_artifacts(parent.info.run_id, schema.GRID_ARTIFACT)).read_text()
        info = parent.info
        parents[experiment] = {
            "info": (
                info.status,
                info.run_name,
                info.user_id,
                info.lifecycle_stage,
                info.end_time is not None,
            ),
            "artifact_uri": info.artifact_uri.replace(info.run_id, "<id>").replace(
                experiment, "<experiment>"
            ),
            "params": parent.data.params,
            "metrics": parent.data.metrics,
            "tags": {
                k: v.replace(experiment, "<experiment>")
                for k, v in parent.data.tags.items()
                if k not in (schema.SWEEP_KEY, schema.LAUNCHER, schema.BEST_RUN_ID)
            },
            "grid": grid_json.replace(experiment, "<experiment>"),
        }
    assert parents["viamlflow"] == parents["direct"]
    assert (
        parents["direct"]["metrics"]["jobs/completed"] == 4.0 and parents["direct"]["info"][0] == "FINISHED"
    )
