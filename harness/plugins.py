"""A user's own optimizers and tasks: modules named in $HARNESS_PLUGINS are imported before Hydra composes.

    HARNESS_PLUGINS=my_pkg.optimizers python -m harness.train optimizer=my_opt

Such a module calls `harness.optim.register(OptimInfo(...))` or decorates a Task with `@register_task`; its entries
then are config options like the built-in ones (`optimizer=my_opt`, `--help`, sweeps, resume, the report). Importing
a module runs its code, like any Python import. `optimizer=custom optimizer.target=pkg.Class` needs no plugin.
"""

import importlib
import os
import re

from harness.errors import ConfigError

ENV = "HARNESS_PLUGINS"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def load(names: str | None = None) -> list[str]:
    """Import each comma-separated module of `names` (default: $HARNESS_PLUGINS) and return their names.

    Raises:
        ConfigError: a name that is not a dotted module name, or a module that does not import.
    """
    value = os.environ.get(ENV, "") if names is None else names
    modules = [name.strip() for name in value.split(",") if name.strip()]
    for name in modules:
        if not _MODULE.fullmatch(name):  # checked before anything is imported
            raise ConfigError(ENV, value, "comma-separated module names such as my_pkg.optimizers")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(ENV, value, f"importable modules ({exc})") from None
    return modules
