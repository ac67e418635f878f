"""Where buffered metric points go, and a background thread that sends them so training never waits on the store.

Points travel as `Columns`: a chunk of steps with one value list per key, the shape the training loop and batched
trials produce. On a SQLite store `SqliteColumnSink` writes a whole batch with one `executemany` on its own raw
sqlite3 connection (MLflow's `log_batch` builds an ORM object per point, about twice the cost per point) and keeps
MLflow's `latest_metrics` table right with one upsert per key, using MLflow's own rule for which point is the latest.
It checks MLflow's schema first and is not used when the schema differs; any other store gets
`MlflowClient.log_batch`.
"""

import contextlib
import itertools
import math
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported where used: a batched sweep's launcher writes SQLite without importing MLflow
    from mlflow import MlflowClient

Row = tuple[str, float, int, int]  # key, value, timestamp (ms), step
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
LARGEST_FLOAT = 1.7976931348623157e308  # what MLflow's SQL store writes for +-inf
METRIC_COLUMNS = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")


@dataclass(frozen=True)
class Columns:
    """A chunk of metric points: `values[key][i]` was taken at `steps[i]`, at `timestamps[i]` (ms since epoch)."""

    steps: Sequence[int]
    values: Mapping[str, Sequence[float]]
    timestamps: Sequence[int]

    def __len__(self) -> int:
        return len(self.steps) * len(self.values)

    def rows(self) -> Iterator[Row]:
        for key, column in self.values.items():
            for value, timestamp, step in zip(column, self.timestamps, self.steps):
                yield key, value, timestamp, step


def rows_of(batch: Sequence[Columns | Row]) -> list[Row]:
    """The points of a batch as rows; rows stay as they are (harness.sync replays spooled rows)."""
    rows: list[Row] = []
    for item in batch:
        if isinstance(item, Columns):
            rows.extend(item.rows())
        else:
            rows.append(tuple(item))
    return rows


class MetricSink(Protocol):
    def write(self, run_id: str, batch: Sequence[Columns]) -> None: ...


class ClientSink:
    """MlflowClient.log_batch: any store (HTTP servers, databases, SQLite)."""

    def __init__(self, client: "MlflowClient"):
        self.client = client

    def write(self, run_id: str, batch: Sequence[Columns | Row]) -> None:
        from mlflow.entities import Metric

        rows = rows_of(batch)
        for start in range(0, len(rows), MAX_METRICS_PER_BATCH):
            chunk = rows[start : start + MAX_METRICS_PER_BATCH]
            self.client.log_batch(run_id, metrics=[Metric(k, _finite(v), t, s) for k, v, t, s in chunk])


