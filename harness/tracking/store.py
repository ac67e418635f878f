"""Where runs are stored, as URIs and paths: the tracking URI, the SQLite file, the artifact locations.

Plain functions over strings and local files: no MLflow, no database (harness.tracking.port opens stores).
"""

import os
import posixpath
import re
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from harness.errors import ConfigError
from harness.tracking.record import redact

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB = "mlflow.db"
# Schemes MLflow 3 tracks to (SQLAlchemy databases, tracking servers, Databricks); `dialect+driver://` counts by dialect.
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


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


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


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


def experiment_location(uri: str, name: str) -> str | None:
    """Where a new experiment's artifacts go: `<db dir>/artifacts/<name>` as a file URI on SQLite; None (the server's
    default) elsewhere."""
    root = artifact_root(uri)
    return None if root is None else Path(root, re.sub(r"[^\w.-]+", "_", name)).as_uri()


def append_to_uri_path(location: str, *parts: str) -> str:
    """`location` with `parts` appended to its path, as mlflow.utils.uri.append_to_uri_path does (MLflow's own for
    anything but a plain absolute `file:` URI)."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file" and not (parsed.netloc or parsed.params or parsed.query or parsed.fragment):
        if parsed.path.startswith("/"):
            return "file://" + posixpath.join(parsed.path, *parts)
    from mlflow.utils.uri import append_to_uri_path as mlflow_append

    return mlflow_append(location, *parts)
