"""One batched piece's runs in the launching process: created when the piece is handed out, written as its columns
arrive, ended with its results. Through the tracking port: a RunGroup where the store writes many runs at once, one
tracker per trial otherwise (a server: each keeps its spool)."""

import logging
import traceback

from harness.job_run import attach_run, end_run, new_run, open_run, record_result
from harness.sweep import progress
from harness.sweep.pieces import Piece
from harness.sweep.run import objective
from harness.tracking import FAILED, KILLED, schema, stores
from harness.tracking.group import RunGroup

log = logging.getLogger(__name__)


class GroupRun:
    """One piece's life in the launcher: runs created, metrics written as they come, runs ended, Hydra told."""

    def __init__(self, piece: Piece | None, hooks, context, jobs=(), names=()):
        self.piece, self.hooks, self.context = piece, hooks, context  # context(job): its JobContext
        # The piece's jobs and their run names: all its record needs once its runs exist.
        self.jobs = piece.jobs if piece is not None else tuple(jobs)
        self.names = [plan.run_name for plan in piece.plans] if piece is not None else list(names)
        self.trackers: list = []
        self.group: RunGroup | None = None

    def start(self) -> dict[int, object] | None:
        """Hydra's on_job_start per trial, then the runs; when they cannot start, every trial failed: their values."""
        jobs, plans = self.piece.jobs, self.piece.plans
        self.hooks.open_sweep()  # (after the first pieces went to the workers: they train while it opens)
        for job in jobs:
            self.hooks.on_job_start(job)
        engine_tags = {schema.ENGINE: schema.ENGINE_BATCHED, schema.BATCH_TRIALS: str(len(jobs))}
        contexts = [self.context(job) for job in jobs]  # after open_sweep: they name the parent run
        try:
            parent = contexts[0].parent
            store = (
                stores.open_store(parent.uri) if parent is not None and plans[0].tracking.enabled else None
            )
            if store is not None and store.bulk:
                self.group = RunGroup(store, parent.experiment_id, parent.run_id)
                self.trackers = self.group.create(
                    [new_run(p, c, engine_tags) for p, c in zip(plans, contexts)]
                )
            else:
                self.trackers = [open_run(p, c, engine_tags) for p, c in zip(plans, contexts)]
        except Exception as exc:  # noqa: BLE001 - the store refused: every trial is a failed job, the sweep goes on
            return self.fail(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return None

    @classmethod
    def attached(cls, jobs, names: list[str], hooks, runs: list[tuple[str, str | None]]) -> "GroupRun":
        """A piece's runs as an earlier process created them (a detached cluster sweep, harness.sweep.detached):
        its jobs, their run names, and each trial's (run id, artifact URI)."""
        self = cls(None, hooks, None, jobs, names)
        parent = hooks.state.parent
        store = stores.open_store(parent.uri)
        if store.bulk:
            self.group = RunGroup(store, parent.experiment_id, parent.run_id)
            self.trackers = self.group.attach(runs)
        else:
            self.trackers = [attach_run(store, parent.experiment_id, run, hooks.project_dir) for run in runs]
        return self

    def runs(self) -> list[tuple[str, str | None]]:
        """Each trial's (run id, artifact URI): what `attached` takes."""
        return [(t.run_id, t.artifact_uri) for t in self.trackers]

    def record(self, event) -> dict[int, object]:
        """A pool's event for this piece (harness.sweep.workers: Columns, Done, Failed); the values of the jobs it
        ended."""
        from harness.sweep import workers

        if isinstance(event, workers.Columns):
            self.log_columns(event.trial, event.steps, event.columns)
            return {}
        if isinstance(event, workers.Done):
            return self.finish(event.results)
        return self.fail(event.error, event.details, event.killed)

    def flush(self) -> None:
        """Write what the runs hold so far (their piece goes on training)."""
        if self.group is not None:
            self.group.flush()
        else:
            for tracker in self.trackers:
                tracker.flush()

    def log_columns(self, trial: int, steps: list[int], columns: dict) -> None:
        self.trackers[trial].log_columns(steps, columns)

    def finish(self, results: list) -> dict[int, object]:
        """Final metrics and status of each trial, the runs ended (one write on SQLite), Hydra told."""
        for tracker, result, name in zip(self.trackers, results, self.names):
            record_result(tracker, result, name)
        self._flush()
        jobs = self.jobs
        if self.hooks.state is not None:
            progress.report_many(
                self.hooks.state, [(r.status, list(j.overrides), "") for j, r in zip(jobs, results)]
            )
        return self._tell(_value(r) for r in results)

    def fail(self, error: str, details: str | None, killed: bool = False) -> dict[int, object]:
        """The whole piece failed: every trial is a failed job (its steps so far kept), the sweep goes on. `killed`:
        ended from outside (a cluster job cancelled or timed out): the runs end KILLED, and the same sweep command
        trains them again."""
        status, outcome = (KILLED, schema.KILLED_OUTCOME) if killed else (FAILED, schema.FAILED_OUTCOME)
        log.error("batched group of %d trials %s: %s", len(self.jobs), outcome, error)
        for tracker in self.trackers:
            end_run(tracker, status, error, details)
        self._flush()
        if self.hooks.state is not None:
            ended = [(outcome, list(job.overrides), error) for job in self.jobs]
            progress.report_many(self.hooks.state, ended)
        return self._tell(None for _ in self.jobs)

    def kill(self, reason: str) -> None:
        """Interrupted: every run ends KILLED with the steps it recorded."""
        for tracker in self.trackers:
            end_run(tracker, KILLED, reason)
        self._flush()

    def _tell(self, values) -> dict[int, object]:
        told = {}
        for job, value in zip(self.jobs, values):
            told[job.index] = value
            self.hooks.on_job_end(job, value)
        return told

    def _flush(self) -> None:
        if self.group is not None:
            self.group.flush()


def _value(result) -> object:
    """A trial's return value: its objective, or where successive halving stopped it."""
    if result.status == schema.PRUNED:
        return schema.Pruned(result.rung, result.steps)
    return objective(result.final_val.get("loss"))


def record_event(event, running: dict[int, GroupRun]) -> dict[int, object]:
    """A pool's Columns, Done or Failed event recorded in its piece's runs (`running`: piece -> GroupRun; an ended
    piece leaves it); the values of the jobs it ended."""
    from harness.sweep import workers

    run = running.get(event.piece)
    if run is None:  # its runs could not be created: the trials are already failed jobs
        return {}
    if not isinstance(event, workers.Columns):
        del running[event.piece]
    return run.record(event)
