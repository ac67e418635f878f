"""Every failure a user can cause is one line and a non-zero exit, and leaves the store as it was.

Real processes, typed as users type them, against real SQLite stores; a real read-only and a real full filesystem
(tmpfs mounts) where the machine lets us mount them.
"""

import errno
import os
import shlex
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import all_runs, run_cli

from harness import failures
from harness.errors import ConfigError
from harness.imports import import_module, import_object
from harness.tracking import mlflow_store, stores

FAST = ["trainer.max_steps=3", "tracking.progress=false"]


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The process's whole output, which must be one `error:` line."""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "override,exit_code,says",
    [
        ("tracking.uri=nonsense://x", 2, "tracking.uri='nonsense://x' is not allowed"),
        ("tracking.uri=file:./mlruns", 2, "file store is in maintenance mode"),
        ("seed=-1", 2, "seed=-1 is not allowed: an integer in [0, 4294967295]"),
        ("seed=4294967296", 2, "seed=4294967296 is not allowed"),
    ],
)
def test_bad_uris_and_seeds_are_one_line_and_create_nothing(tmp_path, override, exit_code, says):
    proc = run_cli(*FAST, override, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == exit_code
    assert says in one_line(proc)
    assert not (tmp_path / "mlruns").exists() and not list(tmp_path.glob("*.db"))


def test_a_zero_byte_store_is_refused_and_left_as_it_is(tmp_path):
    db = tmp_path / "mlflow.db"
    db.touch()
    proc = run_cli(*FAST, f"tracking.uri=sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{db} is empty (0 bytes)" in one_line(proc) and "move" in one_line(proc)
    assert db.stat().st_size == 0  # never silently recreated


def test_a_corrupt_store_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)  # the header, then garbage
    before = db.read_bytes()
    proc = run_cli(*FAST, f"tracking.uri=sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 1 and "is corrupt" in one_line(proc)
    assert db.read_bytes() == before


def test_a_half_migrated_store_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stores.open_store(uri)  # a real store...
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:  # ...as an interrupted migration leaves it
        connection.execute("CREATE TABLE _alembic_tmp_runs (x INTEGER)")
    stores.close_all()
    mlflow_store._sqlite_client.cache_clear()  # the client checked the file when it was made
    for adapter in ("sqlite", "mlflow"):
        with pytest.raises(failures.StoreError, match="half-built by an interrupted creation"):
            stores.open_store(uri, adapter=adapter)


def test_a_sqlite_database_that_is_not_mlflows_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / "other.db") as connection:
        connection.execute("CREATE TABLE mine (x INTEGER)")
    for adapter in ("sqlite", "mlflow"):
        with pytest.raises(failures.StoreError, match="not an MLflow store"):
            stores.open_store(f"sqlite:///{tmp_path / 'other.db'}", adapter=adapter)


def test_failures_of_the_store_and_disk_are_described_through_their_causes():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/mlflow.db")
    assert failures.describe(full) == "no space left on device: /data/mlflow.db"
    try:
        try:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full")
        except RuntimeError as inner:
            raise ValueError("writing metrics failed") from inner
    except ValueError as outer:
        assert failures.describe(outer).startswith("no space left on the device of the tracking store")
        assert failures.stops_sweep(outer)
    assert failures.describe(ConfigError("seed", -1, "x")) == "seed=-1 is not allowed: x"
    assert not failures.stops_sweep(ConfigError("seed", -1, "x"))  # one job's config: the sweep goes on
    assert failures.describe(ZeroDivisionError("a bug")) is None  # bugs keep their traceback


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "os; rm", "a..b", "1abc", "", "a.b-c"])
def test_user_imports_are_checked_for_form_before_importing(name):
    with pytest.raises(ConfigError, match="task.module"):
        import_module("task.module", name)
    with pytest.raises(ConfigError, match="optimizer.target"):
        import_object("optimizer.target", name)


