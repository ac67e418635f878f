"""Where a report's data comes from: a read-only view of an MLflow store.

Two readers answer the same four questions (which experiment, which sweep, its child runs, their metric histories):
- `SqliteSource` reads a SQLite store's tables directly, read-only: no MLflow import (about 2.5 s of a report's
  start-up), no schema migration, no lock held against a sweep that is writing, and histories in one SQL query per
  chunk of runs instead of one request per run and metric. It is used only when the file holds the tables and
  columns of the MLflow schema it was written for; otherwise the client reader takes over.
- `ClientSource` goes through `MlflowClient` and harness.tracking.queries: any store (a tracking server).

Both hand out runs with MLflow's shape (`run.info.run_id/.status/.start_time/...`, `run.data.params/.tags/.metrics`),
so `harness.tracking.queries.latest_per_grid_point` and `schema.outcome` apply to either.
"""

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.tracking import queries, schema, store

if TYPE_CHECKING:  # imported where a frame is made: a sweep's launcher reads children here without pandas
    import pandas as pd

LATEST = "latest"
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]
RUNS_PER_QUERY = 500  # bound parameters per statement stay under SQLite's limit (999 before 3.32)
CLIENT_THREADS = (
    8  # concurrent get_metric_history requests against a server: each mostly waits on the network
)
# The MLflow 3.x tables and columns the SQL reader relies on; a store without them goes through the client.
_SCHEMA = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {"run_uuid", "name", "status", "start_time", "end_time", "experiment_id", "lifecycle_stage"},
    "tags": {"key", "value", "run_uuid"},
    "params": {"key", "value", "run_uuid"},
    "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
    "metrics": {"key", "value", "step", "is_nan", "run_uuid"},  # NaN is stored as value 0, is_nan 1
}


class ReportError(Exception):
    """The report cannot be made: the message says why and, where it can, what to do (shown as one line)."""


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    experiment_id: str
    artifact_uri: str | None


@dataclass(frozen=True)
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRun:
    """A run as the SQL reader returns it: MLflow's `Run` shape, without MLflow."""

    info: RunInfo
    data: RunData


def open_source(uri: str) -> "SqliteSource | ClientSource":
    """The reader for `uri`: SQL on a SQLite store of the known schema, the MLflow client otherwise.

    Raises:
        ReportError: the SQLite file is missing, empty, not a database, or holds no MLflow store; MLflow would
            silently create an empty store in the first two cases.
    """
    db = store.sqlite_path(uri)
    if db is None:
        return ClientSource(uri)
    if not db.is_file():
        raise ReportError(
            f"no MLflow store at {db}: run a sweep first, or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    if db.stat().st_size == 0:
        raise ReportError(f"{db} is empty (0 bytes), not an MLflow store: pass the right --tracking-uri")
    try:
        tables = _columns(db)
    except sqlite3.DatabaseError as exc:
        raise ReportError(
            f"cannot read {db}: {exc}; restore it from a backup or pass another --tracking-uri"
        ) from None
    if "runs" not in tables or "experiments" not in tables:
        raise ReportError(f"{db} holds no MLflow store (no runs table): pass the right --tracking-uri")
    if all(needed <= tables.get(table, set()) for table, needed in _SCHEMA.items()):
        return SqliteSource(uri, db)
    return ClientSource(uri)


def _connect(db: Path) -> sqlite3.Connection:
    # Read-only: a report never writes to (or migrates, or locks) the store a sweep may be writing to.
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)


