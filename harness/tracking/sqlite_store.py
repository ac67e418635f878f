"""The SQL adapter of the tracking port: MLflow's tables on a SQLite file, written and read with sqlite3.

The only module in the project that holds SQL against MLflow's tables. It writes the rows MLflow's SqlAlchemyStore
writes (runs, tags, params, metrics, latest_metrics, dataset inputs, experiments), in one transaction per call, and
without importing MLflow. It is used only on a store at `MLFLOW_SCHEMA_REVISION` whose tables have exactly the
columns written (`open_file` checks both, here and nowhere else); a store it cannot write goes through
harness.tracking.mlflow_store. Opened read-only (the report), it reads any MLflow 3 store that has the columns read.
tests/test_port.py holds it to what MLflow stores, table by table.

Also the file's life beside the adapters: what a sound store is (`check_file`, and `check_revision` against the
installed MLflow's schema: a store at another revision is refused, never migrated), how a new one is put in place
whole (`install_new`: built under a temporary name, renamed once complete), and `checkpoint`, which folds the
write-ahead log back into the database file when a command ends, so that the file alone holds every run.
"""

import contextlib
import itertools
import math
import os
import shutil
import sqlite3
import threading
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import StoreError, located
from harness.tracking import locks, schema, store
from harness.tracking.port import (
    HISTORY_COLUMNS,
    Experiment,
    NewRun,
    RunData,
    RunInfo,
    RunUpdate,
    Store,
    StoredRun,
    now_ms,
)

if TYPE_CHECKING:
    import pandas as pd

# The MLflow schema (alembic revision) these tables are written for: a store at another revision goes through MLflow,
# which upgrades it. tests/test_port.py checks it is the head of the installed MLflow's migrations.
MLFLOW_SCHEMA_REVISION = "dc11669786a5"
METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
_KEY_VALUE_RUN = {"key", "value", "run_uuid"}
WRITTEN = {  # every table written, with exactly these columns
    "runs": {
        "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
        "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id",
    },
    "tags": _KEY_VALUE_RUN,
    "params": _KEY_VALUE_RUN,
    "metrics": set(METRIC_COLUMNS),
    "latest_metrics": set(METRIC_COLUMNS),
    "experiments": {
        "experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time",
        "workspace",
    },
    "datasets": {
        "dataset_uuid", "experiment_id", "name", "digest", "dataset_source_type", "dataset_source",
        "dataset_schema", "dataset_profile",
    },
    "inputs": {"input_uuid", "source_type", "source_id", "destination_type", "destination_id", "step"},
    "input_tags": {"input_uuid", "name", "value"},
    "experiment_tags": {"key", "value", "experiment_id"},
}  # fmt: skip
READ = {  # the tables and columns read (a read-only store needs these, at any MLflow 3 revision)
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {
        "run_uuid",
        "name",
        "status",
        "start_time",
        "end_time",
        "experiment_id",
        "lifecycle_stage",
        "user_id",
        "artifact_uri",
    },
    "tags": _KEY_VALUE_RUN,
    "params": _KEY_VALUE_RUN,
    "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
    "metrics": {"key", "value", "step", "is_nan", "run_uuid"},
}
# The first tables MLflow's migrations create (an interrupted creation leaves some of them and nothing else).
MLFLOW_TABLE_NAMES = {*WRITTEN, "alembic_version"}
DATABASE_ERRORS = (
    sqlite3.Error,
)  # what a damaged or unreachable SQLite file raises (one-line errors catch them)
HISTORY_INDEX = "index_metrics_run_uuid_key_step"  # MLflow's index on metrics (run_uuid, key, step)
RUNS_PER_QUERY = 500  # bound parameters per statement stay under SQLite's limit (999 before 3.32)
BUSY_TIMEOUT_S = (
    20  # a writer waits this long for another's transaction (MLflow's own SQLite engine waits as long)
)

