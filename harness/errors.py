"""Errors the harness reports to users as one line, without a traceback. The lowest module: anything may raise them.

Their messages and the store they name are redacted when the error is made (harness.redaction): a URI typed with its
password, a value that holds one, never reaches a terminal, a log or a tag through them.
"""

import contextlib
from collections.abc import Iterator

from harness.redaction import redact


class ConfigError(ValueError):
    """A config value is out of range or unusable. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.allowed = key, redact(allowed)
        self.value = redact(value) if isinstance(value, str) else value
        super().__init__(redact(f"{key}={value!r} is not allowed: {allowed}"))

    def __reduce__(self):  # made again from its three parts (a joblib worker hands it back pickled)
        return type(self), (self.key, self.value, self.allowed)


class StoreError(RuntimeError):
    """The tracking store cannot be used as it is. The message says where, what is wrong and what to do."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(redact(message))
        self.store_location = None if location is None else redact(location)


class Stopped(RuntimeError):
    """The harness stopped on purpose (e.g. an HPO study past its failure budget); the message is the one line."""

    def __init__(self, message: str):
        super().__init__(redact(message))


LOCATION_ATTRIBUTE = "store_location"


@contextlib.contextmanager
def located(location: str | None) -> Iterator[None]:
    """Mark any exception raised inside with the store it happened on (`exc.store_location`), so that the one-line
    failure can name the store without a process-wide "last store" variable."""
    try:
        yield
    except ModuleNotFoundError as exc:
        # MLflow imports a database's driver (psycopg, pymysql...) only when it first connects.
        raise StoreError(
            f"the store {redact(location or '')} needs the Python package {exc.name!r}, MLflow's driver for its "
            f"database, which is not installed: pip install {exc.name}, or track to a server (tracking=server)",
            location,
        ) from exc
    except Exception as exc:
        if location is not None and getattr(exc, LOCATION_ATTRIBUTE, None) is None:
            try:
                setattr(exc, LOCATION_ATTRIBUTE, redact(location))
            except (AttributeError, TypeError):  # an exception type with __slots__: it goes unlocated
                pass
        raise


def location_of(exc: BaseException) -> str | None:
    return getattr(exc, LOCATION_ATTRIBUTE, None)
