"""Built-in tasks; importing this package registers them all."""

from harness.tasks import functions, regression, sklearn_data  # noqa: F401 - imported to register
from harness.tasks.base import Batch, Budget, Splits, Target, Task
from harness.tasks.registry import TASKS, create_task, register_task

__all__ = ["Batch", "Budget", "Splits", "Target", "Task", "TASKS", "create_task", "register_task"]
