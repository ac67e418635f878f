"""Task registry: name -> task class. One module per task family registers itself on import."""

from harness.errors import ConfigError
from harness.imports import import_module
from harness.tasks.base import Task

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available as `task=<cls.name>` (user tasks too, via task.module)."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is already registered by {TASKS[cls.name].__module__}")
    TASKS[cls.name] = cls
    return cls


def create_task(name: str, module: str | None = None, kwargs: dict | None = None) -> Task:
    """Instantiate a registered task, importing `module` first if given (a user's own task)."""
    if module:
        import_module("task.module", module)  # checks the name's form first (harness.imports)
    if name not in TASKS:
        raise ConfigError("task.name", name, f"one of {sorted(TASKS)}")
    try:
        return TASKS[name](**(kwargs or {}))
    except TypeError as exc:
        raise ConfigError("task.kwargs", kwargs, f"options accepted by task {name!r} ({exc})") from None
