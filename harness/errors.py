"""Errors the harness reports to users as one line, without a traceback."""


class ConfigError(ValueError):
    """A config value is out of range or unusable. The message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")
