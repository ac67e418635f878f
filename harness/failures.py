"""Failures a user can cause, said in one line: a bad config value, a store that cannot be used, a full or read-only
disk, an interrupt. Anything else is a bug and keeps its traceback.

`HARNESS_DEBUG=1` (or Hydra's `HYDRA_FULL_ERROR=1`) prints the traceback of the one-line failures too, before their
line; it changes nothing else: the same runs end the same way, the process exits with the same code.
"""

import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from harness.errors import ConfigError, Stopped, StoreError, location_of
from harness.redaction import redact

DEBUG_VARIABLES = ("HARNESS_DEBUG", "HYDRA_FULL_ERROR")
CONFIG_EXIT = 2  # a refused config value (as before: argparse's convention for usage errors)
ENVIRONMENT_EXIT = 1  # the store, the filesystem


# Messages of sqlite3 / SQLAlchemy / MLflow errors (wrapped in each other) that mean the store, not the code, failed.
_STORE_MESSAGES = {
    "database or disk is full": "no space left on the device of the tracking store",
    "disk i/o error": "the disk of the tracking store failed to write (disk I/O error; is it full?)",
    "attempt to write a readonly database": "the tracking store is read-only",
    "unable to open database file": "the tracking store's database file cannot be opened or created",
    "file is not a database": "the tracking store's file is not an SQLite database (corrupt?)",
    "database disk image is malformed": "the tracking store's database is corrupt (malformed disk image)",
}
# What a launcher says when the machine lacks what it launches through.
_LAUNCHER_MESSAGES = {
    'could not detect "srun"': "hydra/launcher=slurm needs a SLURM cluster: srun is not on this machine "
    "(hydra/launcher=local_cluster runs the same jobs here)",
}
_OS_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def debug() -> bool:
    """Tracebacks wanted: HARNESS_DEBUG decides when set, else HYDRA_FULL_ERROR (see harness.entry.run)."""
    for name in DEBUG_VARIABLES:
        if os.environ.get(name, "") != "":
            return os.environ[name] != "0"
    return False


_said_by_entry = (
    False  # harness.entry runs in this process: it prints the one line (with what became of the runs)
)


def say_in_entry() -> None:
    """From now on `one_line` leaves printing to harness.entry, which adds the sweep's outcome and how to resume.
    Worker processes (joblib's, a cluster's) never call this: their task function prints its own line."""
    global _said_by_entry
    _said_by_entry = True


def print_traceback(exc: BaseException) -> None:
    """In debug mode, the traceback of a failure about to be said in one line (nothing otherwise)."""
    if debug():
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()


_DETAILS = ("full_key:", "reference_type=", "object_type=", "Config search path", "provider=")


def config_message(exc: BaseException) -> str | None:
    """One line for Hydra's and OmegaConf's errors about the command line or the configs (None for others).

    Hydra lists a group's options one per line; here they are joined, schema names (`base_*`) left out.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    for link in _chain(exc):  # a plugin's own range check, raised while Hydra instantiated it
        if isinstance(link, ConfigError):
            return str(link)
    raw = str(exc).splitlines()
    head = raw[0].strip() if raw else type(exc).__name__
    if any(line.startswith("Available options") for line in raw):
        listed = [line.strip() for line in raw if line.startswith("\t")]
        options = [o for o in listed if not o.startswith(("base_", *_DETAILS))]
        return f"{head}; available: {', '.join(options)}"
    lines = [line.strip() for line in raw if line.strip() and not line.strip().startswith(_DETAILS)]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        lines += [line.strip() for line in str(cause).splitlines()[:1] if line.strip() not in lines]
    message = "; ".join(lines).replace(".; ", ". ") or head
    key = getattr(exc, "full_key", None)
    return f"{key}: {message}" if key and key not in message else message


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (`raise ... from`, and the one being handled when it was raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(exc: BaseException) -> str:
    """` (<store>)`: the store the failure happened on, as the tracking port marked it (harness.errors.located)."""
    where = next((location_of(link) for link in _chain(exc) if location_of(link)), None)
    return f" ({where})" if where else ""


def describe(exc: BaseException) -> str | None:
    """One line for a failure the user's config or environment caused; None for a bug (keep the traceback)."""
    for link in _chain(exc):
        if isinstance(link, (ConfigError, StoreError, Stopped)):
            return str(link)
        said = config_message(link)
        if said is not None:
            return said
        if isinstance(link, OSError) and link.errno in _OS_ERRORS:
            path = link.filename or ""
            return f"{_OS_ERRORS[link.errno]}: {path}" if path else f"{_OS_ERRORS[link.errno]}{_where(exc)}"
        text = str(link).lower()
        for needle, meaning in _STORE_MESSAGES.items():
            if needle in text:
                return meaning + _where(exc)
        for needle, meaning in _LAUNCHER_MESSAGES.items():
            if needle in text:
                return meaning
    return None


def left_running() -> str:
    """What became of this process's run when the store refused to end it ("": none such): it stays RUNNING in the
    store until the next job into it, once this process is gone, ends it KILLED (harness.tracking.owners)."""
    from harness.tracking import owners

    run = owners.latest()
    if run is None or run.status is not None:
        return ""
    later = (
        "the next run into this store ends it KILLED" if run.lock else "end it in MLflow (no lock was made)"
    )
    return f"run {run.run_id} could not be ended (the store took no more writes) and stays RUNNING: {later}"


def stops_sweep(exc: BaseException) -> bool:
    """A failure of the store or the filesystem: the next job would meet it too, so the sweep stops here."""
    return describe(exc) is not None and exit_code(exc) == ENVIRONMENT_EXIT


def exit_code(exc: BaseException) -> int:
    config = any(isinstance(link, ConfigError) or config_message(link) for link in _chain(exc))
    return CONFIG_EXIT if config else ENVIRONMENT_EXIT


class Reported(SystemExit):
    """A failure already told in one line: ends the process (and a sweep: Hydra lets SystemExit through)."""

    message = ""


def one_line(task: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate the Hydra task function: user-caused failures end the process with one line, not a traceback."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as exc:
            message = describe(exc)
            if message is None:
                raise
            print_traceback(exc)
            if not _said_by_entry:  # a worker process: its line, with what became of its run
                left = left_running()
                print(redact(f"error: {message}{f'; {left}' if left else ''}"), file=sys.stderr, flush=True)
            reported = Reported(exit_code(exc))
            reported.message = message
            raise reported from exc

    return wrapper
