"""Optimizer factory: the only place that knows optimizer names."""

from harness.optim.registry import (
    OPTIMIZERS,
    OptimInfo,
    create_optimizer,
    get_optimizer_info,
    validate_hparams,
)
from harness.optim.schedulers import SCHEDULERS, create_scheduler

__all__ = [
    "OPTIMIZERS",
    "OptimInfo",
    "SCHEDULERS",
    "create_optimizer",
    "create_scheduler",
    "get_optimizer_info",
    "validate_hparams",
]
