"""Which runs a report covers: the experiment, one of its sweeps (a parent run), and that sweep's runs."""

from mlflow import MlflowClient
from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException

from harness.report.errors import ReportError
from harness.report.keys import CONFIG_HASH, ROLE, SWEEP_ROLE
from harness.sweep import parent
from harness.tracking import store

LATEST = "latest"


def open_client(uri: str) -> MlflowClient:
    """A client on an existing store.

    Raises:
        ReportError: the SQLite file does not exist (MLflow would silently create an empty store there).
    """
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ReportError(
            f"no MLflow store at {db}: run a sweep first, or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    return MlflowClient(tracking_uri=uri)


def find_experiment(client: MlflowClient, name: str) -> Experiment:
    """The active experiment called `name`.

    Raises:
        ReportError: no such experiment; the message lists the ones that exist.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ReportError(
            f"unknown experiment {name!r} in {client.tracking_uri} (experiments there: {known})"
        )
    return experiment


def find_sweep(client: MlflowClient, experiment: Experiment, sweep: str = LATEST) -> Run:
    """The sweep's parent run: the latest one started in the experiment, or the run id given.

    Raises:
        ReportError: the experiment holds no sweep, or `sweep` is not a sweep of this experiment.
    """
    if sweep == LATEST:
        return _latest_sweep(client, experiment)
    try:
        run = client.get_run(sweep)
    except MlflowException as exc:
        raise ReportError(f"unknown sweep {sweep!r}: no run with that id in {client.tracking_uri}") from exc
    if run.info.experiment_id != experiment.experiment_id or run.data.tags.get(ROLE) != SWEEP_ROLE:
        raise ReportError(f"run {sweep} is not a sweep (parent run) of experiment {experiment.name!r}")
    return run


def _latest_sweep(client: MlflowClient, experiment: Experiment) -> Run:
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE}` = '{SWEEP_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise ReportError(
            f"experiment {experiment.name!r} holds no sweep: start one with `python -m harness.train -m ...`"
        )
    return found[0]


def sweep_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The sweep's child runs, the latest one per grid point (a re-run sweep supersedes earlier attempts)."""
    latest: dict[str, Run] = {}
    for run in parent.children(client, experiment_id, parent_run_id):  # oldest first: later runs win
        latest[run.data.tags.get(CONFIG_HASH) or run.info.run_id] = run
    return list(latest.values())
