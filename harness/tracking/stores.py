"""Opening a store: which adapter of the tracking port serves a URI, chosen once per store and process.

A SQLite file at the schema revision the SQL adapter was written for gets harness.tracking.sqlite_store (no MLflow
import); everything else, MLflow's client (harness.tracking.mlflow_store). A new SQLite store is made by MLflow's
migrations first, under a file lock, and put in place whole; an existing one at another revision than the installed
MLflow's is refused, never migrated. At exit, every store this process opened is closed, and a SQLite store it wrote
to is checkpointed: the database file alone then holds every run (a copy of it is a backup).
"""

import atexit
import os
from pathlib import Path

from harness.errors import ConfigError
from harness.tracking import mlflow_store, sqlite_store, store
from harness.tracking.port import Store

ADAPTERS = ("sqlite", "mlflow")
ADAPTER_VARIABLE = "HARNESS_STORE_ADAPTER"  # `mlflow`: every store through MlflowClient (the escape hatch)


def open_store(
    uri: str, create: bool = True, read_only: bool = False, adapter: str | None = None
) -> Store | None:
    """The store at `uri`, through the SQL adapter where it can write (or read) the file, else through MLflow.

    Args:
        uri: a tracking URI (see `store.resolve_uri`).
        create: a SQLite file that does not exist becomes a new store (MLflow's migrations, under a file lock);
            False: it is a StoreError.
        read_only: open for reading only: no file is created, migrated or locked (the report); a store at another
            schema revision is read by SQL as long as it has the columns read.
        adapter: "sqlite" (None where it cannot be used: no MLflow is imported), "mlflow", or None: sqlite where
            it can, else mlflow ($HARNESS_STORE_ADAPTER=mlflow forces MLflow).

    Raises:
        ConfigError: a URI MLflow cannot use, or a tracking server that does not answer.
        StoreError: a SQLite file that is missing (create=False or read_only), empty, corrupt, half-built, or in a
            directory that cannot be written.
    """
    store.check_uri(uri)
    adapter = adapter or os.environ.get(ADAPTER_VARIABLE) or None
    if adapter not in (None, *ADAPTERS):
        raise ConfigError(ADAPTER_VARIABLE, adapter, "sqlite or mlflow (unset: sqlite where it can)")
    db = store.sqlite_path(uri)
    key = (uri, create, read_only, adapter, os.getpid(), _identity(db))
    if key in _OPEN:
        return _OPEN[key]
    found: Store | None = None
    if db is not None and adapter != "mlflow":
        found = sqlite_store.open_file(uri, db, create=create, read_only=read_only)
        if found is None and not db.exists():  # a new store: MLflow's migrations make it, then SQL writes it
            mlflow_store.create_sqlite(uri, db)
            found = sqlite_store.open_file(uri, db, create=create, read_only=read_only)
    if found is None and adapter != "sqlite":
        found = mlflow_store.MlflowStore.open(uri, create=create, read_only=read_only)
    if found is not None:
        _OPEN[(*key[:-1], _identity(db))] = found
    return found


# Stores opened by this process (jobs of a sweep share one). A SQLite file is known by its inode: a store moved
# away and created anew at the same path is opened anew.
_OPEN: dict[tuple, Store] = {}


@atexit.register
def close_all() -> None:
    """Close this process's stores at exit. A SQLite store written to is checkpointed first (its write-ahead log
    folded into the database file and truncated, without waiting on a concurrent process: what that process still
    holds, it folds when it closes), so that once every process has exited the file alone holds everything and no
    `-wal` is left beside it. Stores a forked process inherited are its parent's to close."""
    for key, found in list(_OPEN.items()):
        if key[4] == os.getpid():
            found.close()
            del _OPEN[key]


def _identity(db: Path | None) -> tuple[int, int] | None:
    if db is None:
        return None
    try:
        found = db.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino
