"""What a sweep says, through Python logging: one line when it starts, a throttled progress line, one line per
failure, and the summary at its end (harness.sweep.callback, progress, inprocess).

Each module logs through its own logger; `logger(name, sweep_dir)` gives it two handlers of its own: stderr, the
user's terminal (the message alone), and `<sweep dir>/sweep.log` (stamped as Hydra stamps a job's log, appended by
every process of the sweep). Both redact credentials (record.RedactingFilter), as conf/hydra's logging configs do.
These loggers do not propagate: Hydra's console handler (stdout) does not repeat the sweep's lines. Hydra's
`configure_log` between jobs leaves loggers it is not configured with alone (their level and handlers; it closes every
handler, and a closed log file reopens at its next line).

The rest is quiet unless `hydra.callbacks.sweep.job_lines=true`: the basic, joblib and submitit launchers' own
per-job lines ("Launching N jobs", "#N : overrides"), from the LAUNCHER_LOGGERS in the launching process, are held at
WARNING (`quiet_launchers`); and while a sweep's job runs, Hydra's console handlers drop what the job logs
(`quiet_console`), which stays in the job's own log file (<job dir>/<job name>.log).
"""

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from harness.tracking import record

LOG_FILE = "sweep.log"  # in Hydra's sweep directory, beside multirun.yaml
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


class _Stderr(logging.StreamHandler):
    """sys.stderr as it is when a line is written (a test's capture, a stream redirected later), as logging's own
    last-resort handler does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _SweepLog(logging.FileHandler):
    """<sweep dir>/sweep.log, opened at its first line. A directory that cannot take it (read-only, a full disk) costs
    the file only: the line is on the terminal, and the store's own failures are said where they happen."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opens the file (outside logging's own error handling)
        except OSError:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # logging would print a traceback per line


_redact = record.RedactingFilter()
_files: dict[Path, logging.Handler] = {}
_stderr: list[logging.Handler] = []


def _with(handler: logging.Handler, fmt: str) -> logging.Handler:
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(_redact)
    return handler


def _terminal() -> logging.Handler:
    if not _stderr:
        _stderr.append(_with(_Stderr(), "%(message)s"))
    return _stderr[0]


def _file(sweep_dir: Path) -> logging.Handler:
    path = sweep_dir.resolve() / LOG_FILE
    if path not in _files:
        _files[path] = _with(_SweepLog(path), FILE_FORMAT)
    return _files[path]


def logger(name: str, sweep_dir: str | Path | None) -> logging.Logger:
    """`name`'s logger, writing to the terminal and to the sweep's log file (None: the terminal only).

    Set again at each call (cheap): a logging config applied meanwhile (Hydra's, a user's) may have disabled it.
    """
    found = logging.getLogger(name)
    handlers = [_terminal(), *([_file(Path(sweep_dir))] if sweep_dir is not None else [])]
    if found.handlers != handlers:
        found.handlers = handlers
    found.propagate = False
    found.disabled = False
    found.setLevel(logging.INFO)
    return found


def quiet_launchers() -> None:
    """Hold the launchers' own per-job lines (LAUNCHER_LOGGERS) at WARNING in this process."""
    for name in LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _drop(_: logging.LogRecord) -> bool:
    return False


@contextlib.contextmanager
def quiet_console(active: bool = True) -> Iterator[None]:
    """While active, the root logger's terminal handlers (Hydra's console; not its log files) write nothing."""
    consoles = [
        h
        for h in logging.getLogger().handlers
        if active and isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for handler in consoles:
        handler.addFilter(_drop)
    try:
        yield
    finally:
        for handler in consoles:
            handler.removeFilter(_drop)
