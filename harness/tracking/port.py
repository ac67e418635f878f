"""The tracking port: every operation the harness performs on an MLflow store, as one interface.

Everything that records or reads runs (job runs, batched groups, the sweep's parent run, signals, Optuna, the report)
calls a `Store`; nothing above this module talks to MLflow's client or to its tables. Two adapters implement it:

- `harness.tracking.mlflow_store.MlflowStore`: MlflowClient, for any URI MLflow tracks to (SQLite, a tracking
  server, a database).
- `harness.tracking.sqlite_store.SqliteStore`: the standard library's sqlite3 on a SQLite file at the MLflow schema
  revision it was written for (no MLflow import, one transaction for many runs). The only module that holds SQL
  against MLflow's tables, with the revision and column check in one place.

`harness.tracking.stores.open_store(uri)` chooses once per store. `Store`'s public methods normalise what they are given (strings, tag
lengths, metric values) before the adapter sees it, so both adapters receive the same input;
tests/test_port.py runs the same operations through both and compares the stores table by table.
"""

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.tracking import artifacts, schema
from harness.tracking.record import DatasetInputRecord

if TYPE_CHECKING:
    import pandas as pd

MAX_TAG_LENGTH = (
    5000  # MLflow refuses longer tag values: the harness cuts them (an error message can be long)
)
LARGEST_FLOAT = 1.7976931348623157e308  # what MLflow's SQL store writes for +-inf
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]


