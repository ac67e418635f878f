"""A SQLite store's life: created whole or not at all (real signals during MLflow's migrations), refused, never
migrated, at another schema revision, and checkpointed when a command ends (the database file alone holds every run).
"""

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT, all_runs, history, mlflow_client, run_cli, wait_for

from harness import signals
from harness.errors import StoreError
from harness.tracking import mlflow_store, sqlite_store, stores
from harness.tracking.port import Columns, NewRun, RunUpdate
from harness.tracking.sqlite_store import MLFLOW_SCHEMA_REVISION

FAST = ["trainer.max_steps=3", "tracking.progress=false"]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """A store made once by create_sqlite: the tests' stores are copies of it."""
    db = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    mlflow_store.create_sqlite(f"sqlite:///{db}", db)
    return db


def copy_store(migrated: Path, db: Path) -> str:
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(migrated)) as source, closing(sqlite3.connect(db)) as copy:
        source.backup(copy)
    return f"sqlite:///{db}"


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def sql(db: Path, *statements: str) -> None:
    with closing(sqlite3.connect(db)) as connection:
        for statement in statements:
            connection.execute(statement)
        connection.commit()


def older_revision() -> str:
    """The revision right below the installed MLflow's head (a real one its migrations know)."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    scripts = ScriptDirectory.from_config(_get_alembic_config(""))
    return scripts.get_revision(MLFLOW_SCHEMA_REVISION).down_revision


def one_run(found, steps: int = 5) -> str:
    experiment_id = found.ensure_experiment("lifecycle")
    [info] = found.create_runs(experiment_id, [NewRun("r", {}, {"seed": 0})])
    points = Columns(
        list(range(steps)), {"train/loss": [float(s) for s in range(steps)]}, [1000 + s for s in range(steps)]
    )
    found.write([RunUpdate(info.run_id, metrics=[points], status="FINISHED")])
    return info.run_id


@pytest.fixture
def fresh():
    """Every store this test opens is its own (no process-wide cache from an earlier test)."""
    stores.close_all()
    mlflow_store._sqlite_client.cache_clear()
    yield
    stores.close_all()
    mlflow_store._sqlite_client.cache_clear()


# --- Creation: whole or not at all --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sigterm_during_creation_is_raised_once_the_store_is_whole(tmp_path, fresh):
    """In process, a real SIGTERM while MLflow's migrations build the store, where a killed creator had left a
    build: the interrupt is raised once the store is in place, whole; nothing is left under the temporary name."""
    db = tmp_path / "s" / "mlflow.db"
    building = sqlite_store.building_path(db)
    building.parent.mkdir()
    building.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)  # what kill -9 midway leaves
    Path(f"{building}-journal").write_bytes(b"\x01" * 512)
    seen = []

    def interrupt_while_migrating():
        seen.append(
            wait_for(lambda: ("building" if migrating(building) else None) or ("db" if db.exists() else None))
        )
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, signals._handle)
    signals.received = None
    sender = threading.Thread(target=interrupt_while_migrating)
    try:
        sender.start()
        with pytest.raises(signals.Interrupted):
            mlflow_store.create_sqlite(f"sqlite:///{db}", db)
        sender.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signals.received = None
    assert seen == ["building"]  # the signal came during MLflow's migrations
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
    sqlite_store.check_file(db)
    assert sqlite_store.schema_revision(db) == MLFLOW_SCHEMA_REVISION
    run_id = one_run(stores.open_store(f"sqlite:///{db}"))
    assert mlflow_client(f"sqlite:///{db}").get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    "statements,said",
    [
        (["CREATE TABLE experiments (experiment_id INTEGER)"], "some of MLflow's tables, no schema revision"),
        (
            [
                "CREATE TABLE experiments (experiment_id INTEGER)",
                "CREATE TABLE alembic_version (version_num TEXT)",
            ],
            "some of MLflow's tables, no runs table",
        ),
    ],
    ids=["no-revision", "no-runs-table"],
)
def test_a_store_an_older_harness_left_half_built_is_refused_in_one_line(tmp_path, fresh, statements, said):
    db = tmp_path / "mlflow.db"
    sql(db, *statements)
    before = digest(db)
    for adapter in ("sqlite", "mlflow"):
        with pytest.raises(StoreError) as refused:
            stores.open_store(f"sqlite:///{db}", adapter=adapter)
        assert str(refused.value) == (
            f"{db} was left half-built by an interrupted creation ({said}): move {db} away to start a new store "
            "there, or point tracking.uri at the right file"
        )
    assert digest(db) == before


def test_a_store_left_midway_in_its_migrations_is_refused_as_half_built(tmp_path, migrated, fresh):
    db = tmp_path / "mlflow.db"
    uri = copy_store(migrated, db)
    sql(db, f"UPDATE alembic_version SET version_num = '{older_revision()}'", "DROP TABLE logged_models")
    before = digest(db)
    with pytest.raises(StoreError) as refused:
        stores.open_store(uri)
    assert str(refused.value) == (
        f"{db} was left half-built by an interrupted creation (schema revision {older_revision()}, tables missing, "
        f"no runs): move {db} away (it holds no runs) and run the command again"
    )
    assert digest(db) == before


# --- Another schema revision: refused, never migrated -------------------------------------------------------------


def store_at(revision: str, tmp_path: Path, migrated: Path) -> tuple[str, Path, str]:
    """A store holding one run, then set to `revision` (as another MLflow would leave it)."""
    db = tmp_path / "other" / "mlflow.db"
    uri = copy_store(migrated, db)
    run_id = one_run(stores.open_store(uri))
    stores.close_all()
    sql(db, f"UPDATE alembic_version SET version_num = '{revision}'")
    return uri, db, run_id


def expected_refusal(db: Path, revision: str) -> str:
    import mlflow

    if revision == "ffffffffffff":
        return (
            f"{db} is at MLflow schema revision ffffffffffff, which the installed MLflow {mlflow.__version__} does "
            f"not know (it expects {MLFLOW_SCHEMA_REVISION}): a newer MLflow wrote it, and MLflow cannot downgrade a "
            "store (nothing was written to it). Use that newer MLflow (pip install -U mlflow), or point tracking.uri "
            "at another store"
        )
    return (
        f"{db} is at MLflow schema revision {revision}, older than {MLFLOW_SCHEMA_REVISION}, which the installed "
        f"MLflow {mlflow.__version__} expects (nothing was written to it): back the file up, then upgrade it with "
        f"`mlflow db upgrade sqlite:///{db}` (this cannot be undone: older MLflow versions then refuse it), or use "
        "the MLflow version that wrote it"
    )


@pytest.mark.parametrize("revision", ["older", "ffffffffffff"], ids=["older", "unknown-newer"])
def test_a_store_at_another_revision_is_refused_by_both_adapters_and_left_as_it_is(
    tmp_path, migrated, fresh, revision
):
    revision = older_revision() if revision == "older" else revision
    uri, db, run_id = store_at(revision, tmp_path, migrated)
    before = digest(db)
    for adapter in (None, "mlflow"):
        for read_only in (False, True) if adapter else (False,):
            with pytest.raises(StoreError) as refused:
                stores.open_store(uri, adapter=adapter, read_only=read_only)
            assert str(refused.value) == expected_refusal(db, revision)
    assert stores.open_store(uri, adapter="sqlite") is None  # SQL writes only its own revision
    reader = stores.open_store(uri, read_only=True)  # the report reads it by SQL, writing nothing
    assert reader.run(run_id).info.status == "FINISHED"
    stores.close_all()
    assert digest(db) == before and sqlite_store.schema_revision(db) == revision


@pytest.mark.slow
@pytest.mark.parametrize("revision", ["older", "ffffffffffff"], ids=["older", "unknown-newer"])
def test_a_command_on_a_store_at_another_revision_says_so_in_one_line(tmp_path, migrated, fresh, revision):
    revision = older_revision() if revision == "older" else revision
    uri, db, _ = store_at(revision, tmp_path, migrated)
    before = digest(db)
    for args in (FAST, ["-m", *FAST, "seed=1,2"]):
        proc = run_cli(*args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
        assert proc.returncode == 1, proc.stderr[-2000:]
        [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert line.startswith(f"error: {expected_refusal(db, revision)}")  # (a hint on resuming may follow)
    assert digest(db) == before and sqlite_store.schema_revision(db) == revision


def test_the_private_mlflow_names_the_store_relies_on_are_there():
    """mlflow_store reads MLflow's migrations (head, known revisions, tables) and disposes the engine it made for a
    new store through names MLflow does not document: an MLflow upgrade that moves them fails here first."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    head, known, tables, _ = mlflow_store.installed_schema()
    assert head == MLFLOW_SCHEMA_REVISION and head in known and older_revision() in known
    assert {"runs", "metrics", "experiments", "logged_models"} <= tables
    assert isinstance(SqlAlchemyStore._engine_map, dict)


