"""The entry point as users type it: bad values refused in one line with no run created; divergence is an outcome."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import all_runs, history, run_cli

from harness.optim import OPTIMIZERS, SCHEDULERS
from harness.tasks import TASKS

BAD_VALUES = [
    # (override, text the one-line error must contain, exit code)
    ("optimizer.lr=-1", "optimizer.lr=-1.0", 2),
    ("optimizer.lr=abc", "optimizer.lr", 2),  # Hydra's typed-config error
    ("data.batch_size=0", "data.batch_size=0", 2),
    ("data.batch_size=half", "data.batch_size='half'", 2),
    ("trainer.epochs=0", "trainer.epochs=0", 2),
    ("trainer.eval_every=-5", "trainer.eval_every=-5", 2),
    ("device=cuda:7", "device='cuda:7'", 2),
    ("device=tpu", "device='tpu'", 2),
    ("optimizer=nonexistent", "optimizer/nonexistent", 2),
    ("task=nonexistent", "task/nonexistent", 2),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5", 2),
    ("optimizer.betas=[0.9,0.99]", "Key 'betas' not in", 2),  # sgd has no betas
    ("no_such_key=1", "Key 'no_such_key' not in", 2),
    ("scheduler.min_factor=0.1", "Key 'min_factor' not in", 2),  # the default schedule, none, has no keys
    ("scheduler=cosine scheduler.min_factor=2", "scheduler.min_factor=2.0", 2),
    ("optimizer=adam optimizer.betas=[0.8,1]", "optimizer.betas=[0.8, 1.0]", 2),
    (
        "optimizer=custom",
        "optimizer.target='???' is not allowed: a value: optimizer.target=... is required",
        2,
    ),
]


@pytest.mark.parametrize("override,message,code", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_refused_in_one_line_and_create_no_run(override, message, code, store, tmp_path):
    proc = run_cli("task=quadratic", *override.split(), cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]  # Hydra's errors too (harness.entry)
    assert line.startswith("error:") and message in line
    assert all_runs(store) == []


def test_a_diverging_lr_ends_as_a_diverged_run_with_exit_0(store, tmp_path):
    # SGD at lr 1.5 on x^2: x_{t+1} = -2 x_t, so f grows 4x per step and passes 1e4 x f(x_0) at step 7.
    proc = run_cli(
        "task=quadratic", "optimizer=sgd", "optimizer.lr=1.5", "trainer.max_steps=50", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    [run] = all_runs(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.status"] == "diverged"
    assert "step 7" in run.data.tags["harness.divergence"]
    losses = history(store, run.info.run_id, "train/loss")
    assert [s for s, _ in losses] == list(range(8))
    assert losses[-1][1] == pytest.approx(13 * 4**7)
    assert run.data.metrics["steps"] == 7


def test_the_default_store_is_mlruns_under_the_launch_directory(tmp_path):
    proc = run_cli("task=quadratic", "trainer.max_steps=3", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "mlruns" / "mlflow.db"
    [run] = all_runs(f"sqlite:///{db}")
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts").as_uri())
    assert run.data.params["optimizer.name"] == "sgd"


def test_a_users_own_task_module_and_a_failing_job(store, tmp_path):
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        )
    }
    proc = run_cli(
        "task.module=user_tasks", "task.name=user_failing", "trainer.max_steps=10", cwd=tmp_path, env=env
    )
    assert proc.returncode == 1
    assert "boom at step 4" in proc.stderr
    [run] = all_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["harness.status"] == "failed"
    assert run.data.tags["harness.error"] == "RuntimeError: boom at step 4"
    # The buffered points were flushed before the run ended.
    assert [s for s, _ in history(store, run.info.run_id, "train/loss")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_digits_mlp_with_adam_from_the_command_line(store, tmp_path):
    proc = run_cli("task=digits_mlp", "optimizer=adam", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [run] = all_runs(store)
    assert run.data.params["resolved.total_steps"] == "900"  # 20 epochs x ceil(1437 / 32)
    assert len(history(store, run.info.run_id, "train/loss")) == 900
    assert run.data.metrics["final/val_accuracy"] > 0.95


def test_help_lists_every_registered_option_and_no_schema_names(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = dict(
        ln.split(": ", 1) for ln in proc.stdout.splitlines() if ": " in ln and not ln.startswith(" ")
    )
    assert groups["optimizer"].split(", ") == sorted(OPTIMIZERS)
    assert groups["scheduler"].split(", ") == sorted(SCHEDULERS)
    # Other tests register users' tasks in this process; the CLI process has the built-in ones.
    builtin = sorted(name for name, cls in TASKS.items() if cls.__module__.startswith("harness."))
    assert groups["task"].split(", ") == builtin
    assert "base_" not in proc.stdout
    # The harness's own help around Hydra's lists: what the program does, how it is typed, where to read more.
    first = proc.stdout.splitlines()[0]
    assert (
        first.startswith("harness-train: train a model with an optimizer")
        and "powered by Hydra" not in proc.stdout
    )
    assert "harness-train -m task=linreg_10d" in proc.stdout and "python -m harness.optim" in proc.stdout


def test_a_plugin_that_does_not_import_is_refused_in_one_line(store, tmp_path):
    proc = run_cli("task=quadratic", cwd=tmp_path, env={"HARNESS_PLUGINS": "no_such_plugin_module"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: HARNESS_PLUGINS='no_such_plugin_module' is not allowed: importable modules" in proc.stderr
    assert all_runs(store) == []


def _database_files(root: Path) -> list[str]:
    """Every file under root that is (or goes with) a database: x.db, x.db-wal, x.db.lock, x.db?query..."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".db" in p.name)


