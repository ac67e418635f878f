"""The MLflow tracker: one run; metric points buffered and written in batches by a background thread.

One `log_metric` call costs tens of ms on SQLite and ~50 ms over HTTP, so points are buffered as columnar chunks
and handed to a writer thread once 1,000 have gathered, or `flush_every_s` has passed (see sinks.py for how). The client API (not the fluent `mlflow.start_run`) keeps no process-global
active run, so jobs sharing a process cannot leak runs into each other.
"""

import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from harness.tracking.base import FINISHED
from harness.tracking.record import redact
from harness.tracking.sinks import (
    MAX_METRICS_PER_BATCH,
    BackgroundWriter,
    Columns,
    MetricSink,
    rows_of,
    sink_for,
)
from harness.tracking.spool import Spool

MAX_PARAMS_PER_BATCH = 100
MAX_TAG_LENGTH = 5000


class MlflowTracker:
    """Tracks one MLflow run through the client API.

    With a `spool_dir` (remote tracking servers), nothing is lost when the server goes away mid-run: whatever cannot
    be sent from then on (metrics, final tags, the end of the run) is appended to `<spool_dir>/<run_id>.jsonl`, and
    training goes on; `python -m harness.sync <file>` uploads it later.
    """

    def __init__(
        self,
        mlflow_client: MlflowClient,
        run_id: str,
        flush_every_s: float = 10.0,
        sink: MetricSink | None = None,
        spool_dir: Path | None = None,
    ):
        self.client, self.run_id = mlflow_client, run_id
        self.flush_every_s = flush_every_s  # so that the UI shows long runs progressing
        self.spool_dir = spool_dir
        self.spool: Spool | None = None  # set once the server has failed us: everything after goes there
        self._buffer: list[Columns] = []
        self._points = 0  # in the buffer
        self._last_send = time.monotonic()
        on_error = self._spool_metrics if spool_dir is not None else None
        self._writer = BackgroundWriter(sink or sink_for(mlflow_client), run_id, on_error=on_error)
        self.artifact_uri: str | None = None  # known from create_run: local artifacts then need no run lookup
        self.experiment_id: str | None = None  # known from create_run (to point users at the run's page)

    @classmethod
    def start(
        cls,
        mlflow_client: MlflowClient,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        spool_dir: Path | None = None,
    ) -> "MlflowTracker":
        """Create a run (a child of `parent_run_id` when given) and return its tracker."""
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags)
        tracker = cls(mlflow_client, run.info.run_id, spool_dir=spool_dir)
        tracker.artifact_uri = run.info.artifact_uri
        tracker.experiment_id = experiment_id
        return tracker

    def log_params(self, params: Mapping[str, Any]) -> None:
        params = {key: str(value) for key, value in params.items()}
        items = [Param(key, value) for key, value in params.items()]

        def send() -> None:
            for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

        if not self._offline_or_try(send):
            self.spool.params(params)

    def log_inputs(self, datasets: list) -> None:
        """MLflow dataset inputs (mlflow.entities.DatasetInput), as `mlflow.log_input` logs them. Offline (the server
        went away), they are left out: the spool keeps what a report needs (metrics, tags), not inputs."""
        self._offline_or_try(lambda: self.client.log_inputs(self.run_id, datasets=datasets))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        values = {key: (float(value),) for key, value in metrics.items()}
        self._add(Columns((step,), values, (int(time.time() * 1000),)))

    def log_columns(
        self,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        """See Tracker.log_columns. The sequences are kept until written: pass ones that will not change."""
        steps = steps if isinstance(steps, range) else [int(s) for s in steps]
        if timestamps is None:
            timestamps = [int(time.time() * 1000)] * len(steps)
        self._add(Columns(steps, dict(columns), timestamps))

    def _add(self, chunk: Columns) -> None:
        self._buffer.append(chunk)
        self._points += len(chunk)
        if self._points >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_send > self.flush_every_s:
            self._send()

    def _send(self) -> None:
        """Hand the buffer to the writer thread (training goes on while it is written)."""
        if self._buffer:
            if self.spool is not None:
                self.spool.metrics(
                    rows_of(self._buffer)
                )  # the server is gone: do not wait on it for every batch
            else:
                self._writer.submit(self._buffer)
            self._buffer, self._points = [], 0
        self._last_send = time.monotonic()

    def flush(self) -> None:
        """Send the buffered metrics and wait until everything is written."""
        self._send()
        self._writer.drain()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        tags = {key: str(value)[:MAX_TAG_LENGTH] for key, value in tags.items()}
        if not self._offline_or_try(
            lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        ):
            self.spool.tags(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self._offline_or_try(lambda: self._upload_text(text, artifact_file)):
            self.spool.text(text, artifact_file)

    def _upload_text(self, text: str, artifact_file: str) -> None:
        if self.artifact_uri is None or urlparse(self.artifact_uri).scheme not in ("", "file"):
            self.client.log_text(self.run_id, text, artifact_file)
            return
        # MlflowClient.log_text looks the run up again to find its artifact store; we already know it.
        upload_text(self.artifact_uri, text, artifact_file)

    def close(self, status: str = FINISHED) -> None:
        try:
            self._send()
            self._writer.close()
        finally:
            end_time = int(time.time() * 1000)
            if not self._offline_or_try(lambda: self.client.set_terminated(self.run_id, status, end_time)):
                self.spool.end(status, end_time)
                print(
                    f"warning: the tracking server could not be reached ({self.spool_reason}); run {self.run_id} is "
                    f"incomplete in MLflow. What was not sent is in {self.spool.path}: upload it with\n"
                    f"  python -m harness.sync {self.spool.path}",
                    file=sys.stderr,
                )

    # --- when the server goes away -------------------------------------------------------------------------------

    spool_reason = ""

    def _go_offline(self, exc: Exception) -> None:
        if self.spool is None:
            # MLflow's REST errors quote the request URL, credentials included: redacted before printing or spooling.
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.spool_reason = redact(reason)[:300]
            path = self.spool_dir / f"{self.run_id}.jsonl"
            self.spool = Spool(path, self.run_id, self.client.tracking_uri, self.spool_reason)

    def _spool_metrics(self, batch: Sequence[Columns], exc: Exception) -> None:
        """Writer-thread hook: a batch the server did not take."""
        with _OFFLINE_LOCK:
            self._go_offline(exc)
        self.spool.metrics(rows_of(batch))

    def _offline_or_try(self, send) -> bool:
        """Send now unless offline; True when sent. Without a spool directory, errors propagate as usual."""
        if self.spool is None:
            if self.spool_dir is None:
                send()
                return True
            try:
                send()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure to reach the server sends the rest to the spool
                with _OFFLINE_LOCK:
                    self._go_offline(exc)
        return False


_OFFLINE_LOCK = threading.Lock()


def upload_text(artifact_uri: str, text: str, artifact_file: str) -> None:
    """Write `text` as `artifact_file` into a run's artifact store, known by its URI (no run lookup)."""
    from harness.tracking import store

    # The common case: a file where the store keeps it.
    if store.write_local_text(artifact_uri, text, artifact_file):
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, Path(artifact_file).name)
        local.write_text(text)
        directory = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        get_artifact_repository(artifact_uri).log_artifact(str(local), directory)
