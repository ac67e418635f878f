"""Where runs are stored, as URIs and paths: the tracking URI, the SQLite file, the artifact locations.

Plain functions over strings and local files: no MLflow, no database (harness.tracking.port opens stores).
"""

import os
import posixpath
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.errors import ConfigError
from harness.redaction import redact as redact  # re-exported: the port's adapters name stores with it

URI_VARIABLE = "MLFLOW_TRACKING_URI"
SQLITE_PREFIX = "sqlite://"
MEMORY = ":memory:"
DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB = "mlflow.db"
# Schemes MLflow 3 tracks to (SQLAlchemy databases, tracking servers, Databricks); `dialect+driver://` counts by dialect.
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def default_uri(project_dir: str | os.PathLike) -> str:
    """sqlite:///<absolute launch dir>/mlruns/mlflow.db (absolute: Hydra jobs may run elsewhere)."""
    return f"sqlite:///{_as_database(Path(project_dir).resolve() / DEFAULT_STORE_DIR / DEFAULT_DB)}"


def resolve_uri(configured: str | None, project_dir: str | os.PathLike) -> str:
    """tracking.uri if set, else $MLFLOW_TRACKING_URI, else the project's SQLite store.

    A relative SQLite path (`sqlite:///rel.db`, MLflow's documented `sqlite:///mlflow.db`) is made absolute against
    `project_dir`, the launch directory, so that every process of a sweep opens the one file the user means.
    Never raises: `check_uri` refuses what no store can be made of (the report resolves before it checks).
    """
    uri = configured or os.environ.get(URI_VARIABLE) or default_uri(project_dir)
    return absolute_sqlite(uri, project_dir)


def absolute_sqlite(uri: str, directory: str | os.PathLike) -> str:
    """`uri` with a relative SQLite path made absolute against `directory`; any other URI as it is."""
    parts = _sqlite_parts(uri)
    if parts is None or not parts.path or parts.path.startswith("/") or parts.netloc:
        return uri
    if unquote(parts.path) == MEMORY:
        return uri
    base = _as_database(Path(directory).resolve())
    return f"sqlite:///{base}/{parts.path}" + ("" if parts.query is None else f"?{parts.query}")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI, as SQLAlchemy (and so MLflow) opens it: the path without the query
    (connection options), percent-decoded, a relative one against this process's cwd. None for other stores and
    for a SQLite URI that names no file (`check_uri` refuses those)."""
    parts = _sqlite_parts(uri)
    if parts is None or parts.netloc or not parts.path:
        return None
    database = unquote(parts.path)
    return None if database == MEMORY else Path(os.path.abspath(database))


@dataclass(frozen=True)
class _SqliteParts:
    netloc: str  # what stands between `sqlite://` and the path: a host or a user, which SQLite has not
    path: str  # as typed (percent-encoded): `rel.db`, `/abs/x.db`
    query: str | None  # after the first `?`; None without one


def _sqlite_parts(uri: str) -> _SqliteParts | None:
    """A sqlite URI split as SQLAlchemy's URL parser splits it: the database runs to the first `?` (a `#` is part of
    the file name), the rest is the query. None for any other scheme."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    rest = uri[len(SQLITE_PREFIX) :]
    body, mark, query = rest.partition("?")
    netloc, slash, path = body.partition("/")
    return _SqliteParts(netloc, path if slash else "", query if mark else None)


def _as_database(path: Path) -> str:
    """A local path as the database of a sqlite URI: SQLAlchemy percent-decodes it and ends it at a `?`."""
    return str(path).replace("%", "%25").replace("?", "%3F")


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
    """Refuse, in one line, a URI that names no store MLflow can track to (its credentials redacted).

    Raises:
        ConfigError: an unknown scheme, MLflow's file store (in maintenance mode in MLflow 3), or a SQLite URI that
            names no file, names a host or user, or carries a query.
    """
    key = uri_key(uri)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in ("", "file"):
        raise ConfigError(
            key,
            uri,
            "a database or a server; MLflow's file store is in maintenance mode: use "
            "sqlite:////absolute/path/mlflow.db (the default is mlruns/mlflow.db in the launch directory)",
        )
    if scheme not in URI_SCHEMES:
        raise ConfigError(
            key,
            uri,
            "sqlite:///<path>, postgresql://..., mysql://..., mssql://... or http(s)://<tracking server>",
        )
    _check_sqlite(key, uri)


def _check_sqlite(key: str, uri: str) -> None:
    parts = _sqlite_parts(uri)
    if parts is None:
        return
    if parts.netloc:
        raise ConfigError(
            key,
            uri,
            "sqlite:///<path relative to the launch directory> or sqlite:////<absolute path>: a SQLite file has no "
            "host, user or password",
        )
    if sqlite_path(uri) is None:
        raise ConfigError(
            key,
            uri,
            "a database file (sqlite:///<path>): an in-memory SQLite store is gone when its process ends",
        )
    if parts.query is not None:
        keys = sorted({pair.partition("=")[0] for pair in parts.query.split("&") if pair})
        raise ConfigError(
            key,
            uri,
            f"a SQLite URI without a query (this one sets {', '.join(keys) or 'nothing'}): a SQLite file has no "
            f"users or passwords, and the harness opens it with its own options: sqlite:///{parts.path}",
        )


def uri_key(uri: str) -> str:
    """Where the user set `uri`: $MLFLOW_TRACKING_URI when it is that variable's value (as resolve_uri made it),
    else tracking.uri."""
    variable = os.environ.get(URI_VARIABLE)
    if variable and uri in (variable, absolute_sqlite(variable, Path.cwd())):
        return URI_VARIABLE
    return "tracking.uri"


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