@pytest.mark.slow
def test_a_relative_sqlite_uri_is_the_launch_directorys_file_for_runs_sweeps_and_the_report(tmp_path):
    launch = tmp_path / "launch"
    launch.mkdir()
    proc = run_cli("task=quadratic", "trainer.max_steps=3", "tracking.uri=sqlite:///rel.db", cwd=launch)
    assert proc.returncode == 0, proc.stderr
    assert len(all_runs(f"sqlite:///{launch / 'rel.db'}")) == 1
    relative = {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}  # MLflow's own documented form
    for launcher in ("basic", "batched"):
        sweep = run_cli(
            "-m", "task=quadratic", "trainer.max_steps=3", "seed=0,1", f"hydra/launcher={launcher}",
            f"tracking.experiment={launcher}", cwd=launch, env=relative,
        )  # fmt: skip
        assert sweep.returncode == 0, sweep.stderr
    runs = all_runs(f"sqlite:///{launch / 'mlflow.db'}")
    assert sorted(r.data.tags["harness.role"] for r in runs) == ["job"] * 4 + ["sweep"] * 2
    databases = {name.split(".db")[0] + ".db" for name in _database_files(tmp_path)}
    assert databases == {"launch/mlflow.db", "launch/rel.db"}  # nowhere else
    report = subprocess.run(
        [sys.executable, "-m", "harness.report.cli", "--experiment", "basic", "--no-log"],
        cwd=launch, env={**os.environ, **relative}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert Path(report.stdout.strip()).is_relative_to(launch / "reports" / "basic")


@pytest.mark.slow
def test_a_sqlite_uri_with_a_query_is_refused_in_one_line_and_creates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}?user=bob&password=hunter2"
    for args in (("task=quadratic",), ("-m", "task=quadratic", "seed=0,1")):
        proc = run_cli(*args, "trainer.max_steps=3", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
        assert proc.returncode == 2, proc.stderr
        [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert line.startswith("error: MLFLOW_TRACKING_URI=") and "password=***" in line
        assert "hunter2" not in proc.stdout + proc.stderr
    (tmp_path / "x.db").touch()  # the report, pointed at it, refuses the query before it opens the file
    report = subprocess.run(
        [sys.executable, "-m", "harness.report.cli", "--experiment", "quadratic", "--no-log"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 1 and report.stderr.startswith("error: MLFLOW_TRACKING_URI='sqlite:///")
    assert "hunter2" not in report.stdout + report.stderr
    (tmp_path / "x.db").unlink()
    assert _database_files(tmp_path) == [] and list(tmp_path.rglob("*.lock")) == []
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "hunter2" in p.read_text(errors="replace")]
    assert written == []


@pytest.mark.slow
def test_a_thread_count_beyond_what_torch_can_start_is_refused_not_a_segfault(store, tmp_path):
    proc = run_cli("task=quadratic", "threads=100000", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: threads=100000 is not allowed: an integer in [1, 1,024] (or null)"
    assert all_runs(store) == []
