"""Learning-rate schedules: one record per kind (its multiplier of the base lr, its parameters with defaults, ranges
and docs), over the run's total number of optimizer steps. harness.config makes each one `scheduler=<name>`."""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import ConfigError
from harness.optim.hparams import Hparam, Range, check, described, greater, unit

Schedule = Callable[[int, int], float]  # (step, total_steps) -> multiplier of the base lr


@dataclass(frozen=True)
class ScheduleInfo:
    """One kind of schedule."""

    name: str  # what users type: scheduler=<name>
    doc: str
    multiplier: (
        Callable[..., Schedule] | None
    )  # multiplier(**params) -> schedule; None: the lr stays constant
    params: Mapping[str, Hparam] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return {key: h.fresh_default() for key, h in self.params.items()}

    def check(self, values: Mapping[str, Any]) -> None:
        check("scheduler", self.params, values)


def _cosine(step: int, total: int, min_factor: float) -> float:
    progress = min(step / max(total, 1), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def _cosine_schedule(min_factor: float) -> Schedule:
    return lambda t, total: _cosine(t, total, min_factor)


def _step_schedule(step_every: float, gamma: float) -> Schedule:
    return lambda t, total: gamma ** (t // max(1, round(step_every * total)))


def _warmup_cosine_schedule(warmup: float, min_factor: float) -> Schedule:
    def warmup_cosine(t: int, total: int) -> float:
        warm = max(1, round(warmup * total))
        if t < warm:
            return (t + 1) / warm
        return _cosine(t - warm + 1, total - warm + 1, min_factor)  # peak once, at the end of warm-up

    return warmup_cosine


_FRACTION = Range(lambda v: 0 < v <= 1, "in (0, 1]")
_MIN_FACTOR = Hparam(0.0, "the schedule ends at this fraction of the base lr", unit(closed=True))

SCHEDULERS: dict[str, ScheduleInfo] = {
    info.name: info
    for info in [
        ScheduleInfo("none", "constant learning rate", None),
        ScheduleInfo("cosine", "cosine decay over the run", _cosine_schedule, {"min_factor": _MIN_FACTOR}),
        ScheduleInfo(
            "step",
            "multiply by gamma every step_every of the run",
            _step_schedule,
            {
                "step_every": Hparam(0.3, "decay every this fraction of the run", _FRACTION),
                "gamma": Hparam(0.1, "decay factor", greater(0)),
            },
        ),
        ScheduleInfo(
            "warmup_cosine",
            "linear warm-up, then cosine decay",
            _warmup_cosine_schedule,
            {
                "warmup": Hparam(0.05, "linear warm-up over this fraction of the run", unit()),
                "min_factor": _MIN_FACTOR,
            },
        ),
    ]
}


def get_schedule_info(name: str) -> ScheduleInfo:
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise ConfigError("scheduler.name", name, f"one of {list(SCHEDULERS)}") from None


def create_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, params: Mapping[str, Any] | None = None
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A LambdaLR stepped once per optimizer step, or None when the lr stays constant.

    Args:
        params: the kind's parameters (`min_factor`, `step_every`...); missing ones take the record's defaults.
    """
    info = get_schedule_info(name)
    if info.multiplier is None:
        return None
    multiplier = info.multiplier(**{**info.defaults(), **(params or {})})
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: multiplier(t, total_steps))


def markdown_table() -> str:
    """The README's schedule table, generated from the records."""
    rows = ["| `scheduler=` | what it does | keys: default (allowed) |", "|---|---|---|"]
    for info in SCHEDULERS.values():
        keys = ", ".join(f"{described(key, h)}: {h.doc}" for key, h in info.params.items())
        rows.append(f"| `{info.name}` | {info.doc} | {keys or '-'} |")
    return "\n".join(rows)
