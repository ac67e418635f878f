"""Where buffered metric points go, and a background thread that sends them so training never waits on the store.

On a SQLite store MLflow's `log_batch` builds an ORM object per point (~75 us each on this machine, FACTS.md), which
at seven metrics per step costs more than a small model's training step. `SqlBulkSink` inserts the same rows into the
same tables with one DBAPI `executemany` (MLflow's own engine and table definitions) and updates the latest-value
table through MLflow's own routine; any other store gets `MlflowClient.log_batch`.
"""

import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from mlflow import MlflowClient
from mlflow.entities import Metric

Row = tuple[str, float, int, int]  # key, value, timestamp (ms), step
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call


class MetricSink(Protocol):
    def write(self, run_id: str, rows: Sequence[Row]) -> None: ...


class ClientSink:
    """MlflowClient.log_batch: any store (HTTP servers, databases, SQLite)."""

    def __init__(self, client: MlflowClient):
        self.client = client

    def write(self, run_id: str, rows: Sequence[Row]) -> None:
        for start in range(0, len(rows), MAX_METRICS_PER_BATCH):
            chunk = rows[start : start + MAX_METRICS_PER_BATCH]
            self.client.log_batch(run_id, metrics=[Metric(k, _finite(v), t, s) for k, v, t, s in chunk])


class SqlBulkSink:
    """One executemany per batch into MLflow's `metrics` table, plus MLflow's own latest-metrics update."""

    def __init__(self, store):
        from mlflow.store.tracking.dbmodels.models import SqlMetric

        self.store, self.model = store, SqlMetric
        columns = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
        if {c.name for c in SqlMetric.__table__.columns} != set(columns):
            raise RuntimeError("unexpected MLflow metrics schema")  # caller falls back to ClientSink
        self.sql = f"INSERT INTO metrics ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def write(self, run_id: str, rows: Sequence[Row]) -> None:
        records, latest = [], {}
        for key, value, timestamp, step in rows:
            is_nan, value = self.store.sanitize_metric_value(_finite(value))
            records.append((key, value, timestamp, step, is_nan, run_id))
            current = latest.get(key)
            if current is None or (step, timestamp, value) > (current[3], current[2], current[1]):
                latest[key] = records[-1]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            session.connection().exec_driver_sql(self.sql, records)
            newest = [
                self.model(key=k, value=v, timestamp=t, step=s, is_nan=n, run_uuid=r)
                for k, v, t, s, n, r in latest.values()
            ]
            self.store._update_latest_metrics_if_necessary(newest, session)


def sink_for(client: MlflowClient) -> MetricSink:
    """The bulk path for SQLite stores of the MLflow version it was written for; log_batch otherwise."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and str(getattr(store, "db_uri", "")).startswith("sqlite:"):
        try:
            return SqlBulkSink(store)
        except (ImportError, AttributeError, RuntimeError):
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
        on_error: Callable[[Sequence[Row], Exception], None] | None = None,
    ):
        self.sink, self.run_id = sink, run_id
        self.on_error = on_error  # given: a failed batch is handed to it (spooled) instead of failing the run
        self._queue: queue.Queue[Sequence[Row] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="harness-metric-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[Row]) -> None:
        self._raise_if_failed()
        self._queue.put(rows)

    def drain(self) -> None:
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _work(self) -> None:
        while (rows := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.sink.write(self.run_id, rows)
            except Exception as exc:  # noqa: BLE001 - spooled, or handed to the training thread at the next drain
                if self.on_error is None:
                    self._error = exc
                else:
                    self.on_error(rows, exc)
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
        return math.copysign(1.7976931348623157e308, value)
    return value
