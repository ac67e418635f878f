"""Optimizer factory and LR schedules: the only code that knows optimizer and schedule names."""

from harness.optim.registry import OPTIMIZERS, OptimInfo, get_optimizer_info, register
from harness.optim.schedulers import SCHEDULERS, ScheduleInfo, create_scheduler, get_schedule_info

__all__ = [
    "OPTIMIZERS",
    "OptimInfo",
    "SCHEDULERS",
    "ScheduleInfo",
    "create_scheduler",
    "get_optimizer_info",
    "get_schedule_info",
    "register",
]