def test_user_imports_of_well_formed_names_work_and_failures_are_one_line():
    assert import_object("optimizer.target", "torch.optim:SGD").__name__ == "SGD"
    assert import_object("optimizer.target", "torch.optim.Adam").__name__ == "Adam"
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        import_module("task.module", "no_such_module_here")
    with pytest.raises(ConfigError, match="a name defined in module 'torch.optim'"):
        import_object("optimizer.target", "torch.optim.NoSuchOptimizer")


# --- Real read-only and full filesystems -----------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str):
    """A real tmpfs of `size` at `path` (root only); skips where the machine does not allow mounting."""
    path.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode
    ):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN) on this machine")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_store_on_a_read_only_filesystem_is_one_line_and_untouched(tmp_path):
    with tmpfs(tmp_path / "ro", "8M") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        assert run_cli(*FAST, f"tracking.uri={uri}", cwd=tmp_path).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = (mount / "mlflow.db").read_bytes()
        proc = run_cli(*FAST, f"tracking.uri={uri}", cwd=tmp_path)
        assert proc.returncode == 1
        assert f"{mount} is not writable (read-only filesystem or permissions)" in one_line(proc)
        assert (mount / "mlflow.db").read_bytes() == before
        subprocess.run(
            ["mount", "-o", "remount,rw", str(mount)], check=True
        )  # MLflow reads WAL stores read-write
        assert [r.info.status for r in all_runs(uri)] == ["FINISHED"]


def fill(directory: Path, leave_kib: int) -> None:
    """Fill the filesystem of `directory` until `leave_kib` KiB are left."""
    free_kib = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize // 1024
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, free_kib - leave_kib) * 1024)


@pytest.mark.slow
def test_a_full_disk_stops_a_sweep_at_its_first_job_in_one_line(tmp_path):
    with tmpfs(tmp_path / "full", "6M") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        assert run_cli(*FAST, f"tracking.uri={uri}", cwd=tmp_path).returncode == 0  # the store exists
        fill(mount, leave_kib=150)  # room for the parent run, not for a job's metrics
        proc = run_cli(
            "-m",
            "task=digits_mlp",
            "trainer.max_steps=300",
            "seed=0,1,2,3",
            *FAST[1:],
            f"tracking.uri={uri}",
            cwd=tmp_path,
        )
        assert proc.returncode == 1
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "Traceback" in ln]
        [line] = (
            errors  # the metrics (SQLite) or an artifact (a file) met the full disk first: one line either way
        )
        assert line.startswith("error: no space left on") and str(mount) in line
        assert "#1 :" not in proc.stderr  # the second job never started
        (mount / "filler").unlink()
        jobs = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
        # one job tried, not four burnt: its run was not created (one transaction, refused whole) or ended
        assert len(jobs) <= 1 and all(r.info.status != "RUNNING" for r in jobs)


@pytest.mark.slow
def test_a_full_disk_mid_run_ends_the_run_failed_and_says_how_to_run_it_again(tmp_path):
    with tmpfs(tmp_path / "full", "6M") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        assert run_cli(*FAST, f"tracking.uri={uri}", cwd=tmp_path).returncode == 0  # the store exists
        fill(mount, leave_kib=300)  # room for the run, not for its metrics
        args = ["task=digits_mlp", "trainer.max_steps=3000", *FAST[1:], f"tracking.uri={uri}"]
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 1
        line = one_line(proc)
        assert line.startswith("error: no space left on") and str(mount) in line
        assert line.endswith(
            f"; run it again once the problem is fixed: python -m harness.train {shlex.join(args)}"
        )
        # The run's end did not depend on the writes that failed (its last metrics, its traceback file).
        assert sorted(r.info.status for r in all_runs(uri)) == ["FAILED", "FINISHED"]


