"""Where runs are stored: the tracking URI, the experiment, and the artifact location.

Imports MLflow lazily, so runs with tracking disabled never pay for it.
"""

import contextlib
import functools
import logging
import os
import re
import shutil
import sqlite3
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from harness import failures
from harness.errors import ConfigError
from harness.failures import StoreError
from harness.tracking import locks

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB = "mlflow.db"
# Schemes MLflow 3 tracks to (SQLAlchemy databases, tracking servers, Databricks); `dialect+driver://` counts by dialect.
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")

last_location: str | None = None  # the store this process used last: named in one-line failures


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


def local_artifact_path(artifact_uri: str) -> Path | None:
    """The directory of a `file:` artifact URI (as MLflow's local_file_uri_to_path reads it); None for any other."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def write_local_text(artifact_uri: str, text: str, artifact_file: str) -> bool:
    """Write `text` as `artifact_file` under a local (`file:`) artifact URI, as MLflow's local artifact repository
    stores it; False (nothing written) for any other URI."""
    directory = local_artifact_path(artifact_uri)
    if directory is None:
        return False
    path = directory / artifact_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def client(uri: str, create: bool = True) -> "MlflowClient":
    """An MlflowClient on `uri`, checked first so that a store that cannot work fails in one line, at once.

    A SQLite store is created (or its schema upgraded) under a file lock, so that concurrent launches never race
    in MLflow's migrations; an existing database is checked before MLflow touches it (MLflow would silently turn a
    zero-byte file into a new store). A server is asked whether it answers.

    Args:
        uri: the tracking URI (see `resolve_uri`).
        create: False: a SQLite database that does not exist is an error, not a new store (`harness.sync`).

    Raises:
        ConfigError: a URI MLflow cannot use, or a tracking server that does not answer.
        StoreError: a SQLite store that is missing (create=False), not writable, corrupt, or half-built.
    """
    from mlflow import MlflowClient

    global last_location
    check_uri(uri)
    db = sqlite_path(uri)
    last_location = str(db) if db is not None else redact(uri)
    if db is not None:
        db = db.resolve()
        last_location = str(db)
        return _sqlite_client(uri, str(db), create)
    if is_remote(uri):
        # MLflow retries a dead server with exponential backoff for minutes; a few seconds tell us enough.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        check_server(uri)
    return MlflowClient(tracking_uri=uri)


def check_uri(uri: str) -> None:
    """Refuse, in one line, a URI that names no store MLflow can track to.

    Raises:
        ConfigError: an unknown scheme, or MLflow's file store (in maintenance mode in MLflow 3).
    """
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("", "file"):
        raise ConfigError(
            "tracking.uri",
            redact(uri),
            "a database or a server; MLflow's file store is in maintenance mode: use "
            "sqlite:////absolute/path/mlflow.db (the default is mlruns/mlflow.db in the launch directory)",
        )
    if scheme not in URI_SCHEMES:
        raise ConfigError(
            "tracking.uri",
            redact(uri),
            "sqlite:///<path>, postgresql://..., mysql://..., mssql://... or http(s)://<tracking server>",
        )


def redact(uri: str) -> str:
    """The URI without a password (printed and recorded URIs must not leak one)."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


@functools.cache
def _sqlite_client(uri: str, db: str, create: bool) -> "MlflowClient":
    """Check, create or upgrade the database under a lock beside it, once per process (jobs share it)."""
    from mlflow import MlflowClient

    if not failures.debug():
        # MLflow logs every database error with its traceback before raising it; the harness says it in one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    path = Path(db)
    if not create and not path.is_file():
        raise StoreError(f"{path} does not exist: no MLflow store there (nothing created)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store's directory {path.parent}: {exc.strerror}") from exc
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(
            f"{path.parent} is not writable (read-only filesystem or permissions): an SQLite store needs to write "
            "its database and journal files there; choose another tracking.uri or make it writable"
        )
    with locks.store_lock(path):
        check_sqlite_file(path)
        mlflow_client = MlflowClient(tracking_uri=uri)
        mlflow_client._tracking_client.store  # noqa: B018 - creates the tables (migrations) inside the lock
        _write_ahead_log(db)
    return mlflow_client


def check_sqlite_file(db: Path) -> None:
    """Refuse a database MLflow would misuse: zero bytes (it would recreate it), not SQLite, not MLflow's, or
    left half-migrated by a creation or upgrade that was interrupted.

    Raises:
        StoreError: naming the file and what to do.
    """
    move_away = f"move {db} away to start a new store there, or point tracking.uri at the right file"
    if not db.exists():
        return
    if db.stat().st_size == 0:
        raise StoreError(f"{db} is empty (0 bytes), not an MLflow store: {move_away}")
    with open(db, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise StoreError(f"{db} is not an SQLite database (corrupt?): {move_away}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=20)) as connection:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
    except sqlite3.DatabaseError as exc:
        if any(word in str(exc) for word in ("not a database", "malformed")):
            raise StoreError(f"{db} is corrupt ({exc}): {move_away}") from exc
        raise StoreError(f"{db} cannot be opened ({exc}){_space_left(db)}") from exc
    if any(name.startswith("_alembic_tmp_") for name in tables):
        raise StoreError(
            f"{db} was left half-built by an interrupted creation or upgrade (tables _alembic_tmp_*): {move_away}"
        )
    if tables and "alembic_version" not in tables:
        raise StoreError(f"{db} is an SQLite database but not an MLflow store: {move_away}")


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


def _space_left(db: Path) -> str:
    """', the device is full' when it is: SQLite then says only "disk I/O error"."""
    free = shutil.disk_usage(db.parent).free
    return f": the device of {db.parent} is full ({free} bytes free); free some space" if free < 2**20 else ""


def _write_ahead_log(db: str) -> None:
    """Put the SQLite file in WAL mode (persistent, once per process): readers (the UI, reports) no longer block
    writers, and each commit costs less; on this machine a short run's fixed cost fell from ~70 to ~58 ms."""
    with contextlib.closing(sqlite3.connect(db, timeout=20)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def experiment_location(uri: str, name: str) -> str | None:
    """Where a new experiment's artifacts go: `<db dir>/artifacts/<name>` as a file URI on SQLite; None (the server's
    default) elsewhere."""
    root = artifact_root(uri)
    return None if root is None else Path(root, re.sub(r"[^\w.-]+", "_", name)).as_uri()


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
    location = experiment_location(mlflow_client.tracking_uri, name)
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Created concurrently by another process: use theirs.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
