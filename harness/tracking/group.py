"""The runs of a batched group recorded together: K child runs created in one call, their points, tags and ends
written together at each flush.

Through one tracker per run, a run costs about nine store operations (create, params, tags, metric batches, final
tags, end), which for short trials is most of a sweep's time. A RunGroup buffers what its K trials log and writes it
as one `Store.write` (one transaction on the SQL adapter). A test holds it to what one RunTracker per run stores.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness import signals
from harness.tracking.base import FINISHED
from harness.tracking.port import Columns, NewRun, RunUpdate, Store, now_ms

MAX_BUFFERED_POINTS = 200_000  # metric points held before they are written (all trials, one transaction)
FLUSH_EVERY_S = 5.0  # and at least this often while a group trains: its curves grow live in the MLflow UI


class RunGroup:
    """K runs of one experiment, written together."""

    def __init__(self, store: Store, experiment_id: str, parent_run_id: str | None = None):
        self.store, self.experiment_id, self.parent_run_id = store, experiment_id, parent_run_id
        self.trackers: list[GroupTracker] = []
        self.flushed_at = time.monotonic()

    def create(self, runs: Sequence[NewRun]) -> list["GroupTracker"]:
        """Create every run (RUNNING, with its tags, params, inputs and artifacts) in one call."""
        infos = self.store.create_runs(self.experiment_id, runs, self.parent_run_id)
        trackers = [GroupTracker(self, info.run_id, info.artifact_uri) for info in infos]
        self.trackers.extend(trackers)
        return trackers

    def attach(self, runs: Sequence[tuple[str, str | None]]) -> list["GroupTracker"]:
        """Trackers for runs created before, by (run id, artifact URI)."""
        trackers = [GroupTracker(self, run_id, artifact_uri) for run_id, artifact_uri in runs]
        self.trackers.extend(trackers)
        return trackers

    def buffered(self) -> int:
        return sum(t.points for t in self.trackers)

    def flush(self) -> None:
        """Write every buffered point, tag and run end in one call. Ctrl-C or SIGTERM is held until it is done: the
        buffers are emptied as their rows go in, so an interrupted write would lose them."""
        with signals.held():
            self.flushed_at = time.monotonic()
            updates = [t.take() for t in self.trackers if t.chunks or t.tags or t.ended]
            self.store.write(updates)
            self.trackers = [t for t in self.trackers if not t.closed]


class GroupTracker:
    """One trial's run in a RunGroup: a Tracker whose writes wait for the group's next flush."""

    def __init__(self, group: RunGroup, run_id: str, artifact_uri: str | None):
        self.group, self.run_id, self.artifact_uri = group, run_id, artifact_uri
        self.chunks: list[Columns] = []
        self.points = 0
        self.tags: dict[str, str] = {}
        self.ended: tuple[str, int] | None = None
        self.closed = False

    def take(self) -> RunUpdate:
        """What this run's next write holds; the buffers are empty afterwards."""
        status, end_time = self.ended if self.ended else (None, None)
        update = RunUpdate(self.run_id, self.chunks, self.tags, status, end_time)
        self.chunks, self.points, self.tags, self.ended = [], 0, {}, None
        return update

    def log_params(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError("a RunGroup's params are given when its runs are created")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._add(Columns.at(step, metrics))

    def log_columns(self, steps, columns: Mapping[str, Any], timestamps=None) -> None:
        self._add(Columns.logged(steps, columns, timestamps))

    def _add(self, chunk: Columns) -> None:
        self.chunks.append(chunk)
        self.points += len(chunk)
        group = self.group
        if time.monotonic() - group.flushed_at > FLUSH_EVERY_S or (
            self.points > 1000 and group.buffered() > MAX_BUFFERED_POINTS
        ):
            group.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({key: str(value) for key, value in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        self.group.store.log_text(self.artifact_uri, text, artifact_file)

    def close(self, status: str = FINISHED) -> None:
        """Mark the run ended; it is written at the group's next flush (the caller flushes when all are closed)."""
        self.ended, self.closed = (status, now_ms()), True
