"""The runs of a batched group recorded together: K child runs created in one transaction and ended in another.

Through the client API a run costs ≈9 commits (create, params, tags, metric batches, final tags, end), ≈25 ms on
SQLite, which for 10-step trials is most of a sweep's time. On a SQLite store this writes the same rows into the same
tables of MLflow's schema (`runs`, `tags`, `params`, `metrics`, `latest_metrics`, dataset inputs) with the standard
library's sqlite3, one transaction per step of the group's life, and without importing MLflow (2 s of CPU, which a
batched sweep's launcher spends while its workers train). It checks first that every table it writes has exactly
the columns it writes; `RunGroup.open` returns None for any other store or schema, and the caller then uses one
MlflowTracker per trial. tests/test_group_tracking.py proves both paths store the same.
"""

import contextlib
import posixpath
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import signals
from harness.tracking import schema
from harness.tracking.base import FINISHED
from harness.tracking.sinks import METRIC_COLUMNS, _records

MAX_BUFFERED_ROWS = 200_000  # metric points held before they are written (all trials, one transaction)
FLUSH_EVERY_S = 5.0  # and at least this often while a group trains: its curves grow live in the MLflow UI
MAX_TAG_LENGTH = 5000  # as MlflowTracker: MLflow refuses longer tag values
_RUN_COLUMNS = {
    "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
    "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id",
}  # fmt: skip


# The MLflow schema (alembic revision) these tables are written for: a store at another revision goes through MLflow,
# which upgrades it. tests/test_group_tracking.py checks it is the head of the installed MLflow's migrations.
MLFLOW_SCHEMA_REVISION = "dc11669786a5"
_TAG_COLUMNS = {"key", "value", "run_uuid"}
_EXPERIMENT_COLUMNS = {
    "experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time", "workspace",
}  # fmt: skip
_INPUT_TABLES = {  # the columns written for dataset inputs (as SqlAlchemyStore.log_inputs writes them)
    "datasets": {
        "dataset_uuid", "experiment_id", "name", "digest", "dataset_source_type", "dataset_source",
        "dataset_schema", "dataset_profile",
    },
    "inputs": {"input_uuid", "source_type", "source_id", "destination_type", "destination_id", "step"},
    "input_tags": {"input_uuid", "name", "value"},
}  # fmt: skip


@dataclass
class NewRun:
    """What one trial's run starts with: as harness.job_run gives it to MlflowTracker.start."""

    name: str
    tags: dict[str, str]
    params: dict[str, Any]
    texts: dict[str, str] = field(default_factory=dict)  # artifact file -> text (config.yaml)
    # record.DatasetInputRecord (or mlflow DatasetInputs: the same fields), as MlflowTracker.log_inputs logs them
    datasets: list = field(default_factory=list)


def _tables() -> dict[str, set[str]]:
    return {
        "runs": _RUN_COLUMNS, "tags": _TAG_COLUMNS, "params": _TAG_COLUMNS, "metrics": set(METRIC_COLUMNS),
        "latest_metrics": set(METRIC_COLUMNS), "experiments": _EXPERIMENT_COLUMNS, **_INPUT_TABLES,
    }  # fmt: skip


