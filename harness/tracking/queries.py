"""Reading sweeps back: a child run's outcome, and the latest run per grid point.

Pure functions over the runs a Store returns (harness.tracking.port.StoredRun), shared by the sweep (resume, the
end-of-sweep counts) and the report, so both read the store the same way.
"""

from harness.tracking import schema
from harness.tracking.port import StoredRun


def child_outcome(run: StoredRun) -> schema.ChildOutcome:
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


def latest_per_grid_point(runs: list[StoredRun]) -> dict[str, StoredRun]:
    """One run per grid point (config hash; the run id when it has none): the latest started, so re-runs replace
    the failures they repeat."""
    latest: dict[str, StoredRun] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        latest[run.data.tags.get(schema.CONFIG_HASH) or run.info.run_id] = run
    return latest