_INSERT_RUN = (
    "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, "
    "end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
    "VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, NULL, '', 'active', ?, ?)"
)
_NAMES, _MARKS = ", ".join(METRIC_COLUMNS), ", ".join("?" * len(METRIC_COLUMNS))
# OR IGNORE: a point already stored (same key, step, timestamp, value) is skipped, as log_batch skips it.
_INSERT_METRICS = f"INSERT OR IGNORE INTO metrics ({_NAMES}) VALUES ({_MARKS})"
# MLflow's rule (SqlAlchemyStore._update_latest_metrics_if_necessary): a point replaces the latest one when
# (step, timestamp, value) is strictly greater.
_UPSERT_LATEST = (
    f"INSERT INTO latest_metrics ({_NAMES}) VALUES ({_MARKS}) ON CONFLICT (key, run_uuid) DO UPDATE SET "
    "value = excluded.value, timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) "
    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)
_RUN_COLUMNS = "r.run_uuid, r.name, r.status, r.start_time, r.end_time, r.experiment_id, r.artifact_uri"


# --- Opening ---------------------------------------------------------------------------------------------------------


def open_file(uri: str, db: Path, create: bool = True, read_only: bool = False) -> "SqliteStore | None":
    """The SQL adapter on the SQLite file `db`, or None where it cannot be used: no file yet (MLflow creates stores),
    or a schema it was not written for (MLflow upgrades or refuses it).

    Raises:
        StoreError: the file is empty, not SQLite, corrupt, half-built, not an MLflow store, or (for writing) in a
            directory that cannot be written.
    """
    db = db.resolve() if db.exists() else db
    if not db.is_file():
        if read_only or not create:
            raise StoreError(f"{db} does not exist: no MLflow store there (nothing created)", str(db))
        return None
    if read_only:  # never waits on (or locks) a store a sweep may be creating: a half-built one is refused
        return _checked(uri, db, read_only)
    check_writable(db)  # first: on a read-only filesystem even reading a WAL store fails, less clearly
    with locks.store_lock(
        db
    ):  # waits while another process creates or upgrades the store (MLflow's migrations)
        return _checked(uri, db, read_only)


def _checked(uri: str, db: Path, read_only: bool) -> "SqliteStore | None":
    check_file(db, read_only)
    connection = _connect(db, read_only)
    mark_connected(db)
    try:
        if not _schema_fits(connection, read_only):
            connection.close()
            return None
    except sqlite3.Error:
        connection.close()
        return None
    return SqliteStore(uri, db, connection, read_only)


