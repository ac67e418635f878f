"""Upload what a run could not send to its tracking server: `python -m harness.sync FILE [FILE ...]`.

The files are the spools written when a tracking server went away mid-run (their paths are printed at the end of
such a run; by default under mlruns/unsent/). Each is replayed into its run: metrics, tags, then the end of the run
with its original status and end time. A replayed file is renamed `*.synced`; running it twice logs nothing twice
(MLflow drops points identical in key, step, timestamp and value).
"""

import argparse
import re
import sys
from pathlib import Path

from harness import failures
from harness.errors import ConfigError, StoreError
from harness.tracking import spool, store, stores
from harness.tracking.port import Columns

RUN_ID = re.compile(r"[0-9a-f]{32}")


def sync_file(path: Path, tracking_uri: str | None = None) -> str:
    """Replay one spool file; returns a one-line summary."""
    header, records = spool.read(path)
    run_id = check_run_id(header.get("run_id"))
    target = stores.open_store(tracking_uri or recorded_server(header), create=False)
    found = target.run(run_id)
    if found is None:
        raise ValueError(f"run {run_id} does not exist in {store.redact(target.uri)}")
    points = 0
    for record in records:
        if "metrics" in record:
            rows = [tuple(row) for row in record["metrics"]]
            target.log_metrics(run_id, Columns.of_rows(rows))
            points += len(rows)
        elif "params" in record:
            raise ValueError(
                f"{path}: params are given when a run is created; a spool of this harness holds none"
            )
        elif "text" in record:
            target.log_text(found.info.artifact_uri, record["text"]["text"], record["text"]["artifact_file"])
        elif "tags" in record:
            target.set_tags(run_id, record["tags"])
        elif "end" in record:
            target.end_run(run_id, record["end"]["status"], end_time=record["end"]["end_time"])
    path.rename(path.with_name(path.name + ".synced"))
    return f"{path}: run {run_id} complete ({points} metric points uploaded)"


def check_run_id(run_id: object) -> str:
    """A spool file is input: its run id must look like one (32 hex digits) before it reaches a query."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"the header's run id {run_id!r} is not an MLflow run id (32 hex digits)")
    return run_id


def recorded_server(header: dict) -> str:
    """The store the spool was meant for: a tracking server (spools are written for servers), or an SQLite file that
    exists (`stores.open_store(create=False)` creates nothing). Any other database URI in a header is refused: connecting
    could create a database where a crafted file points. `--tracking-uri` names another store explicitly."""
    uri = header.get("tracking_uri")
    if not isinstance(uri, str) or not (store.is_remote(uri) or store.sqlite_path(uri) is not None):
        raise ValueError(
            f"the header's tracking URI {uri!r} is neither a tracking server (http:// or https://) nor an SQLite "
            "store; pass --tracking-uri to upload into another store"
        )
    return uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="spool files (mlruns/unsent/<run id>.jsonl)")
    parser.add_argument("--tracking-uri", help="upload there instead of the URI recorded in each file")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            print(sync_file(path, args.tracking_uri))
        except (ConfigError, StoreError, OSError, ValueError) as exc:
            print(f"error: {path}: {failures.describe(exc) or exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
