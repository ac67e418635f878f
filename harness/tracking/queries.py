"""Reading sweeps back from MLflow: a sweep's parent run, its child runs, and the latest run per grid point.

Shared by the sweep (resume, the end-of-sweep counts) and the report, so both read the store the same way.
"""

from typing import TYPE_CHECKING

from harness.tracking import schema

if TYPE_CHECKING:  # the report reads SQLite stores without importing MLflow (it costs seconds)
    from mlflow import MlflowClient
    from mlflow.entities import Run

PAGE = 1000  # MLflow's search_runs page size limit


def find_parent(client: "MlflowClient", experiment_id: str, sweep_key: str) -> "Run | None":
    """The latest parent run of the sweep with this key, whatever its status."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{schema.ROLE}` = '{schema.ROLE_SWEEP}' and tags.`{schema.SWEEP_KEY}` = '{sweep_key}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def latest_parent(client: "MlflowClient", experiment_id: str) -> "Run | None":
    """The most recently started sweep (parent run) of the experiment."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{schema.ROLE}` = '{schema.ROLE_SWEEP}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def children(client: "MlflowClient", experiment_id: str, parent_run_id: str) -> "list[Run]":
    """Every child run of the parent, oldest first (paged: sweeps can hold thousands)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{schema.PARENT_RUN_ID}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=PAGE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_outcome(run: "Run") -> schema.ChildOutcome:
    tags = run.data.tags
    return schema.ChildOutcome(
        run_id=run.info.run_id,
        config_hash=tags.get(schema.CONFIG_HASH, ""),
        outcome=schema.outcome(run.info.status, tags),
        overrides=tags.get(schema.OVERRIDES, ""),
        error=tags.get(schema.ERROR, ""),
        final_val_loss=run.data.metrics.get(schema.FINAL_VAL_LOSS),
        start_time=run.info.start_time,
    )


def latest_per_grid_point(runs: "list[Run]") -> "dict[str, Run]":
    """One run per grid point (config hash; the run id when it has none): the latest started, so re-runs replace
    the failures they repeat."""
    latest: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[run.data.tags.get(schema.CONFIG_HASH) or run.info.run_id] = run
    return latest