class SqliteColumnSink:
    """One executemany per batch into MLflow's `metrics` table and one upsert per key into `latest_metrics`.

    Stores exactly what `log_batch` stores (NaN as value 0 with is_nan, +-inf as the largest float); a test
    compares the two. Like MLflow's bulk path before it, it does not re-check that the run is still active.
    """

    def __init__(self, db_path: str):
        self.db_path = db_path
        self._connection: sqlite3.Connection | None = None
        if not os.path.isfile(db_path):  # sqlite3.connect would create an empty database
            raise RuntimeError(f"no SQLite database at {db_path}")
        with contextlib.closing(sqlite3.connect(db_path, timeout=20)) as connection:
            for table in ("metrics", "latest_metrics"):
                found = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                if found != set(METRIC_COLUMNS):
                    raise RuntimeError(f"unexpected MLflow schema of {table}: {sorted(found)}")
        if sqlite3.sqlite_version_info < (3, 24):
            raise RuntimeError("SQLite too old for upserts")
        names, marks = ", ".join(METRIC_COLUMNS), ", ".join("?" * len(METRIC_COLUMNS))
        # OR IGNORE: a point already stored (same key, step, timestamp, value) is skipped, as log_batch skips it.
        self.insert = f"INSERT OR IGNORE INTO metrics ({names}) VALUES ({marks})"
        # MLflow's rule (SqlAlchemyStore._update_latest_metrics_if_necessary): a point replaces the latest one when
        # (step, timestamp, value) is strictly greater.
        self.upsert = (
            f"INSERT INTO latest_metrics ({names}) VALUES ({marks}) ON CONFLICT (key, run_uuid) DO UPDATE SET "
            "value = excluded.value, timestamp = excluded.timestamp, step = excluded.step, is_nan = excluded.is_nan "
            "WHERE (excluded.step, excluded.timestamp, excluded.value) "
            "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
        )

    def write(self, run_id: str, batch: Sequence[Columns]) -> None:
        records, latest = [], {}
        for chunk in batch:
            for key, column in chunk.values.items():
                rows = _records(run_id, key, column, chunk.timestamps, chunk.steps)
                if not rows:
                    continue
                records.append(rows)
                newest = max(rows, key=lambda r: (r[3], r[2], r[1]))
                current = latest.get(key)
                if current is None or (newest[3], newest[2], newest[1]) > (
                    current[3],
                    current[2],
                    current[1],
                ):
                    latest[key] = newest
        connection = self._connect()
        with connection:  # one transaction: commits, or rolls back on error
            connection.executemany(self.insert, itertools.chain.from_iterable(records))
            connection.executemany(self.upsert, latest.values())

    def _connect(self) -> sqlite3.Connection:
        # Opened on first write, in the writer thread that uses it from then on.
        if self._connection is None:
            self._connection = sqlite3.connect(self.db_path, timeout=20, check_same_thread=False)
        return self._connection


def _records(run_id: str, key: str, column: Sequence[float], timestamps: Sequence[int], steps: Sequence[int]):
    """Rows of MLflow's metrics table for one column: NaN as 0 with is_nan=1, +-inf as the largest float."""
    values = [float(v) for v in column]
    if math.isfinite(sum(values)):  # every value finite (the common case): no per-value checks
        return list(
            zip(
                itertools.repeat(key),
                values,
                timestamps,
                steps,
                itertools.repeat(0),
                itertools.repeat(run_id),
            )
        )
    rows = []
    for value, timestamp, step in zip(values, timestamps, steps):
        is_nan = math.isnan(value)
        stored = 0.0 if is_nan else _finite(value)
        rows.append((key, stored, timestamp, step, int(is_nan), run_id))
    return rows


def sink_for(client: "MlflowClient") -> MetricSink:
    """The columnar path for SQLite stores of the MLflow schema it was written for; log_batch otherwise."""
    uri = str(client.tracking_uri)
    if uri.startswith("sqlite:///"):
        try:
            return SqliteColumnSink(uri[len("sqlite:///") :])
        except (sqlite3.Error, RuntimeError):
            pass
    return ClientSink(client)


class BackgroundWriter:
    """Writes batches on a daemon thread; `drain` waits for them and re-raises the first write error.

    The queue is bounded, so a store slower than training slows training down instead of filling memory.
    """

    def __init__(
        self,
        sink: MetricSink,
        run_id: str,
        max_pending: int = 8,
        on_error: Callable[[Sequence[Columns], Exception], None] | None = None,
    ):
        self.sink, self.run_id = sink, run_id
        self.on_error = on_error  # given: a failed batch is handed to it (spooled) instead of failing the run
        self._queue: queue.Queue[Sequence[Columns] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="harness-metric-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Sequence[Columns]) -> None:
        self._raise_if_failed()
        self._queue.put(batch)

    def drain(self) -> None:
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.sink.write(self.run_id, batch)
            except Exception as exc:  # noqa: BLE001 - spooled, or handed to the training thread at the next drain
                if self.on_error is None:
                    self._error = exc
                else:
                    self.on_error(batch, exc)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing metrics to MLflow failed: {error}") from error


def _finite(value: float) -> float:
    """MLflow stores NaN; +-inf would not round-trip everywhere, so clamp it to the float range."""
    value = float(value)
    if math.isinf(value):
        return math.copysign(LARGEST_FLOAT, value)
    return value