def connect(uri: str) -> sqlite3.Connection | None:
    """A connection to the SQLite store at `uri` when it is at MLFLOW_SCHEMA_REVISION and every table RunGroup writes
    has exactly the columns it writes; None for another store, a missing file, or another schema."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :])
    if not path.is_file():  # sqlite3.connect would create an empty database; MLflow creates stores
        return None
    connection = sqlite3.connect(str(path), timeout=20, isolation_level=None, check_same_thread=False)
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        if revision != [(MLFLOW_SCHEMA_REVISION,)]:
            connection.close()
            return None
        for table, columns in _tables().items():
            found = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            if found != columns:
                connection.close()
                return None
    except sqlite3.Error:
        connection.close()
        return None
    return connection


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): the write lock is taken at the start, so a busy store
    waits for it (the connection's timeout) rather than failing halfway."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class RunGroup:
    """K runs of one experiment, written together on a SQLite store."""

    def __init__(self, connection: sqlite3.Connection, experiment_id: str):
        self.connection, self.experiment_id = connection, experiment_id
        names, marks = ", ".join(METRIC_COLUMNS), ", ".join("?" * len(METRIC_COLUMNS))
        self.insert_metrics = f"INSERT INTO metrics ({names}) VALUES ({marks})"
        self.insert_latest = f"INSERT OR REPLACE INTO latest_metrics ({names}) VALUES ({marks})"
        self.trackers: list[GroupTracker] = []
        self.flushed_at = time.monotonic()

    @classmethod
    def open(cls, uri: str, experiment_id: str) -> "RunGroup | None":
        """A RunGroup on the SQLite store at `uri`; None for any other store (or a schema it was not written for)."""
        connection = connect(uri)
        return None if connection is None else cls(connection, experiment_id)

    def create(self, runs: Sequence[NewRun]) -> list["GroupTracker"]:
        """Create every run (RUNNING, with its tags and params) in one transaction; write their artifacts."""
        found = self.connection.execute(
            "SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
            (int(self.experiment_id),),
        ).fetchone()
        if found is None or found[1] != "active":
            raise RuntimeError(f"experiment {self.experiment_id} is not active")
        location = found[0]
        start = int(time.time() * 1000)
        trackers, runs_rows, tag_rows, param_rows = [], [], [], []
        for run in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(location, run_id, "artifacts")
            # As MlflowClient.create_run: the user from the mlflow.user tag, the run name also as a tag.
            tags = {**run.tags, schema.RUN_NAME: run.tags.get(schema.RUN_NAME, run.name)}
            runs_rows.append((
                run_id, run.name, "UNKNOWN", "", "", tags.get("mlflow.user", "unknown"), "RUNNING", start, None, None,
                "", "active", artifact_uri, int(self.experiment_id),
            ))  # fmt: skip
            tag_rows += [(k, str(v)[:MAX_TAG_LENGTH], run_id) for k, v in tags.items()]
            param_rows += [(k, str(v), run_id) for k, v in run.params.items()]
            trackers.append(GroupTracker(self, run_id, artifact_uri))
        with transaction(self.connection) as db:
            db.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                "start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                runs_rows,
            )
            db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
            db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
            self._insert_dataset_inputs(db, [(t.run_id, run.datasets) for t, run in zip(trackers, runs)])
        for tracker, run in zip(trackers, runs):
            for name, text in run.texts.items():
                tracker.log_text(text, name)
        self.trackers.extend(trackers)
        return trackers

    def _insert_dataset_inputs(self, db: sqlite3.Connection, inputs: list[tuple[str, list]]) -> None:
        """The rows SqlAlchemyStore.log_inputs writes for each new run's dataset inputs, for all runs at once: a
        `datasets` row per (name, digest) not yet in the experiment, an `inputs` edge and its `input_tags` per run.
        (log_inputs opens a session per run and looks for edges a new run cannot have: ≈5 ms a run.)"""
        wanted = {}  # (run, name, digest) -> input, the first of each as log_inputs dedupes
        for run_id, datasets in inputs:
            for dataset_input in datasets:
                wanted.setdefault(
                    (run_id, dataset_input.dataset.name, dataset_input.dataset.digest), dataset_input
                )
        if not wanted:
            return
        experiment_id = int(self.experiment_id)
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

    def buffered(self) -> int:
        return sum(len(t.rows) for t in self.trackers)

    def flush(self) -> None:
        """Write every buffered metric point, tag and run end, in one transaction. Ctrl-C or SIGTERM is held until it
        is done: the buffers are emptied as their rows go in, so an interrupted transaction lost them (a killed
        trial's record then had a gap)."""
        with signals.held():
            self._flush()

    def _flush(self) -> None:
        self.flushed_at = time.monotonic()
        trackers = [t for t in self.trackers if t.rows or t.tags or t.ended]
        if not trackers:
            return
        metric_rows, latest_rows, tag_rows, ends = [], [], [], []
        for tracker in trackers:
            metric_rows += tracker.metric_records()
            latest_rows += tracker.take_latest()
            tag_rows += [(k, v, tracker.run_id) for k, v in tracker.tags.items()]
            if tracker.ended:
                ends.append((tracker.ended[0], tracker.ended[1], tracker.run_id))
            tracker.rows, tracker.tags, tracker.ended = [], {}, None
        with transaction(self.connection) as db:
            db.executemany(self.insert_metrics, metric_rows)
            # the runs are this group's alone: their latest values are known here (see GroupTracker._add)
            db.executemany(self.insert_latest, latest_rows)
            # a tag set again (harness.status) replaces the value, as MLflow's set_tag does
            set_tags(db, tag_rows)
            set_status(db, ends)
        self.trackers = [t for t in self.trackers if not t.closed]


class GroupTracker:
    """One trial's run in a RunGroup: a Tracker whose writes wait for the group's next flush."""

    def __init__(self, group: RunGroup, run_id: str, artifact_uri: str):
        self.group, self.run_id, self.artifact_uri = group, run_id, artifact_uri
        self.rows: list[
            tuple
        ] = []  # rows of MLflow's metrics table: key, value, timestamp, step, is_nan, run id
        self.tags: dict[str, str] = {}
        self.ended: tuple[str, int] | None = None
        self.closed = False
        self.latest: dict[
            str, tuple
        ] = {}  # key -> (step, timestamp, value, is_nan) of the newest point written
        self._changed: set[str] = set()

    def metric_records(self) -> list[tuple]:
        """The buffered points as rows of MLflow's metrics table (made as they were logged, see _add)."""
        return self.rows

    def take_latest(self) -> list[tuple]:
        """Rows of latest_metrics (METRIC_COLUMNS order) for the keys whose latest point changed since the last call."""
        rows = [
            (k, v, t, s, n, self.run_id) for k in sorted(self._changed) for s, t, v, n in [self.latest[k]]
        ]
        self._changed = set()
        return rows

    def log_params(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError("a RunGroup's params are given when its runs are created")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_columns([step], {key: [value] for key, value in metrics.items()})

    def log_columns(self, steps, columns: Mapping[str, Any], timestamps=None) -> None:
        steps = [int(s) for s in steps]
        if timestamps is None:
            timestamps = [int(time.time() * 1000)] * len(steps)
        for key, values in columns.items():
            self._add(key, steps, [float(v) for v in values], timestamps)
        self._flush_if_full()

    def _add(self, key: str, steps: list[int], values: list[float], timestamps: list[int]) -> None:
        """One key's points as metrics rows, noting whether they change the key's latest value.

        MLflow's latest_metrics rule: the point with the greatest (step, timestamp, value) is a key's latest. No one
        else writes these runs while the group trains, so the latest values need not be read back from the store.
        Rows as harness.tracking.sinks makes them (NaN as 0 with is_nan, +-inf as the largest float).
        """
        rows = _records(self.run_id, key, values, timestamps, steps)
        self.rows.extend(rows)
        if not rows:
            return
        newest = max((step, timestamp, value, is_nan) for _, value, timestamp, step, is_nan, _ in rows)
        current = self.latest.get(key)
        if current is None or newest[:3] > current[:3]:
            self.latest[key] = newest
            self._changed.add(key)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({key: str(value)[:MAX_TAG_LENGTH] for key, value in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        from harness.tracking import store

        if not store.write_local_text(self.artifact_uri, text, artifact_file):
            from harness.tracking.mlflow_tracker import (
                upload_text,
            )  # a remote artifact store: MLflow's repository

            upload_text(self.artifact_uri, text, artifact_file)

    def close(self, status: str = FINISHED) -> None:
        """Mark the run ended; it is written at the group's next flush (the caller flushes when all are closed)."""
        self.ended, self.closed = (status, int(time.time() * 1000)), True

    def _flush_if_full(self) -> None:
        group = self.group
        if time.monotonic() - group.flushed_at > FLUSH_EVERY_S or (
            len(self.rows) > 1000 and group.buffered() > MAX_BUFFERED_ROWS
        ):
            group.flush()


def set_tags(db: sqlite3.Connection, rows: Sequence[tuple[str, str, str]]) -> None:
    """(key, value, run id) rows: a tag set again replaces its value, as MLflow's set_tag does."""
    db.executemany("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", rows)


def set_status(db: sqlite3.Connection, rows: Sequence[tuple[str, int | None, str]]) -> None:
    """(status, end time or None to keep it, run id) rows, as MLflow's update_run_info writes them."""
    db.executemany("UPDATE runs SET status = ?, end_time = COALESCE(?, end_time) WHERE run_uuid = ?", rows)


def append_to_uri_path(location: str, *parts: str) -> str:
    """`location` with `parts` appended to its path, as mlflow.utils.uri.append_to_uri_path does (MLflow's own for
    anything but a plain absolute `file:` URI)."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file" and not (parsed.netloc or parsed.params or parsed.query or parsed.fragment):
        if parsed.path.startswith("/"):
            return "file://" + posixpath.join(parsed.path, *parts)
    from mlflow.utils.uri import append_to_uri_path as mlflow_append

    return mlflow_append(location, *parts)


def ensure_experiment(connection: sqlite3.Connection, name: str, artifact_location: str) -> str | None:
    """The id of the active experiment `name`, creating it with MLflow's row (as SqlAlchemyStore.create_experiment
    writes it, in the default workspace) when there is none; None when it exists but was deleted (MLflow restores
    it: the caller uses MLflow)."""
    query = "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?"
    found = connection.execute(query, (name,)).fetchone()
    if found is None:
        now = int(time.time() * 1000)
        try:
            with transaction(connection) as db:
                db.execute(
                    "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, "
                    "last_update_time) VALUES (?, ?, 'active', ?, ?)",
                    (name, artifact_location, now, now),
                )
        except sqlite3.IntegrityError:
            pass  # created by another process meanwhile: use theirs
        found = connection.execute(query, (name,)).fetchone()
    return str(found[0]) if found is not None and found[1] == "active" else None
