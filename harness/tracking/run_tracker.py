"""The tracker of one run on a store: metric points buffered and written in batches by a background thread.

One write per point would cost a commit (SQLite) or a request (a server) per step, so points are buffered as
columnar chunks and handed to a writer thread once 1,000 have gathered, or `flush_every_s` has passed; training never
waits on the store, unless the store falls behind by more than a few batches (the queue is bounded).
Everything goes through the tracking port (harness.tracking.port), whichever adapter the store has.
"""

import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.tracking.base import FINISHED
from harness.tracking.port import Columns, NewRun, RunUpdate, Store, now_ms
from harness.tracking.record import redact
from harness.tracking.spool import Spool

MAX_BUFFERED_POINTS = 1000  # a batch is sent once this many points have gathered


class RunTracker:
    """Tracks one run through the port.

    With a `spool_dir` (remote tracking servers), nothing is lost when the server goes away mid-run: whatever cannot
    be sent from then on (metrics, final tags, the end of the run) is appended to `<spool_dir>/<run_id>.jsonl`, and
    training goes on; `python -m harness.sync <file>` uploads it later.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        artifact_uri: str | None,
        experiment_id: str | None = None,
        flush_every_s: float = 10.0,
        spool_dir: Path | None = None,
    ):
        self.store, self.run_id, self.artifact_uri = store, run_id, artifact_uri
        self.experiment_id = experiment_id  # to point users at the run's page
        self.flush_every_s = flush_every_s  # so that the UI shows long runs progressing
        self.spool_dir = spool_dir
        self.spool: Spool | None = None  # set once the server has failed us: everything after goes there
        self.spool_reason = ""
        self._buffer: list[Columns] = []
        self._points = 0  # in the buffer
        self._last_send = time.monotonic()
        on_error = self._spool_metrics if spool_dir is not None else None
        self._writer = BackgroundWriter(store, run_id, on_error=on_error)

    @classmethod
    def start(
        cls,
        store: Store,
        experiment_id: str,
        run: NewRun,
        parent_run_id: str | None = None,
        spool_dir: Path | None = None,
    ) -> "RunTracker":
        """Create the run (a child of `parent_run_id` when given) with its params, tags, inputs and artifacts."""
        [info] = store.create_runs(experiment_id, [run], parent_run_id)
        return cls(store, info.run_id, info.artifact_uri, experiment_id, spool_dir=spool_dir)

    def log_params(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError(
            "a run's params are given when it is created (harness.tracking.port.NewRun)"
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._add(Columns.at(step, metrics))

    def log_columns(
        self,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        """See Tracker.log_columns. The sequences are kept until written: pass ones that will not change."""
        self._add(Columns.logged(steps, columns, timestamps))

    def _add(self, chunk: Columns) -> None:
        self._buffer.append(chunk)
        self._points += len(chunk)
        if self._points >= MAX_BUFFERED_POINTS or time.monotonic() - self._last_send > self.flush_every_s:
            self._send()

    def _send(self) -> None:
        """Hand the buffer to the writer thread (training goes on while it is written)."""
        if self._buffer:
            batch, self._buffer, self._points = self._buffer, [], 0
            if self.spool is not None:  # the server is gone: do not wait on it for every batch
                self.spool.metrics([row for chunk in batch for row in chunk.rows()])
            else:
                self._writer.submit(batch)
        self._last_send = time.monotonic()

    def flush(self) -> None:
        """Send the buffered metrics and wait until everything is written."""
        self._send()
        self._writer.drain()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self._offline_or_try(lambda: self.store.set_tags(self.run_id, tags)):
            self.spool.tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self._offline_or_try(lambda: self.store.log_text(self.artifact_uri, text, artifact_file)):
            self.spool.text(text, artifact_file)

    def close(self, status: str = FINISHED) -> None:
        try:
            self._send()
            self._writer.close()
        finally:
            end_time = now_ms()
            if not self._offline_or_try(lambda: self.store.end_run(self.run_id, status, end_time=end_time)):
                self.spool.end(status, end_time)
                print(
                    f"warning: the tracking server could not be reached ({self.spool_reason}); run {self.run_id} is "
                    f"incomplete in MLflow. What was not sent is in {self.spool.path}: upload it with\n"
                    f"  python -m harness.sync {self.spool.path}",
                    file=sys.stderr,
                )

    # --- when the server goes away -------------------------------------------------------------------------------

    def _go_offline(self, exc: Exception) -> None:
        if self.spool is None:
            # MLflow's REST errors quote the request URL, credentials included: redacted before printing or spooling.
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.spool_reason = redact(reason)[:300]
            path = self.spool_dir / f"{self.run_id}.jsonl"
            self.spool = Spool(path, self.run_id, self.store.uri, self.spool_reason)

    def _spool_metrics(self, batch: Sequence[Columns], exc: Exception) -> None:
        """Writer-thread hook: a batch the server did not take."""
        with _OFFLINE_LOCK:
            self._go_offline(exc)
        self.spool.metrics([row for chunk in batch for row in chunk.rows()])

    def _offline_or_try(self, send: Callable[[], None]) -> bool:
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


class BackgroundWriter:
    """Writes batches of a run's metric points on a daemon thread; `drain` waits for them and re-raises the first
    write error. The queue is bounded, so a store slower than training slows training down instead of filling
    memory."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        max_pending: int = 8,
        on_error: Callable[[Sequence[Columns], Exception], None] | None = None,
    ):
        self.store, self.run_id = store, run_id
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
                    self.store.write([RunUpdate(self.run_id, metrics=batch)])
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
