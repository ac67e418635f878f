"""The report's command line: `python scripts/report.py --experiment NAME [--sweep ID|latest] [--tracking-uri URI]
[--out DIR] [--no-log]`.

Prints the path of report.html on stdout (so that `open "$(python scripts/report.py ...)"` works) and what it did
on stderr. Problems a user can fix (unknown experiment, sweep still running...) end with one line and exit 1.
"""

import argparse
import re
import sys
import time
from pathlib import Path

import matplotlib
from mlflow.exceptions import MlflowException

from harness.report import load, publish
from harness.report.build import write_report
from harness.report.errors import ReportError
from harness.report.sweeps import LATEST
from harness.tracking import store

REPORTS_DIR = "reports"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="report.py", description="Compare the optimizers of a sweep: figures, tables, report.html."
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    parser.add_argument("--sweep", default=LATEST, help="the sweep's parent run id, or 'latest' (default)")
    parser.add_argument(
        "--tracking-uri",
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: reports/<experiment>/<sweep run id>/)"
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not attach the report to the sweep's MLflow run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns the exit status (0 ok, 1 a problem explained on stderr)."""
    args = parse(argv)
    matplotlib.use("Agg")  # a command line never needs a window: no GUI backend, works on servers and in CI
    uri = args.tracking_uri or store.resolve_uri(None, Path.cwd())
    try:
        html = run(args, uri)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:
        print(f"error: MLflow store {uri}: {exc.message}", file=sys.stderr)
        return 1
    print(html)
    return 0


def run(args: argparse.Namespace, uri: str) -> Path:
    """Find, load, write and (unless --no-log) publish the report; returns the path of report.html."""
    started = time.perf_counter()
    ref = load.find(uri, args.experiment, args.sweep)
    out = args.out or default_out(args.experiment, ref.run_id)
    data = load.load(ref, out / "cache")
    elapsed = time.perf_counter() - started
    _say(f"{len(data.runs)} runs, {len(data.metrics):,} metric points from {data.source} ({elapsed:.1f} s)")
    report = write_report(data, out)
    for answer in report.answers:
        _say(answer)
    if not args.no_log:
        _publish(ref, report)
    _say(f"report written in {time.perf_counter() - started:.1f} s")
    return report.html.resolve()


def default_out(experiment: str, run_id: str) -> Path:
    """reports/<experiment>/<sweep run id>/ under the current directory (the name made safe for a path)."""
    return Path(REPORTS_DIR) / re.sub(r"[^\w.-]+", "_", experiment) / run_id


def _publish(ref: load.SweepRef, report) -> None:
    try:
        publish.log_report(ref.client, ref.run_id, report)
    except (MlflowException, OSError) as exc:
        # The report on disk is what the user asked for; the copy in MLflow is a convenience.
        _say(f"warning: could not attach the report to run {ref.run_id}: {exc}")
        return
    _say(f"attached to the sweep's run {ref.run_id} as artifacts under {publish.ARTIFACT_DIR}/")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