# --- What travels through the port -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """A chunk of metric points: `values[key][i]` was taken at `steps[i]`, at `timestamps[i]` (ms since epoch)."""

    steps: Sequence[int]
    values: Mapping[str, Sequence[float]]
    timestamps: Sequence[int]

    def __len__(self) -> int:
        return len(self.steps) * len(self.values)

    def rows(self) -> Iterator[tuple[str, float, int, int]]:
        """(key, value, timestamp, step) per point."""
        for key, column in self.values.items():
            for value, timestamp, step in zip(column, self.timestamps, self.steps):
                yield key, value, timestamp, step

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence]) -> list["Columns"]:
        """(key, value, timestamp, step) rows (a spool file's records) as one chunk per key."""
        by_key: dict[str, tuple[list, list, list]] = {}
        for key, value, timestamp, step in rows:
            steps, values, timestamps = by_key.setdefault(str(key), ([], [], []))
            steps.append(int(step))
            values.append(float(value))
            timestamps.append(int(timestamp))
        return [cls(steps, {key: values}, timestamps) for key, (steps, values, timestamps) in by_key.items()]

    @classmethod
    def logged(
        cls,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> "Columns":
        """A chunk as Tracker.log_columns receives it: steps as ints, taken now unless `timestamps` are given."""
        steps = steps if isinstance(steps, range) else [int(s) for s in steps]
        return cls(steps, dict(columns), timestamps if timestamps is not None else [now_ms()] * len(steps))

    @classmethod
    def at(cls, step: int, metrics: Mapping[str, float], timestamp: int | None = None) -> "Columns":
        """Metrics taken at one step (now, unless `timestamp` is given)."""
        now = timestamp if timestamp is not None else now_ms()
        return cls((step,), {k: (float(v),) for k, v in metrics.items()}, (now,))


@dataclass
class NewRun:
    """A run to create: its name, the tags and params it starts with, its artifacts and dataset inputs."""

    name: str
    tags: dict[str, str]
    params: dict[str, Any]
    texts: dict[str, str] = field(default_factory=dict)  # artifact file -> text (config.yaml)
    datasets: list[DatasetInputRecord] = field(default_factory=list)


@dataclass
class RunUpdate:
    """What changes on one run: metric points, tags (set again: replaced), and its status (None: unchanged).

    `end_time` None with an ending status: now. A run set RUNNING again (to resume it) keeps its end time.
    """

    run_id: str
    metrics: Sequence[Columns] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    status: str | None = None
    end_time: int | None = None


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str | None = None


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    experiment_id: str
    artifact_uri: str | None
    user_id: str = ""
    lifecycle_stage: str = "active"


@dataclass(frozen=True)
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each key


@dataclass(frozen=True)
class StoredRun:
    """A run as the port returns it: MLflow's `Run` shape (`run.info.run_id`, `run.data.tags`), either adapter."""

    info: RunInfo
    data: RunData


# --- The interface -----------------------------------------------------------------------------------------------


class Store:
    """One MLflow store. Public methods normalise their input once; adapters implement the `_` methods."""

    adapter = ""  # "sqlite" or "mlflow"
    bulk = False  # True: many runs are created and updated in one transaction (a batched group's RunGroup)
    remote = False  # a tracking server: a run keeps what it cannot send in a local spool (harness.sync)

    def __init__(self, uri: str, location: str):
        self.uri = uri  # as given: it may hold credentials, print `location`
        self.location = location  # the database file, or the redacted URI

    # experiments
    def experiment(self, name: str) -> Experiment | None:
        """The active experiment `name`, or None."""
        raise NotImplementedError

    def experiment_names(self) -> list[str]:
        """The active experiments' names, sorted."""
        raise NotImplementedError

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment `name`: created (artifacts beside a SQLite store) or restored when deleted, with
        the harness's experiment tags where it has none of its own (a kind the user chose in the UI stays)."""
        experiment_id = self._ensure_experiment(name)
        self._add_experiment_tags(experiment_id, dict(schema.EXPERIMENT_TAGS))
        return experiment_id

    def _ensure_experiment(self, name: str) -> str:
        raise NotImplementedError

    def _add_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        """Set the tags the experiment does not have yet; keep the values of those it has."""
        raise NotImplementedError

    # runs
    def create_runs(
        self, experiment_id: str, runs: Sequence[NewRun], parent_run_id: str | None = None
    ) -> list[RunInfo]:
        """Create the runs RUNNING, each with its tags, params, dataset inputs and artifacts; all or none of them.

        MLflow's conventions: the run name is also the `mlflow.runName` tag, the user comes from `mlflow.user`, a
        child carries `mlflow.parentRunId`.
        """
        prepared = []
        for run in runs:
            tags = {**run.tags, schema.RUN_NAME: run.tags.get(schema.RUN_NAME, run.name)}
            if parent_run_id:
                tags[schema.PARENT_RUN_ID] = parent_run_id
            params = {str(k): str(v) for k, v in run.params.items() if v is not None}
            prepared.append(NewRun(run.name, _tags(tags), params, dict(run.texts), list(run.datasets)))
        infos = self._create_runs(experiment_id, prepared, now_ms())
        try:
            for info, run in zip(infos, prepared):
                for artifact_file, text in run.texts.items():
                    self.log_text(info.artifact_uri, text, artifact_file)
        except Exception as exc:  # no half-created runs: what could not get its artifacts ends FAILED
            error = f"{type(exc).__name__}: {exc}"
            failed = {schema.STATUS: schema.FAILED_OUTCOME, schema.ERROR: error}
            self.write(
                [RunUpdate(i.run_id, tags=failed, status=schema.FAILED, end_time=now_ms()) for i in infos]
            )
            raise
        return infos

    def write(self, updates: Sequence[RunUpdate]) -> None:
        """Apply the updates (metrics, tags, statuses; in one transaction where the adapter can)."""
        now = now_ms()
        prepared = [
            RunUpdate(u.run_id, [_finite_chunk(c) for c in u.metrics], _tags(u.tags), u.status, _end(u, now))
            for u in updates
            if u.metrics or u.tags or u.status
        ]
        if prepared:
            self._write(prepared)

    def log_metrics(self, run_id: str, batch: Sequence[Columns]) -> None:
        self.write([RunUpdate(run_id, metrics=batch)])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.write([RunUpdate(run_id, tags=tags)])

    def end_run(
        self, run_id: str, status: str, tags: Mapping[str, str] | None = None, end_time: int | None = None
    ) -> None:
        """Set the tags, then end the run with `status` (FINISHED, FAILED, KILLED) at `end_time` (default now)."""
        self.write([RunUpdate(run_id, tags=tags or {}, status=status, end_time=end_time)])

    def log_text(self, artifact_uri: str, text: str, artifact_file: str) -> None:
        """Write `text` as the artifact `artifact_file` of the run whose artifacts are at `artifact_uri`."""
        artifacts.log_text(artifact_uri, text, artifact_file, self.uri)

    def log_artifacts(self, artifact_uri: str, files: Sequence[Path], directory: str) -> None:
        """Copy local files (or folders) under `directory` of the run's artifacts."""
        artifacts.log_files(artifact_uri, files, directory, self.uri)

    # reading
    def run(self, run_id: str) -> StoredRun | None:
        raise NotImplementedError

    def find_parent(self, experiment_id: str, sweep_key: str) -> StoredRun | None:
        """The latest started parent run (`harness.role=sweep`) with this sweep key, whatever its status."""
        raise NotImplementedError

    def latest_parent(self, experiment_id: str) -> StoredRun | None:
        """The latest started sweep (parent run) of the experiment."""
        raise NotImplementedError

    def children(self, experiment_id: str, parent_run_id: str) -> list[StoredRun]:
        """Every active child run of the parent, oldest first."""
        raise NotImplementedError

    def histories(
        self, run_ids: Sequence[str], keys: Sequence[str], step: int | None = None
    ) -> "pd.DataFrame":
        """Points of `keys` of the runs (only at `step` if given): run_id, key, step, value (NaN as NaN)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # adapters
    def _create_runs(self, experiment_id: str, runs: Sequence[NewRun], start_time: int) -> list[RunInfo]:
        raise NotImplementedError

    def _write(self, updates: Sequence[RunUpdate]) -> None:
        raise NotImplementedError


def _end(update: RunUpdate, now: int) -> int | None:
    """A run ended without an end time ends now (as MLflow's set_terminated); one set RUNNING keeps its own."""
    if update.status is None or update.status == schema.RUNNING:
        return None
    return update.end_time if update.end_time is not None else now


def now_ms() -> int:
    return int(time.time() * 1000)


def _tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}


def finite(value: float) -> float:
    """+-inf as the largest float (MLflow's SQL store writes that; it would not round-trip everywhere); NaN stays."""
    value = float(value)
    return math.copysign(LARGEST_FLOAT, value) if math.isinf(value) else value


def _finite_chunk(chunk: Columns) -> Columns:
    values = {}
    for key, column in chunk.values.items():
        column = [float(v) for v in column]
        if not math.isfinite(sum(column)):  # the common case (every value finite) needs no per-value check
            column = [finite(v) for v in column]
        values[key] = column
    steps = chunk.steps if isinstance(chunk.steps, range) else [int(s) for s in chunk.steps]
    return Columns(steps, values, [int(t) for t in chunk.timestamps])
