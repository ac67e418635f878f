"""The MLflow tracker: one run, metrics buffered and sent with `MlflowClient.log_batch`.

One `log_metric` call costs tens of ms on SQLite and ~50 ms over HTTP (FACTS.md); a batch of 1,000 points costs
about as much as a few single calls. The client API (not the fluent `mlflow.start_run`) keeps no process-global
active run, so jobs sharing a process cannot leak runs into each other.
"""

import json
import math
import time
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from harness.tracking.base import FINISHED

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
MAX_PARAMS_PER_BATCH = 100
MAX_TAG_LENGTH = 5000


class MlflowTracker:
    """Tracks one MLflow run through the client API."""

    def __init__(self, mlflow_client: MlflowClient, run_id: str, flush_every_s: float = 10.0):
        self.client, self.run_id = mlflow_client, run_id
        self.flush_every_s = flush_every_s  # so that the UI shows long runs progressing
        self._buffer: list[tuple[str, float, int, int]] = []
        self._last_flush = time.monotonic()

    @classmethod
    def start(
        cls,
        mlflow_client: MlflowClient,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> "MlflowTracker":
        """Create a run (a child of `parent_run_id` when given) and return its tracker."""
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags)
        return cls(mlflow_client, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        self._buffer.extend((key, value, timestamp, step) for key, value in metrics.items())
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush > self.flush_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics, at most MAX_METRICS_PER_BATCH per request."""
        buffer, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        for start in range(0, len(buffer), MAX_METRICS_PER_BATCH):
            chunk = buffer[start : start + MAX_METRICS_PER_BATCH]
            self.client.log_batch(
                self.run_id, metrics=[Metric(k, _storable(v), t, s) for k, v, t, s in chunk]
            )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        items = [RunTag(key, str(value)[:MAX_TAG_LENGTH]) for key, value in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def close(self, status: str = FINISHED) -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


def _storable(value: float) -> float:
    """MLflow stores NaN, but +-inf round-trips badly through some stores: clamp to the float range."""
    value = float(value)
    if math.isinf(value):
        return math.copysign(1.7976931348623157e308, value)
    return value
