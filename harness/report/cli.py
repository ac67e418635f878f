"""The report's command line: `harness-report --experiment NAME [--sweep ID|latest] [--tracking-uri URI]
[--out DIR] [--no-log] [--target-rule median-seeds|algoperf] [--aggregate mean|iqm]` (also `python scripts/report.py ...`).

Prints the path of report.html on stdout (so that `open "$(harness-report ...)"` works) and what it did on stderr.
Every problem a user can cause (unknown experiment, a store that is missing, empty or corrupt, a bad URI, an --out
that cannot be written) ends with one line on stderr and exit status 1; HARNESS_DEBUG=1 shows the traceback.
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from harness.errors import ConfigError, StoreError
from harness.report.source import LATEST, ReportError
from harness.tracking import sqlite_store, store
from harness.tracking.record import redact

REPORTS_DIR = "reports"
# Stores MLflow can open for reading (the file store is in maintenance mode in MLflow 3 and refuses to open).
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from harness.report.ranking import DEFAULT_RULE, TARGET_RULES
    from harness.report.stats import AGGREGATES

    parser = argparse.ArgumentParser(
        prog="harness-report", description="Compare the optimizers of a sweep: figures, tables, report.html."
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    parser.add_argument("--sweep", default=LATEST, help="the sweep's parent run id, or 'latest' (default)")
    parser.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db"
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: reports/<experiment>/<sweep run id>/)"
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not attach the report to the sweep's MLflow run"
    )
    parser.add_argument(
        "--target-rule",
        choices=list(TARGET_RULES),
        default=DEFAULT_RULE,
        help="how an optimizer's time to target is aggregated (a rule other than the default writes its report "
        "beside the default's, in its own folder and artifact path): "
        + "; ".join(f"{name}: {text}" for name, text in TARGET_RULES.items()),
    )
    parser.add_argument(
        "--aggregate",
        choices=list(AGGREGATES),
        default="mean",
        help="a configuration's score over its seeds, for the scores' intervals, the headline's probability and the "
        "tuning-budget curve: mean (default) or iqm, the interquartile mean (25 %% cut from each end; rliable)",
    )
    parser.add_argument("--workers", type=int, help="processes drawing figures (default: one per CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns the exit status (0 ok, 1 a problem explained in one line on stderr)."""
    args = parse(argv)
    uri = args.tracking_uri or store.resolve_uri(None, Path.cwd())
    try:
        html = run(args, check_uri(uri))
    except _user_errors() as exc:
        if _debug():
            raise
        print(f"error: {_one_line(exc, uri)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was attached to the sweep's run", file=sys.stderr)
        return 130
    print(html)
    return 0


def run(args: argparse.Namespace, uri: str) -> Path:
    """Find, load, write and (unless --no-log) publish the report; returns the path of report.html."""
    import matplotlib

    from harness.report import load, publish, stats
    from harness.report.build import write_report

    matplotlib.use("Agg")  # a command line never needs a window: no GUI backend, works on servers and in CI
    started = time.perf_counter()
    data = load.load(uri, args.experiment, args.sweep)
    out = writable(
        args.out or default_out(args.experiment, data.sweep_run_id, args.target_rule, args.aggregate)
    )
    data.cache_dir = out / "cache"
    _say(f"{len(data.runs)} runs of sweep {data.sweep_run_id} ({time.perf_counter() - started:.1f} s)")
    method = stats.Method(aggregate=args.aggregate)
    report = write_report(data, out, args.target_rule, args.workers, method)
    if report.banner:
        _say(report.banner)
    for answer in report.answers:
        _say(answer)
    if not args.no_log:
        try:
            directory = publish.artifact_dir(args.target_rule, args.aggregate)
            publish.attach(data.source, data.parent, report, directory)
            _say(
                f"attached to the sweep's run {data.sweep_run_id} as artifacts under {directory}/, with the "
                "answer as its description"
            )
        except _user_errors() as exc:
            # The report on disk is what the user asked for; the copy in MLflow is a convenience.
            _say(f"warning: could not attach the report to run {data.sweep_run_id}: {_one_line(exc, uri)}")
    _say(
        f"report written in {time.perf_counter() - started:.1f} s (histories from the {data.history_source})"
    )
    return report.html.resolve()


def check_uri(uri: str) -> str:
    """The URI, if it names a store the report can read.

    Raises:
        ConfigError: another scheme (a typo, or MLflow's file store).
    """
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in SCHEMES:
        allowed = "sqlite:///<path to mlflow.db>, http(s)://<tracking server> or a SQL database URI"
        raise ConfigError("--tracking-uri", uri, allowed)
    return uri


def writable(out: Path) -> Path:
    """`out`, created if needed, checked before any work so that nothing is left half-written.

    Raises:
        ConfigError: the folder cannot be created or written to.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("--out", str(out), f"a folder you can write to ({exc.strerror or exc})") from None
    return out


def default_out(experiment: str, run_id: str, rule: str | None = None, aggregate: str = "mean") -> Path:
    """reports/<experiment>/<sweep run id>/ under the current directory (the name made safe for a path); a report
    with another time-to-target rule or aggregate beside it, in <sweep run id>-<rule>/, <sweep run id>-iqm/ or
    <sweep run id>-<rule>-iqm/."""
    from harness.report.publish import variant
    from harness.report.ranking import DEFAULT_RULE

    folder = "-".join([run_id, *variant(rule or DEFAULT_RULE, aggregate)])
    return Path(REPORTS_DIR) / re.sub(r"[^\w.-]+", "_", experiment) / folder


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input or store can cause. MLflow's exception counts only if MLflow was imported: the report
    reads SQLite stores without it."""
    errors: list[type[BaseException]] = [
        ReportError,
        ConfigError,
        StoreError,
        OSError,
        *sqlite_store.DATABASE_ERRORS,
    ]
    mlflow_errors = sys.modules.get("mlflow.exceptions")
    if mlflow_errors is not None:
        errors.append(mlflow_errors.MlflowException)
    return tuple(errors)


def _one_line(exc: BaseException, uri: str) -> str:
    """The error's line, credentials redacted: MLflow's messages (and a URI the user typed) may quote them."""
    return redact(_said(exc, uri))


def _said(exc: BaseException, uri: str) -> str:
    if isinstance(exc, (ReportError, ConfigError, StoreError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    text = getattr(exc, "message", None) or str(exc)
    return f"MLflow store {uri}: {text.strip().splitlines()[0] if text.strip() else type(exc).__name__}"


def _debug() -> bool:
    """HARNESS_DEBUG=1: the traceback instead of the line (HARNESS_DEBUG=0 or empty: the line)."""
    return os.environ.get("HARNESS_DEBUG", "") not in ("", "0")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