# --- Checkpointed when a command ends ------------------------------------------------------------------------------


def wal(db: Path) -> int:
    """Bytes in the store's write-ahead log (0: none, or empty)."""
    path = Path(f"{db}-wal")
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("adapter", ["sqlite", "mlflow"])
def test_closing_a_store_folds_its_log_into_the_file_while_another_process_holds_it(
    tmp_path, migrated, fresh, adapter
):
    db = tmp_path / "mlflow.db"
    uri = copy_store(migrated, db)
    sql(db, "PRAGMA journal_mode=WAL")
    reader = subprocess.Popen(  # another process connected to the store, idle (the UI, a second sweep)
        [sys.executable, "-c", f"import sqlite3, sys; c = sqlite3.connect({str(db)!r}); c.execute('SELECT 1 FROM runs')"
         ".fetchall(); print('connected', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline() == "connected\n"
        run_id = one_run(stores.open_store(uri, adapter=adapter), steps=200)
        assert wal(db) > 0
        stores.close_all()
        assert wal(db) == 0
        shutil.copy(db, tmp_path / "copy.db")  # the file alone, as a user backs it up
    finally:
        reader.communicate("")
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert mlflow_client(copy).get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in history(copy, run_id, "train/loss")] == list(range(200))


def test_the_backup_command_copies_what_a_process_still_holds_in_the_log(tmp_path, migrated, fresh):
    db = tmp_path / "mlflow.db"
    uri = copy_store(migrated, db)
    writer = stores.open_store(uri)  # open (not closed): its last points are in mlflow.db-wal
    run_id = one_run(writer, steps=50)
    assert wal(db) > 0
    backup = [sys.executable, str(ROOT / "scripts" / "backup_store.py"), uri, str(tmp_path / "copy.db")]
    done = subprocess.run(backup, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{db} copied to {tmp_path / 'copy.db'}\n", "")
    assert not Path(f"{tmp_path / 'copy.db'}-wal").exists()
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert [s for s, _ in history(copy, run_id, "train/loss")] == list(range(50))
    again = subprocess.run(backup, capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stderr) == (
        1,
        f"error: {tmp_path / 'copy.db'} exists already: give the backup a new file name\n",
    )


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["sqlite", "mlflow"])
def test_after_a_sweep_the_database_file_alone_holds_every_run_and_point(tmp_path, adapter):
    db = tmp_path / "s" / "mlflow.db"
    args = ["-m", "trainer.max_steps=7", "tracking.progress=false", "seed=0,1,2"]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "HARNESS_STORE_ADAPTER": adapter}
    proc = run_cli(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert wal(db) == 0
    shutil.copy(db, tmp_path / "copy.db")
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    runs = all_runs(copy)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    for child in children:
        assert [s for s, _ in history(copy, child.info.run_id, "train/loss")] == list(range(7))


# --- A real SIGTERM to a real first sweep, at each point of the store's creation -----------------------------------


def sweep(cwd: Path, uri: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.train", "-m", *FAST, "seed=0,1"],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def migrating(building: Path) -> bool:
    """MLflow's migrations have written part of the new store (its final size is near 1 MB)."""
    return building.exists() and building.stat().st_size > 200_000


POINTS = {
    "the-lock": lambda db: Path(f"{db}.lock").exists(),
    "the-build": lambda db: sqlite_store.building_path(db).exists(),
    "midway-in-migrations": lambda db: migrating(sqlite_store.building_path(db)),
    "the-store": lambda db: db.exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_a_sigterm_at_any_point_of_the_first_sweeps_store_creation_leaves_no_store_or_a_sound_one(
    tmp_path, point
):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    proc = sweep(tmp_path, uri)
    wait_for(lambda: POINTS[point](db), proc=proc, what=point, timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Exception ignored" not in err
    assert not sqlite_store.building_path(db).exists()
    if db.exists():
        sqlite_store.check_file(db)
        assert sqlite_store.schema_revision(db) == MLFLOW_SCHEMA_REVISION
    again = sweep(tmp_path, uri)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert sqlite_store.schema_revision(db) == MLFLOW_SCHEMA_REVISION
    runs = all_runs(uri)  # MLflow's own client reads it
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 3 and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
