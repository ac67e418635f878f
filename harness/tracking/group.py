"""The runs of a batched group recorded together: K child runs created in one transaction and ended in another.

Through the client API a run costs ≈9 commits (create, params, tags, metric batches, final tags, end), ≈25 ms on
SQLite, which for 10-step trials is most of a sweep's time. On a SQLite store this writes the same rows into the same
tables through MLflow's own session and ORM models (`runs`, `tags`, `params`), MLflow's metric insert of
harness.tracking.sinks, and MLflow's own latest-metric update, one transaction per step of the group's life. It
checks that the tables have the columns it writes, and `RunGroup.open` returns None for any other store or schema:
the caller then uses one MlflowTracker per trial. tests/test_group_tracking.py proves both paths store the same.
"""

import itertools
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam

from harness import signals
from harness.tracking import schema
from harness.tracking.base import FINISHED
from harness.tracking.sinks import METRIC_COLUMNS, _finite

MAX_BUFFERED_ROWS = 200_000  # metric points held before they are written (all trials, one transaction)
FLUSH_EVERY_S = 5.0  # and at least this often while a group trains: its curves grow live in the MLflow UI
MAX_TAG_LENGTH = 5000  # as MlflowTracker: MLflow refuses longer tag values
_RUN_COLUMNS = {
    "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
    "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id",
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
    datasets: list = field(
        default_factory=list
    )  # mlflow DatasetInputs, as MlflowTracker.log_inputs logs them


class RunGroup:
    """K runs of one experiment, written together on a SQLite store."""

    def __init__(self, store, experiment_id: str):
        from mlflow.store.tracking.dbmodels.models import (
            SqlDataset,
            SqlInput,
            SqlInputTag,
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        self.store, self.experiment_id = store, experiment_id
        self.SqlRun, self.SqlTag, self.SqlParam, self.SqlLatestMetric = (
            SqlRun,
            SqlTag,
            SqlParam,
            SqlLatestMetric,
        )
        if {c.name for c in SqlMetric.__table__.columns} != set(METRIC_COLUMNS):
            raise RuntimeError("unexpected MLflow metrics schema")  # caller falls back to one tracker per run
        names, marks = ", ".join(METRIC_COLUMNS), ", ".join("?" * len(METRIC_COLUMNS))
        self.insert_metrics = f"INSERT INTO metrics ({names}) VALUES ({marks})"
        columns = {c.name for c in SqlRun.__table__.columns}
        if columns != _RUN_COLUMNS or {c.name for c in SqlTag.__table__.columns} != {
            "key",
            "value",
            "run_uuid",
        }:
            raise RuntimeError("unexpected MLflow runs/tags schema")
        if {c.name for c in SqlParam.__table__.columns} != {"key", "value", "run_uuid"}:
            raise RuntimeError("unexpected MLflow params schema")
        for model in (SqlDataset, SqlInput, SqlInputTag):
            if {c.name for c in model.__table__.columns} != _INPUT_TABLES[model.__tablename__]:
                raise RuntimeError(f"unexpected MLflow {model.__tablename__} schema")
        self.SqlDataset, self.SqlInput, self.SqlInputTag = SqlDataset, SqlInput, SqlInputTag
        self.trackers: list[GroupTracker] = []
        self.flushed_at = time.monotonic()

    @classmethod
    def open(cls, client, experiment_id: str) -> "RunGroup | None":
        """A RunGroup on the client's SQLite store; None for any other store (or an MLflow it was not written for)."""
        store = getattr(getattr(client, "_tracking_client", None), "store", None)
        if store is None or not str(getattr(store, "db_uri", "")).startswith("sqlite:"):
            return None
        try:
            return cls(store, experiment_id)
        except (ImportError, AttributeError, RuntimeError):
            return None

    def create(self, runs: Sequence[NewRun]) -> list["GroupTracker"]:
        """Create every run (RUNNING, with its tags and params) in one transaction; write their artifacts."""
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.utils.uri import append_to_uri_path

        experiment = self.store.get_experiment(self.experiment_id)
        if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
            raise RuntimeError(f"experiment {self.experiment_id} is not active")
        start = int(time.time() * 1000)
        trackers, runs_rows, tag_rows, param_rows = [], [], [], []
        for run in runs:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, "artifacts")
            # As MlflowClient.create_run: the user from the mlflow.user tag, the run name also as a tag.
            tags = {**run.tags, schema.RUN_NAME: run.tags.get(schema.RUN_NAME, run.name)}
            runs_rows.append({
                "run_uuid": run_id, "name": run.name, "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "", "entry_point_name": "", "user_id": tags.get("mlflow.user", "unknown"),
                "status": RunStatus.to_string(RunStatus.RUNNING), "start_time": start, "end_time": None,
                "deleted_time": None, "source_version": "", "lifecycle_stage": LifecycleStage.ACTIVE,
                "artifact_uri": artifact_uri, "experiment_id": int(self.experiment_id),
            })  # fmt: skip
            tag_rows += [
                {"key": k, "value": str(v)[:MAX_TAG_LENGTH], "run_uuid": run_id} for k, v in tags.items()
            ]
            param_rows += [{"key": k, "value": str(v), "run_uuid": run_id} for k, v in run.params.items()]
            trackers.append(GroupTracker(self, run_id, artifact_uri))
        with self.store.ManagedSessionMaker(read_only=False) as session:
            connection = session.connection()
            connection.execute(self.SqlRun.__table__.insert(), runs_rows)
            connection.execute(self.SqlTag.__table__.insert(), tag_rows)
            connection.execute(self.SqlParam.__table__.insert(), param_rows)
            self._insert_dataset_inputs(session, [(t.run_id, run.datasets) for t, run in zip(trackers, runs)])
        for tracker, run in zip(trackers, runs):
            for name, text in run.texts.items():
                tracker.log_text(text, name)
        self.trackers.extend(trackers)
        return trackers

    def _insert_dataset_inputs(self, session, inputs: list[tuple[str, list]]) -> None:
        """The rows SqlAlchemyStore.log_inputs writes for each new run's DatasetInputs, for all runs at once: a
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
        SqlDataset, experiment_id = self.SqlDataset, int(self.experiment_id)
        names, digests = {key[1] for key in wanted}, {key[2] for key in wanted}
        existing = (
            session.query(SqlDataset)
            .filter(SqlDataset.experiment_id == experiment_id)
            .filter(SqlDataset.name.in_(names))
            .filter(SqlDataset.digest.in_(digests))
            .all()
        )
        uuids = {(d.name, d.digest): d.dataset_uuid for d in existing}
        dataset_rows, input_rows, tag_rows = [], [], []
        for (run_id, name, digest), dataset_input in wanted.items():
            dataset = dataset_input.dataset
            if (name, digest) not in uuids:
                uuids[(name, digest)] = uuid.uuid4().hex
                dataset_rows.append({
                    "dataset_uuid": uuids[(name, digest)], "experiment_id": experiment_id, "name": name,
                    "digest": digest, "dataset_source_type": dataset.source_type, "dataset_source": dataset.source,
                    "dataset_schema": dataset.schema, "dataset_profile": dataset.profile,
                })  # fmt: skip
            input_uuid = uuid.uuid4().hex
            input_rows.append({
                "input_uuid": input_uuid, "source_type": "DATASET", "source_id": uuids[(name, digest)],
                "destination_type": "RUN", "destination_id": run_id, "step": 0,
            })  # fmt: skip
            tag_rows += [
                {"input_uuid": input_uuid, "name": t.key, "value": t.value} for t in dataset_input.tags
            ]
        connection = session.connection()
        for table, rows in (
            (SqlDataset, dataset_rows),
            (self.SqlInput, input_rows),
            (self.SqlInputTag, tag_rows),
        ):
            if rows:
                connection.execute(table.__table__.insert(), rows)

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
            tag_rows += [{"key": k, "value": v, "run_uuid": tracker.run_id} for k, v in tracker.tags.items()]
            if tracker.ended:
                ends.append({"id": tracker.run_id, "status": tracker.ended[0], "end_time": tracker.ended[1]})
            tracker.rows, tracker.tags, tracker.ended = [], {}, None
        with self.store.ManagedSessionMaker(read_only=False) as session:
            connection = session.connection()
            if metric_rows:
                connection.exec_driver_sql(self.insert_metrics, metric_rows)
            if (
                latest_rows
            ):  # the runs are this group's alone: their latest values are known here (see metric_records)
                connection.execute(
                    self.SqlLatestMetric.__table__.insert().prefix_with("OR REPLACE"), latest_rows
                )
            if tag_rows:  # a tag set again (harness.status) replaces the value, as MLflow's set_tag does
                connection.execute(self.SqlTag.__table__.insert().prefix_with("OR REPLACE"), tag_rows)
            if ends:
                runs = self.SqlRun.__table__
                statement = (
                    runs.update()
                    .where(runs.c.run_uuid == bindparam("id"))
                    .values(status=bindparam("status"), end_time=bindparam("end_time"))
                )
                connection.execute(statement, ends)
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

    def take_latest(self) -> list[dict]:
        rows = [
            {"key": k, "value": v, "timestamp": t, "step": s, "is_nan": n, "run_uuid": self.run_id}
            for k in sorted(self._changed)
            for s, t, v, n in [self.latest[k]]
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
        A chunk of finite values (the usual case) is converted without a Python call per point.
        """
        if all(map(math.isfinite, values)):
            nans: Any = itertools.repeat(False)
        else:
            sanitized = [self.group.store.sanitize_metric_value(_finite(v)) for v in values]
            nans, values = [n for n, _ in sanitized], [v for _, v in sanitized]
        self.rows.extend(
            zip(itertools.repeat(key), values, timestamps, steps, nans, itertools.repeat(self.run_id))
        )
        if not values:
            return
        newest = max(zip(steps, timestamps, values, nans))
        current = self.latest.get(key)
        if current is None or newest[:3] > current[:3]:
            self.latest[key] = newest
            self._changed.add(key)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({key: str(value)[:MAX_TAG_LENGTH] for key, value in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        from harness.tracking.mlflow_tracker import upload_text

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
