"""Failures a user can cause, said in one line: a bad config value, a store that cannot be used, a full or read-only
disk, an interrupt. Anything else is a bug and keeps its traceback.

`HARNESS_DEBUG=1` (or Hydra's `HYDRA_FULL_ERROR=1`) shows the traceback of the one-line failures too.
"""

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from harness.errors import ConfigError

DEBUG_VARIABLES = ("HARNESS_DEBUG", "HYDRA_FULL_ERROR")
CONFIG_EXIT = 2  # a refused config value (as before: argparse's convention for usage errors)
ENVIRONMENT_EXIT = 1  # the store, the filesystem


class StoreError(RuntimeError):
    """The tracking store cannot be used as it is. The message says where, what is wrong and what to do."""


# Messages of sqlite3 / SQLAlchemy / MLflow errors (wrapped in each other) that mean the store, not the code, failed.
_STORE_MESSAGES = {
    "database or disk is full": "no space left on the device of the tracking store",
    "disk i/o error": "the disk of the tracking store failed to write (disk I/O error; is it full?)",
    "attempt to write a readonly database": "the tracking store is read-only",
    "unable to open database file": "the tracking store's database file cannot be opened or created",
    "file is not a database": "the tracking store's file is not an SQLite database (corrupt?)",
    "database disk image is malformed": "the tracking store's database is corrupt (malformed disk image)",
}
_OS_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def debug() -> bool:
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_VARIABLES)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (`raise ... from`, and the one being handled when it was raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where() -> str:
    from harness.tracking import store

    return f" ({store.last_location})" if store.last_location else ""


def describe(exc: BaseException) -> str | None:
    """One line for a failure the user's config or environment caused; None for a bug (keep the traceback)."""
    for link in _chain(exc):
        if isinstance(link, (ConfigError, StoreError)):
            return str(link)
        if isinstance(link, OSError) and link.errno in _OS_ERRORS:
            path = link.filename or ""
            return f"{_OS_ERRORS[link.errno]}: {path}" if path else f"{_OS_ERRORS[link.errno]}{_where()}"
        text = str(link).lower()
        for needle, meaning in _STORE_MESSAGES.items():
            if needle in text:
                return meaning + _where()
    return None


def stops_sweep(exc: BaseException) -> bool:
    """A failure of the store or the filesystem: the next job would meet it too, so the sweep stops here."""
    return describe(exc) is not None and not any(isinstance(link, ConfigError) for link in _chain(exc))


def exit_code(exc: BaseException) -> int:
    return CONFIG_EXIT if any(isinstance(link, ConfigError) for link in _chain(exc)) else ENVIRONMENT_EXIT


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
            if message is None or debug():
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            reported = Reported(exit_code(exc))
            reported.message = message
            raise reported from exc

    return wrapper
