"""Importing user code named in the config (`task.module`, `optimizer.target`).

Such an import runs the module's code with the user's rights, like any Python import: the config is trusted as code
(README, "User code"). What is checked is the name's form, before anything is imported: dotted Python identifiers
only, so a value can never be a path, a file name or an expression.
"""

import importlib
import re
from types import ModuleType

from harness.errors import ConfigError

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_module(key: str, name: str) -> ModuleType:
    """Import the module `name` (dotted identifiers only).

    Raises:
        ConfigError: naming `key`, when the name is malformed or the import fails (the error, in one line).
    """
    if not isinstance(name, str) or not _DOTTED.fullmatch(name):
        raise ConfigError(key, name, "a dotted Python module name such as 'mypackage.tasks'")
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything on import; said in one line
        raise ConfigError(key, name, f"an importable module ({type(exc).__name__}: {exc})") from None


def import_object(key: str, target: str) -> object:
    """Import `package.module.Name` (or `package.module:Name`).

    Raises:
        ConfigError: naming `key`, when the path is malformed, the module does not import or has no such name.
    """
    if not isinstance(target, str) or not _DOTTED.fullmatch(target.replace(":", ".", 1)) or "." not in target:
        raise ConfigError(key, target, "an import path 'package.module.Name' (or 'package.module:Name')")
    module_name, _, attr = target.replace(":", ".").rpartition(".")
    try:
        module = import_module(key, module_name)
    except ConfigError as exc:  # name what the user typed (the whole path), not the module part of it
        raise ConfigError(key, target, exc.allowed) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(key, target, f"a name defined in module {module_name!r}") from None
