"""Runs whose process is gone are ended KILLED by the next run into the store, and only those (harness.tracking.owners).

Real owner processes holding real locks, killed for real (SIGKILL: nothing of theirs runs after it), against real
SQLite stores; a real tmpfs filled to the brim, so that even a run's end is refused.
"""

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from conftest import all_runs, history, run_cli, running_runs, wait_for
from test_failures import tmpfs

from harness.tracking import mlflow_store, owners, schema, stores
from harness.tracking.port import NewRun

OWNER = """
import sys
from pathlib import Path
from harness.tracking import owners, stores
from harness.tracking.port import NewRun
found = stores.open_store(sys.argv[1], adapter="sqlite")
experiment_id = found.ensure_experiment("owned")
for name in sys.argv[2:]:
    [info] = found.create_runs(experiment_id, [NewRun(name, {}, {})])
    owners.own(found, info.run_id, Path.cwd())
    print(info.run_id, flush=True)
sys.stdin.read()  # until the test kills it or closes stdin
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    mlflow_store.create_sqlite(f"sqlite:///{db}", db)
    return db


@pytest.fixture
def found(tmp_path, migrated):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    with closing(sqlite3.connect(migrated)) as source, closing(sqlite3.connect(db)) as copy:
        source.backup(copy)
    yield stores.open_store(f"sqlite:///{db}", adapter="sqlite")
    stores.close_all()


def owner(found, tmp_path, *names: str) -> tuple[subprocess.Popen, list[str]]:
    """A process that creates runs `names` and owns them until it is killed; its run ids once they are owned."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, found.uri, *names],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, [proc.stdout.readline().strip() for _ in names]


def statuses(found, *run_ids: str) -> list[tuple[str, str | None]]:
    runs = [found.run(run_id) for run_id in run_ids]
    return [(r.info.status, r.data.tags.get(schema.ERROR)) for r in runs]


def test_a_killed_owners_run_is_ended_killed_and_a_live_owners_is_left(found, tmp_path):
    dead, [gone] = owner(found, tmp_path, "gone")
    live, [alive] = owner(found, tmp_path, "alive")
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    try:
        assert owners.end_stale(found, tmp_path) == [gone]
        assert statuses(found, gone, alive) == [
            ("KILLED", f"stale: the process that ran it (pid {dead.pid} on {os.uname().nodename}) is gone"),
            ("RUNNING", None),  # its owner holds the lock
        ]
        assert owners.end_stale(found, tmp_path) == []  # the stale run's lock file went with it
        assert [p.name.partition(".")[0] for p in owners.run_locks(found, tmp_path).glob("*.lock")] == [alive]
    finally:
        live.stdin.close()
        live.wait(timeout=30)


def test_only_a_lock_of_this_kernel_proves_its_owner_gone(found, tmp_path):
    """A lock file written on another machine (or before a reboot) and a run without a lock file are left RUNNING;
    a lock file whose run had ended is removed, the run as it was; one of a run this store does not hold (another
    store's, beside it) is left."""
    experiment_id = found.ensure_experiment("owned")
    elsewhere, unlocked, ended = (
        found.create_runs(experiment_id, [NewRun(n, {}, {})])[0].run_id
        for n in ("elsewhere", "unlocked", "ended")
    )
    found.end_run(ended, schema.FINISHED)
    folder = owners.run_locks(found, tmp_path)
    folder.mkdir(parents=True)
    (folder / f"{elsewhere}.{'0' * 32}.lock").write_text("pid 1 on another-host")
    (folder / f"{ended}.{owners.KERNEL}.lock").write_text("pid 1 on this host")
    (folder / f"{'f' * 32}.{owners.KERNEL}.lock").write_text("pid 1 on this host")
    assert owners.end_stale(found, tmp_path) == []
    assert statuses(found, elsewhere, unlocked, ended) == [
        ("RUNNING", None),
        ("RUNNING", None),
        ("FINISHED", None),
    ]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{elsewhere}.{'0' * 32}.lock", f"{'f' * 32}.{owners.KERNEL}.lock"]
    )


def test_a_run_ended_by_its_owner_leaves_no_lock(found, tmp_path):
    proc, [run_id] = owner(found, tmp_path, "mine")
    proc.stdin.close()
    proc.wait(timeout=30)
    folder = owners.run_locks(found, tmp_path)
    assert [p.name for p in folder.iterdir()] == [f"{run_id}.{owners.KERNEL}.lock"]  # never ended: stays
    # In process: owned, ended, let go.
    [info] = found.create_runs(found.ensure_experiment("owned"), [NewRun("here", {}, {})])
    owners.own(found, info.run_id, tmp_path)
    found.end_run(info.run_id, schema.FINISHED)
    owners.ended(info.run_id, schema.FINISHED)
    assert (owners.latest().run_id, owners.latest().status) == (info.run_id, schema.FINISHED)
    assert [p.name for p in folder.iterdir()] == [f"{run_id}.{owners.KERNEL}.lock"]


def fill_to_the_brim(directory: Path) -> None:
    """Write until the filesystem refuses a single byte more."""
    for name, chunk in (("filler", 1 << 16), ("filler-bytes", 1)):
        with open(directory / name, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC


@pytest.mark.slow
def test_a_run_whose_end_the_full_disk_refuses_is_ended_killed_by_the_next_run(tmp_path):
    with tmpfs(tmp_path / "full", "6M") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        fast = ["trainer.max_steps=3", "tracking.progress=false", f"tracking.uri={uri}"]
        assert run_cli(*fast, cwd=tmp_path).returncode == 0  # the store exists
        args = [
            "task=digits_mlp",
            "trainer.max_steps=1000000",
            "tracking.progress=false",
            f"tracking.uri={uri}",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.train", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def training() -> list:
            runs = running_runs(uri)
            return [r.info.run_id for r in runs if history(uri, r.info.run_id, "train/loss")]

        [run_id] = wait_for(training, proc=proc, what="the run training")
        fill_to_the_brim(mount)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 1
        [line] = [ln for ln in (out + err).splitlines() if ln.strip()]
        assert line.startswith("error: no space left on the device of the tracking store")
        assert line.endswith(
            f"; run {run_id} could not be ended (the store took no more writes) and stays RUNNING: the next run "
            f"into this store ends it KILLED; run it again once the problem is fixed: python -m harness.train "
            + shlex.join(args)
        )
        assert {r.info.run_id: r.info.status for r in all_runs(uri)}[run_id] == "RUNNING"
        for filler in mount.glob("filler*"):
            filler.unlink()
        again = run_cli(*fast, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        assert (
            f"run {run_id} was left RUNNING by a process that is gone: ended KILLED"
            in again.stdout + again.stderr
        )
        runs = {r.info.run_id: r for r in all_runs(uri)}
        assert sorted(r.info.status for r in runs.values()) == ["FINISHED", "FINISHED", "KILLED"]
        assert runs[run_id].info.status == "KILLED"
        assert runs[run_id].data.tags[schema.STATUS] == "killed"
        assert runs[run_id].data.tags[schema.ERROR] == (
            f"stale: the process that ran it (pid {proc.pid} on {os.uname().nodename}) is gone"
        )
        assert list((mount / "locks" / "mlflow-runs").iterdir()) == []  # the stale run's lock went with it
