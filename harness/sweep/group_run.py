"""One batched piece's runs in the launching process: created when the piece is handed out, written as its columns
arrive, ended with its results. Through the tracking port: a RunGroup where the store writes many runs at once, one
tracker per trial otherwise (a server: each keeps its spool)."""

import logging
import traceback

from harness.job_run import end_run, new_run, open_run, record_result
from harness.sweep import progress
from harness.sweep.pieces import Piece
from harness.sweep.run import objective
from harness.tracking import FAILED, KILLED, schema, stores
from harness.tracking.group import RunGroup

log = logging.getLogger(__name__)


class GroupRun:
    """One piece's life in the launcher: runs created, metrics written as they come, runs ended, Hydra told."""

    def __init__(self, piece: Piece, hooks, context):
        self.piece, self.hooks, self.context = piece, hooks, context  # context(job): its JobContext
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

    def log_columns(self, trial: int, steps: list[int], columns: dict) -> None:
        self.trackers[trial].log_columns(steps, columns)

    def finish(self, results: list) -> dict[int, object]:
        """Final metrics and status of each trial, the runs ended (one write on SQLite), Hydra told."""
        for tracker, result, plan in zip(self.trackers, results, self.piece.plans):
            record_result(tracker, result, plan.run_name)
        self._flush()
        jobs = self.piece.jobs
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
        log.error("batched group of %d trials %s: %s", len(self.piece.jobs), outcome, error)
        for tracker in self.trackers:
            end_run(tracker, status, error, details)
        self._flush()
        if self.hooks.state is not None:
            ended = [(outcome, list(job.overrides), error) for job in self.piece.jobs]
            progress.report_many(self.hooks.state, ended)
        return self._tell(None for _ in self.piece.jobs)

    def kill(self, reason: str) -> None:
        """Interrupted: every run ends KILLED with the steps it recorded."""
        for tracker in self.trackers:
            end_run(tracker, KILLED, reason)
        self._flush()

    def _tell(self, values) -> dict[int, object]:
        told = {}
        for job, value in zip(self.piece.jobs, values):
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