@pytest.mark.slow
def test_a_sweep_whose_disk_fills_mid_way_leaves_no_run_running_and_resumes(tmp_path):
    # Room for the whole grid once the filler is gone: 8 jobs' points, and the write-ahead log, which SQLite lets
    # grow to 1000 pages (4 MB) before it folds it into the database (6 MB held one job and a half).
    with tmpfs(tmp_path / "full", "16M") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        assert run_cli(*FAST, f"tracking.uri={uri}", cwd=tmp_path).returncode == 0
        fill(mount, leave_kib=700)  # a job or two of the eight fit
        args = [
            "-m",
            "task=digits_mlp",
            "trainer.max_steps=300",
            "seed=range(0,8)",
            *FAST[1:],
            f"tracking.uri={uri}",
        ]
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 1
        [line] = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() or "Traceback" in ln]
        assert line.startswith("error: no space left on")
        assert "run the same command again" in line  # the parent ended FAILED, or could not be ended
        assert f": python -m harness.train {shlex.join(args)}" in line
        jobs = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
        assert 0 < len(jobs) < 8 and all(r.info.status != "RUNNING" for r in jobs)
        (mount / "filler").unlink()
        again = run_cli(
            *args, cwd=tmp_path
        )  # as the line says: it ends what was left RUNNING, completes the grid
        assert again.returncode == 0, again.stderr[-2000:]
        runs = all_runs(uri)
        [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
        assert parent.info.status == "FINISHED" and parent.data.tags["harness.jobs.completed"] == "8"
        assert all(r.info.status != "RUNNING" for r in runs)


@pytest.mark.slow
def test_a_sweep_into_a_read_only_directory_is_one_line_and_creates_nothing(store, tmp_path):
    with tmpfs(tmp_path / "ro", "1M") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        proc = run_cli("-m", "seed=0,1", *FAST, f"tracking.uri=sqlite:///{mount / 'mlflow.db'}", cwd=tmp_path)
        assert proc.returncode == 1
        assert f"{mount} is not writable (read-only filesystem or permissions)" in one_line(proc)
        assert "choose another tracking.uri or make it writable" in one_line(proc)
        assert not (tmp_path / "multirun").exists()
        proc = run_cli("-m", "seed=0,1", *FAST, f"hydra.sweep.dir={mount / 'sweep'}", cwd=tmp_path)
        assert proc.returncode == 1
        assert f"cannot write the sweep's state into {mount / 'sweep'}" in one_line(proc)
        assert "choose a writable hydra.sweep.dir" in one_line(proc)
        assert all_runs(store) == []  # no parent run was created


@pytest.mark.slow
def test_dataloader_workers_inside_joblib_workers(store, tmp_path):
    # A joblib (loky) worker's default start method is 'loky', with which every DataLoader worker used to fail.
    proc = run_cli(
        "-m",
        "task=digits_mlp",
        "trainer.max_steps=20",
        "data.num_workers=2",
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "tracking.progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [r for r in all_runs(store) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["harness.status"] for r in jobs) == ["completed", "completed"]
    assert all(r.data.metrics["steps"] == 20 for r in jobs)


def test_the_slurm_launcher_without_slurm_is_one_line_and_leaves_the_sweep_as_it_was(store, tmp_path):
    """Checked before the sweep's parent run is continued (the launcher's check_options): the finished parent stays
    as it was. SLURM's commands are kept off PATH, so this runs on a machine with SLURM too."""
    grid = ["-m", "task=quadratic", "seed=0,1", "trainer.max_steps=3"]
    assert run_cli(*grid, cwd=tmp_path).returncode == 0
    [before] = [r for r in all_runs(store) if r.data.tags.get("harness.role") == "sweep"]
    no_slurm = tmp_path / "bin"
    no_slurm.mkdir()
    if shutil.which("git"):
        (no_slurm / "git").symlink_to(shutil.which("git"))  # the run's source commit
    proc = run_cli(*grid, "hydra/launcher=slurm", cwd=tmp_path, env={"PATH": str(no_slurm)})
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in proc.stderr
    assert line == (
        "error: hydra/launcher=slurm needs a SLURM cluster: sbatch, srun, squeue and scontrol are not on this "
        "machine (hydra/launcher=local_cluster runs the same jobs here)"
    )
    [after] = [r for r in all_runs(store) if r.data.tags.get("harness.role") == "sweep"]
    assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
    assert after.data.tags["harness.jobs.completed"] == "2"
