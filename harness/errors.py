"""Errors the harness reports to users as one line, without a traceback. The lowest module: anything may raise them."""

import contextlib
from collections.abc import Iterator


class ConfigError(ValueError):
    """A config value is out of range or unusable. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class StoreError(RuntimeError):
    """The tracking store cannot be used as it is. The message says where, what is wrong and what to do."""

    def __init__(self, message: str, location: str | None = None):
        super().__init__(message)
        self.store_location = location


class Stopped(RuntimeError):
    """The harness stopped on purpose (e.g. an HPO study past its failure budget); the message is the one line."""


LOCATION_ATTRIBUTE = "store_location"


@contextlib.contextmanager
def located(location: str | None) -> Iterator[None]:
    """Mark any exception raised inside with the store it happened on (`exc.store_location`), so that the one-line
    failure can name the store without a process-wide "last store" variable."""
    try:
        yield
    except Exception as exc:
        if location is not None and getattr(exc, LOCATION_ATTRIBUTE, None) is None:
            try:
                setattr(exc, LOCATION_ATTRIBUTE, location)
            except (AttributeError, TypeError):  # an exception type with __slots__: it goes unlocated
                pass
        raise


def location_of(exc: BaseException) -> str | None:
    return getattr(exc, LOCATION_ATTRIBUTE, None)
