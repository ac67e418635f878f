"""Where a report's data comes from: a read-only view of an MLflow store, through the tracking port.

A SQLite file is read by SQL (harness.tracking.sqlite_store, read-only: no MLflow import, no schema migration, no
lock held against a sweep that is writing, histories in one query per chunk of runs); any other store through
MLflow's client. Both answer with the port's runs (MLflow's `Run` shape), so `queries.latest_per_grid_point` and
`schema.outcome` apply to either.
"""

from harness.errors import StoreError
from harness.tracking import schema, store, stores
from harness.tracking.port import Store

LATEST = "latest"


class ReportError(Exception):
    """The report cannot be made: the message says why and, where it can, what to do (shown as one line)."""


def open_source(uri: str) -> Store:
    """The store at `uri`, opened for reading.

    Raises:
        ReportError: the SQLite file is missing, empty, not a database, or holds no MLflow store (nothing is created
            or changed to find out).
    """
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ReportError(
            f"no MLflow store at {db}: run a sweep first, or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    try:
        return stores.open_store(uri, read_only=True)
    except StoreError as exc:
        raise ReportError(str(exc)) from None


def find_sweep(source, experiment: str, sweep: str = LATEST):
    """(experiment, parent run) of the sweep: the latest of the experiment, or the run id given.

    Raises:
        ReportError: unknown experiment (the message lists those that exist), no sweep, or `sweep` is not a sweep
            (parent run) of this experiment.
    """
    found = source.experiment(experiment)
    if found is None:
        known = ", ".join(source.experiment_names()) or "none"
        raise ReportError(
            f"unknown experiment {experiment!r} in {source.location} (experiments there: {known})"
        )
    if sweep == LATEST:
        parent = source.latest_parent(found.experiment_id)
        if parent is None:
            raise ReportError(
                f"experiment {experiment!r} holds no sweep: start one with `python -m harness.train -m ...`"
            )
        return found, parent
    parent = source.run(sweep)
    if parent is None:
        raise ReportError(f"unknown sweep {sweep!r}: no run with that id in {source.location}")
    if (
        parent.info.experiment_id != found.experiment_id
        or parent.data.tags.get(schema.ROLE) != schema.ROLE_SWEEP
    ):
        raise ReportError(f"run {sweep} is not a sweep (parent run) of experiment {experiment!r}")
    return found, parent
