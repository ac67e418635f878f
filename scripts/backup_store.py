"""Copy a SQLite MLflow store to a new file, consistently, while sweeps may still be writing to it.

    python scripts/backup_store.py sqlite:////abs/path/mlruns/mlflow.db backup.db

When no process has the store open, the database file alone already holds every run (each command checkpoints its
write-ahead log when it ends) and a plain copy of it is a backup. While a sweep or the MLflow UI has it open, recent
runs may still sit in `mlflow.db-wal`: this copy (SQLite's backup API) includes them.
"""

import argparse
import sys
from pathlib import Path

from harness.errors import StoreError
from harness.tracking import sqlite_store, store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="the store's URI, sqlite:///<path> (or the database file's path)")
    parser.add_argument("copy", type=Path, help="the backup's file (must not exist)")
    args = parser.parse_args(argv)
    db = store.sqlite_path(args.store) if "://" in args.store else Path(args.store)
    if db is None:
        print(f"error: {store.redact(args.store)} is not a SQLite store (sqlite:///<path>)", file=sys.stderr)
        return 2
    try:
        sqlite_store.backup(db.resolve(), args.copy)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{db} copied to {args.copy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
