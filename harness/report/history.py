"""Metric histories of many runs as one frame: run_id, key, step, value, timestamp.

The only public way to read a history is `MlflowClient.get_metric_history(run, key)`, one request per run and key:
about 70 s for 500 runs x 1,000 steps x 2 metrics on SQLite (FACTS.md). On a SQLite store the report reads the
`metrics` table directly instead, in a few queries, read-only. Other stores (an `mlflow server` over HTTP) go
through the client, with requests in parallel because each one mostly waits on the network.
"""

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from harness.tracking import store

COLUMNS = ["run_id", "key", "step", "value", "timestamp"]
# MLflow 3.x schema: metrics(key, value, timestamp, run_uuid, step, is_nan). NaN is stored as value 0, is_nan 1.
_SQLITE_COLUMNS = {"key", "value", "timestamp", "run_uuid", "step", "is_nan"}
_SQL = (
    "SELECT run_uuid AS run_id, key, step, CASE WHEN is_nan THEN NULL ELSE value END AS value, timestamp "
    "FROM metrics WHERE run_uuid IN ({marks})"
)
RUNS_PER_QUERY = 500  # bound parameters per statement stay under SQLite's limit (999 before 3.32)
CLIENT_THREADS = 8  # concurrent get_metric_history requests against a server


def read_histories(client: MlflowClient, runs: list[Run], via_client: bool = False) -> pd.DataFrame:
    """Every logged point of every metric of `runs`, one row per run x key x step (the latest value wins).

    Args:
        client: a client on the store.
        runs: the runs (their `data.metrics` names the keys to fetch on the client path).
        via_client: use get_metric_history even on SQLite (the path servers take; for tests and comparisons).
    """
    db = store.sqlite_path(client.tracking_uri)
    if not via_client and db is not None and _has_metrics_table(db):
        frame = _read_sqlite(db, [run.info.run_id for run in runs])
    else:
        frame = _read_client(client, runs)
    return _tidy(frame)


def _connect(db: Path) -> sqlite3.Connection:
    # Read-only: a report must never write to (or lock) the store the sweep is writing to.
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)


def _has_metrics_table(db: Path) -> bool:
    """Whether the file holds the metrics table the SQL expects (else: a schema we do not know, use the client)."""
    with closing(_connect(db)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(metrics)")}
    return _SQLITE_COLUMNS <= columns


def _read_sqlite(db: Path, run_ids: list[str]) -> pd.DataFrame:
    parts = []
    with closing(_connect(db)) as conn:
        for start in range(0, len(run_ids), RUNS_PER_QUERY):
            chunk = run_ids[start : start + RUNS_PER_QUERY]
            sql = _SQL.format(marks=",".join("?" * len(chunk)))
            parts.append(pd.DataFrame(conn.execute(sql, chunk).fetchall(), columns=COLUMNS))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def _read_client(client: MlflowClient, runs: list[Run]) -> pd.DataFrame:
    jobs = [(run.info.run_id, key) for run in runs for key in run.data.metrics]

    def history(job: tuple[str, str]) -> list[tuple]:
        run_id, key = job
        return [(run_id, key, m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        rows = [row for part in pool.map(history, jobs) for row in part]
    return pd.DataFrame(rows, columns=COLUMNS)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns (categorical ids and keys: millions of rows, few distinct values), sorted, one row per point.

    A point logged twice at the same step (a retried batch) keeps its latest value, as the MLflow UI shows it.
    """
    frame = frame.astype({"step": "int64", "value": "float64", "timestamp": "int64"})
    frame["run_id"] = frame["run_id"].astype("category")
    frame["key"] = frame["key"].astype("category")
    frame = frame.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    frame = frame.drop_duplicates(["run_id", "key", "step"], keep="last")
    return frame.reset_index(drop=True)
