"""One hyperparameter of an optimizer or scheduler: default, allowed range and a one-line doc, in one record.

The optimizer and scheduler registries are built from these; harness.config turns them into typed Hydra configs,
`python -m harness.optim` into the README table, and `check` into the one-line error a user sees.
"""

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from harness.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Which values are allowed, as a predicate and in the words an error message shows."""

    test: Callable[[Any], bool]
    words: str

    def allows(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):  # a list where a number belongs, None where a list belongs...
            return False


def greater(bound: float) -> Range:
    return Range(lambda v: v > bound, f"> {bound:g}")


def at_least(bound: float) -> Range:
    return Range(lambda v: v >= bound, f">= {bound:g}")


def unit(*, closed: bool = False) -> Range:
    """[0, 1) (a decay or momentum: 1 would never forget), or [0, 1] when `closed`."""
    if closed:
        return Range(lambda v: 0 <= v <= 1, "in [0, 1]")
    return Range(lambda v: 0 <= v < 1, "in [0, 1)")


def pair(test: Callable[[float, float], bool], words: str) -> Range:
    """Two numbers, such as Adam's betas."""
    return Range(lambda v: len(v) == 2 and test(*v), f"two values {words}")


def one_of(*choices: Any) -> Range:
    return Range(lambda v: v in choices, " or ".join("null" if c is None else repr(c) for c in choices))


POSITIVE = greater(0)
NON_NEGATIVE = at_least(0)


@dataclass(frozen=True)
class Hparam:
    """A hyperparameter: its default, what it means, which values are allowed, and its type when the default
    does not tell (None, MISSING, a list of optional floats)."""

    default: Any
    doc: str
    allowed: Range | None = None
    type: Any = None

    def annotation(self) -> Any:
        """The type of the typed config field (Hydra rejects `optimizer.momentum=abc` with it)."""
        if self.type is not None:
            return self.type
        if isinstance(self.default, list):
            return list[float]
        if isinstance(self.default, dict):
            return dict[str, Any]
        return type(self.default)

    def fresh_default(self) -> Any:
        """The default, copied: lists and dicts must not be shared between configs."""
        return copy.deepcopy(self.default)

    def shown(self) -> str:
        """The default as a user would type it."""
        if self.default is MISSING:
            return "required"
        return repr(self.default).replace("None", "null").replace("True", "true").replace("False", "false")


def described(key: str, h: Hparam) -> str:
    """`key`=default (allowed range), as the README tables show a hyperparameter."""
    return f"`{key}`={h.shown()}" + (f" ({h.allowed.words})" if h.allowed else "")


def check(prefix: str, hparams: Mapping[str, Hparam], values: Mapping[str, Any]) -> None:
    """Range checks of `values` against their records.

    Raises:
        ConfigError: naming `<prefix>.<key>`, the value and the allowed range.
    """
    for key, value in values.items():
        rule = hparams[key].allowed if key in hparams else None
        if rule is not None and not rule.allows(value):
            raise ConfigError(f"{prefix}.{key}", value, rule.words)