def _columns(db: Path) -> dict[str, set[str]]:
    with closing(_connect(db)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')} for name in names}


def find_sweep(source, experiment: str, sweep: str = LATEST):
    """(experiment, parent run) of the sweep: the latest of the experiment, or the run id given.

    Raises:
        ReportError: unknown experiment (the message lists those that exist), no sweep, or `sweep` is not a sweep
            (parent run) of this experiment.
    """
    found = source.experiment(experiment)
    if found is None:
        known = ", ".join(source.experiment_names()) or "none"
        raise ReportError(f"unknown experiment {experiment!r} in {source.uri} (experiments there: {known})")
    if sweep == LATEST:
        parent = source.latest_parent(found.experiment_id)
        if parent is None:
            raise ReportError(
                f"experiment {experiment!r} holds no sweep: start one with `python -m harness.train -m ...`"
            )
        return found, parent
    parent = source.run(sweep)
    if parent is None:
        raise ReportError(f"unknown sweep {sweep!r}: no run with that id in {source.uri}")
    if (
        parent.info.experiment_id != found.experiment_id
        or parent.data.tags.get(schema.ROLE) != schema.ROLE_SWEEP
    ):
        raise ReportError(f"run {sweep} is not a sweep (parent run) of experiment {experiment!r}")
    return found, parent


class SqliteSource:
    """SQL on a SQLite store, read-only (see the module docstring)."""

    def __init__(self, uri: str, db: Path):
        self.uri, self.db = uri, db

    def experiment(self, name: str) -> Experiment | None:
        rows = self._query(
            "SELECT experiment_id, name FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
            [name],
        )
        return Experiment(str(rows[0][0]), rows[0][1]) if rows else None

    def experiment_names(self) -> list[str]:
        rows = self._query("SELECT name FROM experiments WHERE lifecycle_stage = 'active' ORDER BY name", [])
        return [row[0] for row in rows]

    def latest_parent(self, experiment_id: str) -> StoredRun | None:
        """The latest started sweep (parent run) of the experiment: queries.latest_parent, in SQL."""
        rows = self._query(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ? "
            "ORDER BY r.start_time DESC LIMIT 1",
            [experiment_id, schema.ROLE, schema.ROLE_SWEEP],
        )
        return self.run(rows[0][0]) if rows else None

    def run(self, run_id: str) -> StoredRun | None:
        found = self._runs("r.run_uuid = ?", [run_id])
        return found[0] if found else None

    def children(self, experiment_id: str, parent_run_id: str) -> list[StoredRun]:
        """Every active child run of the parent, oldest first: queries.children, in SQL."""
        return self._runs(
            "r.experiment_id = ? AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)",
            [experiment_id, schema.PARENT_RUN_ID, parent_run_id],
        )

    def histories(
        self, run_ids: Sequence[str], keys: Sequence[str], step: int | None = None
    ) -> "pd.DataFrame":
        """Points of `keys` of the runs (only at `step` if given): run_id, key, step, value; NaN restored."""
        import pandas as pd

        sql = "SELECT run_uuid, key, step, CASE WHEN is_nan THEN NULL ELSE value END FROM metrics "
        sql += f"WHERE run_uuid IN ({{marks}}) AND key IN ({','.join('?' * len(keys))})"
        sql += "" if step is None else f" AND step = {int(step)}"
        rows = self._chunked(sql, run_ids, list(keys))
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

    def _runs(self, where: str, args: list) -> list[StoredRun]:
        info = self._query(
            "SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time, r.experiment_id, r.artifact_uri "
            f"FROM runs r WHERE r.lifecycle_stage = 'active' AND {where} ORDER BY r.start_time, r.run_uuid",
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
                RunInfo(rid, name, status, start, end, str(exp), uri),
                RunData(params[rid], tags[rid], metrics[rid]),
            )
            for rid, name, status, start, end, exp, uri in info
        ]

    def _chunked(self, sql: str, run_ids: Sequence[str], extra: list | None = None) -> list[tuple]:
        """One query per chunk of runs ({marks} in `sql` takes the chunk's placeholders)."""
        rows: list[tuple] = []
        with closing(_connect(self.db)) as conn:
            for start in range(0, len(run_ids), RUNS_PER_QUERY):
                chunk = list(run_ids[start : start + RUNS_PER_QUERY])
                rows += conn.execute(
                    sql.format(marks=",".join("?" * len(chunk))), chunk + (extra or [])
                ).fetchall()
        return rows

    def _query(self, sql: str, args: list) -> list[tuple]:
        with closing(_connect(self.db)) as conn:
            return conn.execute(sql, args).fetchall()


class ClientSource:
    """MlflowClient and harness.tracking.queries: any store MLflow can open."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = store.client(uri) if store.is_remote(uri) else MlflowClient(tracking_uri=uri)

    def experiment(self, name: str):
        found = self.client.get_experiment_by_name(name)
        return None if found is None or found.lifecycle_stage == "deleted" else found

    def experiment_names(self) -> list[str]:
        return sorted(e.name for e in self.client.search_experiments())

    def latest_parent(self, experiment_id: str):
        return queries.latest_parent(self.client, experiment_id)

    def run(self, run_id: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def children(self, experiment_id: str, parent_run_id: str) -> list:
        return queries.children(self.client, experiment_id, parent_run_id)

    def histories(
        self, run_ids: Sequence[str], keys: Sequence[str], step: int | None = None
    ) -> "pd.DataFrame":
        """get_metric_history per run and key, in parallel threads."""
        import pandas as pd

        jobs = [(run_id, key) for run_id in run_ids for key in keys]

        def history(job: tuple[str, str]) -> list[tuple]:
            run_id, key = job
            points = self.client.get_metric_history(run_id, key)
            return [(run_id, key, m.step, m.value) for m in points if step is None or m.step == step]

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            rows = [row for part in pool.map(history, jobs) for row in part]
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
