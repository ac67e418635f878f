"""Learning-rate schedules as multipliers of the base lr, over the run's total number of optimizer steps."""

import math
from collections.abc import Callable

import torch

from harness.errors import ConfigError

Schedule = Callable[[int, int], float]  # (step, total_steps) -> multiplier of the base lr


def _cosine(step: int, total: int, min_factor: float) -> float:
    progress = min(step / max(total, 1), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULERS: tuple[str, ...] = ("none", "cosine", "step", "warmup_cosine")


def _multiplier(name: str, step_every: float, gamma: float, warmup: float, min_factor: float) -> Schedule:
    if name == "cosine":
        return lambda t, total: _cosine(t, total, min_factor)
    if name == "step":
        return lambda t, total: gamma ** (t // max(1, round(step_every * total)))
    if name == "warmup_cosine":

        def warmup_cosine(t: int, total: int) -> float:
            warm = max(1, round(warmup * total))
            if t < warm:
                return (t + 1) / warm
            return _cosine(t - warm + 1, total - warm + 1, min_factor)  # peak once, at the end of warm-up

        return warmup_cosine
    raise ConfigError("scheduler.name", name, f"one of {list(SCHEDULERS)}")


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    *,
    step_every: float = 0.3,
    gamma: float = 0.1,
    warmup: float = 0.05,
    min_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A LambdaLR stepped once per optimizer step, or None for `none`.

    Args:
        step_every: `step` decays by `gamma` every this fraction of the run.
        warmup: `warmup_cosine` warms up linearly over this fraction of the run.
        min_factor: cosine schedules end at this fraction of the base lr.
    """
    if name == "none":
        return None
    multiplier = _multiplier(name, step_every, gamma, warmup, min_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: multiplier(t, total_steps))
