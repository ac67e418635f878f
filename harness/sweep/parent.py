"""The sweep's parent run in MLflow: created or continued before any job, ended with the outcome counts."""

import time
from collections import Counter
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus, RunTag

SWEEP_ROLE = "sweep"


@dataclass(frozen=True)
class ChildOutcome:
    run_id: str
    config_hash: str
    status: str  # completed | diverged | failed | killed
    overrides: str
    error: str
    final_val_loss: float | None


def find_parent(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The latest parent run of this sweep (same key), whatever its status."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`harness.role` = '{SWEEP_ROLE}' and tags.`harness.sweep_key` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def create_parent(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    tags = {"harness.role": SWEEP_ROLE, "mlflow.runName": name, **tags}
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """Every child run of the parent, oldest first (paged: sweeps can hold thousands)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def outcome(run: Run) -> ChildOutcome:
    status = run.data.tags.get("harness.status", "")
    if run.info.status in ("FAILED", "KILLED") or status not in ("completed", "diverged"):
        status = {"KILLED": "killed"}.get(
            run.info.status, "failed" if run.info.status != "RUNNING" else "running"
        )
    return ChildOutcome(
        run_id=run.info.run_id,
        config_hash=run.data.tags.get("harness.config_hash", ""),
        status=status,
        overrides=run.data.tags.get("harness.overrides", ""),
        error=run.data.tags.get("harness.error", ""),
        final_val_loss=run.data.metrics.get("final/val_loss"),
    )


def latest_per_grid_point(runs: list[Run]) -> dict[str, ChildOutcome]:
    """One outcome per config hash: the latest run (re-runs replace failures)."""
    return {o.config_hash: o for o in map(outcome, runs)}


def mark_stale_runs_killed(client: MlflowClient, runs: list[Run]) -> int:
    """Children still RUNNING when a sweep starts were left by a killed sweep: end them KILLED."""
    stale = [r for r in runs if r.info.status == "RUNNING"]
    for run in stale:
        client.log_batch(
            run.info.run_id,
            tags=[
                RunTag("harness.status", "killed"),
                RunTag("harness.error", "stale: its sweep stopped before the run ended"),
            ],
        )
        client.set_terminated(run.info.run_id, "KILLED")
    return len(stale)


def reopen(client: MlflowClient, parent_run_id: str) -> None:
    client.update_run(parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def finish(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[ChildOutcome]:
    """Count the outcomes (latest run per grid point), tag the parent with them and end it FINISHED."""
    outcomes = list(latest_per_grid_point(children(client, experiment_id, parent_run_id)).values())
    counts = Counter(o.status for o in outcomes)
    tags = {
        f"harness.jobs.{status}": str(counts.get(status, 0)) for status in ("completed", "diverged", "failed")
    }
    tags["harness.jobs.killed"] = str(counts.get("killed", 0))
    tags["harness.jobs.total"] = str(len(outcomes))
    client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(parent_run_id, "FINISHED", end_time=int(time.time() * 1000))
    return outcomes
