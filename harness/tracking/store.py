"""Where runs are stored: the tracking URI, the experiment, and the artifact location.

Imports MLflow lazily, so runs with tracking disabled never pay for it.
"""

import functools
import os
import re
import sqlite3
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB = "mlflow.db"


def default_uri(project_dir: str | os.PathLike) -> str:
    """sqlite:///<absolute launch dir>/mlruns/mlflow.db (absolute: Hydra jobs may run elsewhere)."""
    return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_STORE_DIR / DEFAULT_DB}"


def resolve_uri(configured: str | None, project_dir: str | os.PathLike) -> str:
    """tracking.uri if set, else $MLFLOW_TRACKING_URI, else the project's SQLite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(project_dir)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, or None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite database (`<db dir>/artifacts`); a server decides its own (None)."""
    db = sqlite_path(uri)
    return None if db is None else str(db.parent / "artifacts")


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def client(uri: str) -> "MlflowClient":
    """An MlflowClient on `uri`: creates a SQLite file's directory; checks that a server answers, at once.

    Raises:
        ConfigError: a tracking server that does not answer (instead of MLflow's minutes of retries).
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        _write_ahead_log(str(db))
    if is_remote(uri):
        # MLflow retries a dead server with exponential backoff for minutes; a few seconds tell us enough.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        check_server(uri)
    return MlflowClient(tracking_uri=uri)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when no tracking server answers at `uri`."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        from harness.tracking.record import redact  # credentials never reach the terminal

        raise ConfigError(
            "tracking.uri",
            redact(uri),
            f"a running MLflow tracking server (none answered: {reason}; `make server` starts one)",
        ) from None


@functools.cache
def _write_ahead_log(db: str) -> None:
    """Put the SQLite file in WAL mode (persistent, once per process): readers (the UI, reports) no longer block
    writers, and each commit costs less; on this machine a short run's fixed cost fell from ~70 to ~58 ms."""
    with sqlite3.connect(db, timeout=20) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def ensure_experiment(mlflow_client: "MlflowClient", name: str) -> str:
    """The id of experiment `name`, creating it with an absolute artifact location if it does not exist.

    Call this once per sweep in the launching process; jobs get the id (racing creations lose runs, FACTS.md).
    """
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(mlflow_client.tracking_uri)
    location = None if root is None else Path(root, re.sub(r"[^\w.-]+", "_", name)).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Created concurrently by another process: use theirs.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
