"""Upload what a run could not send to its tracking server: `python -m harness.sync FILE [FILE ...]`.

The files are the spools written when a tracking server went away mid-run (their paths are printed at the end of
such a run; by default under mlruns/unsent/). Each is replayed into its run: metrics, tags, then the end of the run
with its original status and end time. A replayed file is renamed `*.synced`; running it twice logs nothing twice
(MLflow drops points identical in key, step, timestamp and value).

A spool may only end a RUNNING run or add to it, never re-open or re-decide an ended one: a file that is not what
the harness writes (harness.tracking.spool.read), or that disagrees with how the store says the run ended, is
refused as a whole in one line and nothing of it is uploaded; the other files given still sync.
"""

import argparse
import os
import sys
from pathlib import Path

from harness import failures
from harness.errors import ConfigError, StoreError
from harness.redaction import REDACTED
from harness.tracking import schema, spool, store, stores
from harness.tracking.port import Columns, Store, StoredRun


def sync_file(path: Path, tracking_uri: str | None = None) -> str:
    """Replay one spool file; returns a one-line summary.

    Raises:
        SpoolError: a bad line, or a spool the store's run cannot take (nothing is uploaded).
        ConfigError, StoreError, OSError: the store cannot be used.
    """
    header, records = spool.read(path)
    target = stores.open_store(tracking_uri or recorded_server(header), create=False)
    found = target.run(header.run_id)
    if found is None:
        raise ValueError(f"run {header.run_id} does not exist in {store.redact(target.uri)}")
    check_fits(found, records)
    points = replay(target, found, records)
    path.rename(path.with_name(path.name + ".synced"))
    return f"{path}: run {header.run_id} complete ({points} metric points uploaded)"


def check_fits(found: StoredRun, records: list[spool.Record]) -> None:
    """Refuse a spool that would change how an ended run ended, or end a run before it started.

    An ended run takes the spool's metrics and texts (a point is only ever added); its tags and end only when the
    spool ends it as the store says it ended (the same file synced again).
    """
    end = next((r for r in records if isinstance(r, spool.End)), None)
    run_id, status = found.info.run_id, found.info.status
    if end is not None and found.info.start_time is not None and end.end_time < found.info.start_time:
        raise spool.SpoolError(f"the spool ends run {run_id} at {end.end_time}, before it started")
    if status == schema.RUNNING or (end is not None and end.status == status):
        return
    if end is not None:
        raise spool.SpoolError(
            f"run {run_id} ended {status} in the store and this spool ends it {end.status}: a spool may only end a "
            "RUNNING run; nothing was uploaded"
        )
    if any(isinstance(r, spool.Tags) for r in records):
        raise spool.SpoolError(
            f"run {run_id} ended {status} in the store and this spool, which does not end it, sets tags on it (they "
            "would change its outcome); nothing was uploaded"
        )


def replay(target: Store, found: StoredRun, records: list[spool.Record]) -> int:
    """Write the records in order; returns the number of metric points. An ended run is not ended again."""
    run_id, points = found.info.run_id, 0
    for record in records:
        if isinstance(record, spool.Metrics):
            target.log_metrics(run_id, Columns.of_rows(record.rows))
            points += len(record.rows)
        elif isinstance(record, spool.Text):
            target.log_text(found.info.artifact_uri, record.text, record.artifact_file)
        elif isinstance(record, spool.Tags):
            target.set_tags(run_id, record.tags)
        elif found.info.status == schema.RUNNING:
            target.end_run(run_id, record.status, end_time=record.end_time)
    return points


def recorded_server(header: spool.Header) -> str:
    """The store the spool was meant for: a tracking server (spools are written for servers), or an SQLite file that
    exists (`stores.open_store(create=False)` creates nothing). Any other database URI in a header is refused: connecting
    could create a database where a crafted file points. `--tracking-uri` names another store explicitly.

    A header's URI is written without its credentials: $MLFLOW_TRACKING_URI supplies them when it is that URI.
    """
    uri = header.tracking_uri
    if not (store.is_remote(uri) or store.sqlite_path(uri) is not None):
        raise ValueError(
            f"the header's tracking URI {uri!r} is neither a tracking server (http:// or https://) nor an SQLite "
            "store; pass --tracking-uri to upload into another store"
        )
    if REDACTED in uri:
        variable = os.environ.get(store.URI_VARIABLE, "")
        if variable and store.redact(variable) == uri:
            return variable
        raise ValueError(
            f"the spool was written for {uri}, whose credentials it does not keep: pass --tracking-uri with them "
            f"(or set {store.URI_VARIABLE})"
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
            print(f"error: {path}: {store.redact(_one_line(exc))}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _one_line(exc: Exception) -> str:
    """A spool's own refusal as it is (its text may quote the file, which must not be read as a store's error)."""
    if isinstance(exc, spool.SpoolError):
        return str(exc)
    said = failures.describe(exc)
    if said:
        return said
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