def _connect(db: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:  # never writes to (or migrates, or locks) a store a sweep may be writing to
        return sqlite3.connect(
            f"{db.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    return sqlite3.connect(str(db), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def _schema_fits(connection: sqlite3.Connection, read_only: bool) -> bool:
    """Writing: the revision is MLFLOW_SCHEMA_REVISION and every table written has exactly the columns written.
    Reading: every table read has (at least) the columns read."""
    if not read_only:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        if revision != [(MLFLOW_SCHEMA_REVISION,)]:
            return False
    needed = READ if read_only else WRITTEN
    for table, columns in needed.items():
        found = {row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')}
        if not columns <= found if read_only else found != columns:
            return False
    return True


def check_file(db: Path, read_only: bool = False) -> None:
    """Refuse a database MLflow would misuse: zero bytes (it would recreate it), not SQLite, not MLflow's, or
    left half-migrated by a creation or upgrade that was interrupted.

    Raises:
        StoreError: naming the file and what to do.
    """
    move_away = (
        "pass the right --tracking-uri (or MLFLOW_TRACKING_URI)"
        if read_only
        else f"move {db} away to start a new store there, or point tracking.uri at the right file"
    )
    if not db.exists():
        return
    if db.stat().st_size == 0:
        raise StoreError(f"{db} is empty (0 bytes), not an MLflow store: {move_away}", str(db))
    if not connected(db):
        with open(db, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise StoreError(f"{db} is not an SQLite database (corrupt?): {move_away}", str(db))
    try:
        with contextlib.closing(
            sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=20)
        ) as connection:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
    except sqlite3.DatabaseError as exc:
        if any(word in str(exc) for word in ("not a database", "malformed")):
            raise StoreError(f"{db} is corrupt ({exc}): {move_away}", str(db)) from exc
        raise StoreError(f"{db} cannot be opened ({exc}){_space_left(db)}", str(db)) from exc
    if any(name.startswith("_alembic_tmp_") for name in tables):
        raise StoreError(
            f"{db} was left half-built by an interrupted creation or upgrade (tables _alembic_tmp_*): {move_away}",
            str(db),
        )
    if tables and tables <= MLFLOW_TABLE_NAMES and not {"alembic_version", "runs", "experiments"} <= tables:
        # What an older harness left when MLflow's migrations were interrupted in place (this one builds a new
        # store under another name): some of MLflow's tables, no runs table or no revision.
        raise StoreError(
            f"{db} was left half-built by an interrupted creation (some of MLflow's tables, no "
            f"{'runs table' if 'alembic_version' in tables else 'schema revision'}): {move_away}",
            str(db),
        )
    if tables and "alembic_version" not in tables:
        raise StoreError(f"{db} is an SQLite database but not an MLflow store: {move_away}", str(db))
    if tables and not {"runs", "experiments"} <= tables:
        raise StoreError(f"{db} holds no MLflow store (no runs table): {move_away}", str(db))


# Files this process holds SQLite connections to (by inode). SQLite's locks are POSIX record locks, which the kernel
# drops for the whole process when ANY descriptor of the file is closed: reading the header with open() while a
# connection is open would release that connection's locks (another process could then delete a WAL still in use).
_CONNECTED: set[tuple[int, int]] = set()


def _inode(db: Path) -> tuple[int, int]:
    found = db.stat()
    return found.st_dev, found.st_ino


def mark_connected(db: Path) -> None:
    _CONNECTED.add(_inode(db))


def connected(db: Path) -> bool:
    return _inode(db) in _CONNECTED


def check_writable(db: Path) -> None:
    """An SQLite store writes its database and its journal files beside it."""
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise StoreError(
            f"{db.parent} is not writable (read-only filesystem or permissions): an SQLite store needs to write "
            "its database and journal files there; choose another tracking.uri or make it writable",
            str(db),
        )


def write_ahead_log(db: Path) -> None:
    """Put the SQLite file in WAL mode (persistent): readers (the UI, reports) no longer block writers, and each
    commit costs less."""
    with contextlib.closing(sqlite3.connect(str(db), timeout=BUSY_TIMEOUT_S)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def schema_revision(db: Path) -> str | None:
    with contextlib.closing(_connect(db, read_only=True)) as connection:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return found[0][0] if found else None


def check_revision(
    db: Path, head: str, known: Collection[str], tables: Collection[str], version: str
) -> None:
    """Refuse a store at another schema revision than the installed MLflow's, before MLflow sees it: MLflow would
    migrate it without asking (when one of its tables is missing) or refuse it with a traceback.

    Args:
        db: an existing SQLite store (check_file passed).
        head: the revision the installed MLflow expects; known: every revision its migrations know;
        tables: the tables it expects; version: its version (for the message).

    Raises:
        StoreError: one line naming the file, both revisions and what to do; nothing was written.
    """
    with contextlib.closing(_connect(db, read_only=True)) as connection:
        found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        runs = connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    revision = found[0][0] if found else None
    if revision == head:
        return
    if runs == 0 and (revision is None or not set(tables) <= present):  # migrations stopped midway, in place
        raise StoreError(
            f"{db} was left half-built by an interrupted creation (schema revision {revision}, tables missing, no "
            f"runs): move {db} away (it holds no runs) and run the command again",
            str(db),
        )
    if revision is None:
        raise StoreError(
            f"{db} records no MLflow schema revision (alembic_version is empty): {_MOVE_AWAY}", str(db)
        )
    if revision in known:
        raise StoreError(
            f"{db} is at MLflow schema revision {revision}, older than {head}, which the installed MLflow {version} "
            f"expects (nothing was written to it): back the file up, then upgrade it with `mlflow db upgrade "
            f"sqlite:///{db}` (this cannot be undone: older MLflow versions then refuse it), or use the MLflow "
            "version that wrote it",
            str(db),
        )
    raise StoreError(
        f"{db} is at MLflow schema revision {revision}, which the installed MLflow {version} does not know (it "
        f"expects {head}): a newer MLflow wrote it, and MLflow cannot downgrade a store (nothing was written to it). "
        "Use that newer MLflow (pip install -U mlflow), or point tracking.uri at another store",
        str(db),
    )


_MOVE_AWAY = "move it away to start a new store there, or point tracking.uri at the right file"


# --- A new store, put in place whole --------------------------------------------------------------------------------

_SIDECARS = ("-wal", "-shm", "-journal")  # SQLite's files beside a database


def building_path(db: Path) -> Path:
    """Where a new store is built before it becomes `db` (beside it: the rename stays on one filesystem)."""
    return db.with_name(f"{db.name}.creating")


def remove_database(db: Path) -> None:
    """Delete a database file and SQLite's files beside it (a build left by a creator that was killed)."""
    for path in (db, *(Path(f"{db}{suffix}") for suffix in _SIDECARS)):
        path.unlink(missing_ok=True)


def install_new(building: Path, db: Path) -> None:
    """Make the complete database at `building` the store `db`: WAL mode set and every connection to it closed (the
    last close removes -wal/-shm, so none is left under the temporary name), renamed in one step (os.replace), the
    rename made durable. Before it, `db` does not exist; after it, `db` is a whole store.

    Raises:
        StoreError: a connection to `building` is still open (its -wal or -shm is still there).
    """
    write_ahead_log(building)
    left = [f"{building}{suffix}" for suffix in _SIDECARS if Path(f"{building}{suffix}").exists()]
    if left:
        raise StoreError(
            f"the new store {building} is still open ({', '.join(left)}): not put in place", str(db)
        )
    os.replace(building, db)
    directory = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    mark_connected(db)


# --- The end of a command --------------------------------------------------------------------------------------------


def checkpoint(db: Path, connection: sqlite3.Connection | None = None) -> bool:
    """Fold the write-ahead log into the database file and truncate it (PRAGMA wal_checkpoint(TRUNCATE)), so that
    a copy of the database file alone holds everything. Never waits and never fails: while another process writes
    or reads an older snapshot the checkpoint is partial (the last process to close the store folds the rest).

    Returns:
        True when the log was folded back whole.
    """
    try:
        with contextlib.ExitStack() as stack:
            if connection is None:
                connection = stack.enter_context(contextlib.closing(_connect(db, read_only=False)))
            connection.execute("PRAGMA busy_timeout = 0")  # a busy store: partial, at once
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return busy == 0
    except DATABASE_ERRORS:
        return False


def _space_left(db: Path) -> str:
    """', the device is full' when it is: SQLite then says only "disk I/O error"."""
    free = shutil.disk_usage(db.parent).free
    return f": the device of {db.parent} is full ({free} bytes free); free some space" if free < 2**20 else ""


def backup(db: Path, copy: Path) -> None:
    """Copy the store `db` to the new file `copy` with SQLite's backup API: a consistent snapshot holding every
    committed run, also while other processes write to the store or hold its write-ahead log.

    Raises:
        StoreError: `db` is not a sound store, or `copy` exists already.
    """
    if not db.is_file():
        raise StoreError(f"{db} does not exist: no MLflow store there", str(db))
    check_file(db, read_only=True)
    if copy.exists():
        raise StoreError(f"{copy} exists already: give the backup a new file name", str(db))
    with contextlib.closing(_connect(db, read_only=True)) as source:
        with contextlib.closing(sqlite3.connect(str(copy))) as target:
            source.backup(target)


# --- The adapter -----------------------------------------------------------------------------------------------------


class SqliteStore(Store):
    """MLflow's tables with sqlite3. One connection, shared by the threads of a process under a lock."""

    adapter = "sqlite"
    bulk = True

    def __init__(self, uri: str, db: Path, connection: sqlite3.Connection, read_only: bool):
        super().__init__(uri, str(db))
        self.db, self.read_only = db, read_only
        self._connection = connection
        self._lock = threading.RLock()
        self._indexed_by: str | None = None  # see _history_index

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): the write lock is taken first, so a busy store
        waits for it rather than failing halfway."""
        with self._lock, located(self.location):
            db = self._connection
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock, located(self.location):
            return self._connection.execute(sql, list(args)).fetchall()

    def _chunked(self, sql: str, run_ids: Sequence[str], extra: Sequence = ()) -> list[tuple]:
        """One query per chunk of runs ({marks} in `sql` takes the chunk's placeholders)."""
        rows: list[tuple] = []
        for start in range(0, len(run_ids), RUNS_PER_QUERY):
            chunk = list(run_ids[start : start + RUNS_PER_QUERY])
            rows += self._query(sql.format(marks=",".join("?" * len(chunk))), chunk + list(extra))
        return rows

    def close(self) -> None:
        """Close the connection; a store written to is checkpointed first (`checkpoint`)."""
        with self._lock:
            if not self.read_only:
                checkpoint(self.db, self._connection)
            self._connection.close()

    # experiments
    def experiment(self, name: str) -> Experiment | None:
        rows = self._query(
            "SELECT experiment_id, name, artifact_location FROM experiments WHERE name = ? AND lifecycle_stage = "
            "'active'",
            [name],
        )
        return Experiment(str(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def experiment_names(self) -> list[str]:
        rows = self._query("SELECT name FROM experiments WHERE lifecycle_stage = 'active' ORDER BY name")
        return [row[0] for row in rows]

    def _ensure_experiment(self, name: str) -> str:
        """As SqlAlchemyStore.create_experiment writes it (default workspace), or restore_experiment (the experiment
        and its runs active again)."""
        query = "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?"
        found = self._query(query, [name])
        now = now_ms()
        if found and found[0][1] != "active":
            with self._transaction() as db:
                db.execute(
                    "UPDATE experiments SET lifecycle_stage = 'active', last_update_time = ? WHERE experiment_id = ?",
                    (now, found[0][0]),
                )
                db.execute(
                    "UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE experiment_id = ?",
                    (found[0][0],),
                )
        elif not found:
            try:
                with self._transaction() as db:
                    db.execute(
                        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, "
                        "last_update_time) VALUES (?, ?, 'active', ?, ?)",
                        (name, store.experiment_location(self.uri, name), now, now),
                    )
            except sqlite3.IntegrityError:
                pass  # created by another process meanwhile: use theirs
            found = self._query(query, [name])
        return str(found[0][0])

    def _add_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        """As SqlAlchemyStore.set_experiment_tag writes a tag (the experiment's update time unchanged), for the keys
        the experiment does not have yet ((experiment_id, key) is the table's primary key)."""
        rows = [(key, value, int(experiment_id)) for key, value in tags.items()]
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?)", rows
            )

    # runs
    def _create_runs(self, experiment_id: str, runs: Sequence[NewRun], start_time: int) -> list[RunInfo]:
        found = self._query(
            "SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
            [int(experiment_id)],
        )
        if not found or found[0][1] != "active":
            raise StoreError(f"experiment {experiment_id} is not active in {self.location}", self.location)
        infos, run_rows, tag_rows, param_rows = [], [], [], []
        for run in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = store.append_to_uri_path(found[0][0], run_id, "artifacts")
            user = run.tags.get(schema.USER, "unknown")
            run_rows.append((run_id, run.name, user, start_time, artifact_uri, int(experiment_id)))
            tag_rows += [(k, v, run_id) for k, v in run.tags.items()]
            param_rows += [(k, v, run_id) for k, v in run.params.items()]
            infos.append(
                RunInfo(run_id, run.name, schema.RUNNING, start_time, None, experiment_id, artifact_uri, user)
            )
        with self._transaction() as db:
            db.executemany(_INSERT_RUN, run_rows)
            db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
            db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
            _insert_dataset_inputs(
                db, int(experiment_id), [(i.run_id, r.datasets) for i, r in zip(infos, runs)]
            )
        return infos

    def _write(self, updates: Sequence[RunUpdate]) -> None:
        metric_rows, latest, tag_rows, names, statuses = [], {}, [], [], []
        for update in updates:
            for chunk in update.metrics:
                for key, column in chunk.values.items():
                    rows = _metric_rows(update.run_id, key, column, chunk.timestamps, chunk.steps)
                    if not rows:
                        continue
                    metric_rows.append(rows)
                    newest = max(rows, key=lambda r: (r[3], r[2], r[1]))
                    current = latest.get((update.run_id, key))
                    if current is None or (newest[3], newest[2], newest[1]) > (
                        current[3],
                        current[2],
                        current[1],
                    ):
                        latest[(update.run_id, key)] = newest
            tag_rows += [(k, v, update.run_id) for k, v in update.tags.items()]
            if schema.RUN_NAME in update.tags:  # as MLflow's set_tag: the tag renames the run
                names.append((update.tags[schema.RUN_NAME], update.run_id))
            if update.status is not None:
                statuses.append((update.status, update.end_time, update.run_id))
        with self._transaction() as db:
            db.executemany(_INSERT_METRICS, itertools.chain.from_iterable(metric_rows))
            db.executemany(_UPSERT_LATEST, latest.values())
            db.executemany("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
            db.executemany("UPDATE runs SET name = ? WHERE run_uuid = ?", names)
            db.executemany(
                "UPDATE runs SET status = ?, end_time = COALESCE(?, end_time) WHERE run_uuid = ?", statuses
            )

    # reading
    def run(self, run_id: str) -> StoredRun | None:
        found = self._runs("r.run_uuid = ?", [run_id], active_only=False)
        return found[0] if found else None

    def find_parent(self, experiment_id: str, sweep_key: str) -> StoredRun | None:
        rows = self._query(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid JOIN tags k ON k.run_uuid = "
            "r.run_uuid WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? "
            "AND k.key = ? AND k.value = ? ORDER BY r.start_time DESC, r.run_uuid LIMIT 1",
            [int(experiment_id), schema.ROLE, schema.ROLE_SWEEP, schema.SWEEP_KEY, sweep_key],
        )
        return self.run(rows[0][0]) if rows else None

    def latest_parent(self, experiment_id: str) -> StoredRun | None:
        rows = self._query(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE r.experiment_id = ? AND "
            "r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? ORDER BY r.start_time DESC, r.run_uuid LIMIT 1",
            [int(experiment_id), schema.ROLE, schema.ROLE_SWEEP],
        )
        return self.run(rows[0][0]) if rows else None

    def children(self, experiment_id: str, parent_run_id: str) -> list[StoredRun]:
        return self._runs(
            "r.experiment_id = ? AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)",
            [int(experiment_id), schema.PARENT_RUN_ID, parent_run_id],
        )

    def histories(
        self, run_ids: Sequence[str], keys: Sequence[str], step: int | None = None
    ) -> "pd.DataFrame":
        import pandas as pd

        sql = "SELECT run_uuid, key, step, CASE WHEN is_nan THEN NULL ELSE value END FROM metrics "
        sql += self._history_index()
        sql += f"WHERE run_uuid IN ({{marks}}) AND key IN ({','.join('?' * len(keys))})"
        sql += "" if step is None else f" AND step = {int(step)}"
        return pd.DataFrame(self._chunked(sql, run_ids, list(keys)), columns=HISTORY_COLUMNS)

    def _history_index(self) -> str:
        """`INDEXED BY` MLflow's (run_uuid, key, step) index where the store has it: without statistics SQLite
        searches the primary key by `key` instead, reading every point of that key in the store for each chunk of
        runs (a cost that grows with the store, not with the runs asked for)."""
        if self._indexed_by is None:
            found = self._query(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ? AND tbl_name = 'metrics'",
                [HISTORY_INDEX],
            )
            self._indexed_by = f"INDEXED BY {HISTORY_INDEX} " if found else ""
        return self._indexed_by

    def _runs(self, where: str, args: list, active_only: bool = True) -> list[StoredRun]:
        stage = "r.lifecycle_stage = 'active' AND " if active_only else ""
        info = self._query(
            f"SELECT {_RUN_COLUMNS}, r.user_id, r.lifecycle_stage FROM runs r WHERE {stage}{where} "
            "ORDER BY r.start_time, r.run_uuid",
            args,
        )
        ids = [row[0] for row in info]
        params, tags, metrics = (defaultdict(dict) for _ in range(3))
        for table, into in (("params", params), ("tags", tags)):
            for run_id, key, value in self._chunked(
                f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({{marks}})", ids
            ):
                into[run_id][key] = value
        latest = "SELECT run_uuid, key, CASE WHEN is_nan THEN NULL ELSE value END FROM latest_metrics "
        for run_id, key, value in self._chunked(latest + "WHERE run_uuid IN ({marks})", ids):
            metrics[run_id][key] = float("nan") if value is None else value
        return [
            StoredRun(
                RunInfo(rid, name, status, start, end, str(exp), uri, user or "", stage_),
                RunData(params[rid], tags[rid], metrics[rid]),
            )
            for rid, name, status, start, end, exp, uri, user, stage_ in info
        ]


def _metric_rows(
    run_id: str, key: str, column: Sequence[float], timestamps: Sequence[int], steps: Sequence[int]
):
    """Rows of MLflow's metrics table for one column: NaN as 0 with is_nan=1 (+-inf is already the largest float)."""
    if not math.isnan(sum(column)):  # no NaN (the port has made +-inf finite already): no per-value check
        return list(
            zip(
                itertools.repeat(key),
                column,
                timestamps,
                steps,
                itertools.repeat(0),
                itertools.repeat(run_id),
            )
        )
    return [
        (key, 0.0 if math.isnan(v) else v, t, s, int(math.isnan(v)), run_id)
        for v, t, s in zip(column, timestamps, steps)
    ]


def _insert_dataset_inputs(
    db: sqlite3.Connection, experiment_id: int, inputs: list[tuple[str, list]]
) -> None:
    """The rows SqlAlchemyStore.log_inputs writes for each new run's dataset inputs, for all runs at once: a
    `datasets` row per (name, digest) not yet in the experiment, an `inputs` edge and its `input_tags` per run."""
    wanted = {}  # (run, name, digest) -> input, the first of each as log_inputs dedupes
    for run_id, datasets in inputs:
        for dataset_input in datasets:
            wanted.setdefault(
                (run_id, dataset_input.dataset.name, dataset_input.dataset.digest), dataset_input
            )
    if not wanted:
        return
    uuids = {}
    for name, digest in {key[1:] for key in wanted}:
        found = db.execute(
            "SELECT dataset_uuid FROM datasets WHERE experiment_id = ? AND name = ? AND digest = ?",
            (experiment_id, name, digest),
        ).fetchone()
        if found is not None:
            uuids[(name, digest)] = found[0]
    dataset_rows, input_rows, tag_rows = [], [], []
    for (run_id, name, digest), dataset_input in wanted.items():
        dataset = dataset_input.dataset
        if (name, digest) not in uuids:
            uuids[(name, digest)] = uuid.uuid4().hex
            dataset_rows.append((
                uuids[(name, digest)], experiment_id, name, digest, dataset.source_type, dataset.source,
                dataset.schema, dataset.profile,
            ))  # fmt: skip
        input_uuid = uuid.uuid4().hex
        input_rows.append((input_uuid, "DATASET", uuids[(name, digest)], "RUN", run_id, 0))
        tag_rows += [(input_uuid, t.key, t.value) for t in dataset_input.tags]
    db.executemany(
        "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source, "
        "dataset_schema, dataset_profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        dataset_rows,
    )
    db.executemany(
        "INSERT INTO inputs (input_uuid, source_type, source_id, destination_type, destination_id, step) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        input_rows,
    )
    db.executemany("INSERT INTO input_tags (input_uuid, name, value) VALUES (?, ?, ?)", tag_rows)
