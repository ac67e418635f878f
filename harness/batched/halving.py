"""Successive halving over steps inside a batched group (hydra.launcher.rungs, hydra.launcher.keep): pure decisions.

At each rung, a fraction of the step budget, the group's trials still training are ranked by their validation loss
at that step, configuration by configuration: a configuration (everything but the seed) scores the mean over its
seeds in the group, and configurations are ranked against the others of the same optimizer only (a group may train
sgd and momentum together; each optimizer keeps its own best). The best `ceil(keep x n)` configurations of each
optimizer train on (at least one); the trials of the rest stop there, outcome `pruned`.

Why these choices, as an appendix would defend them: a rung is an evaluation point (the first at or after its
fraction), so the decision uses a validation loss the run records and anyone can check in its curve; ranking whole
configurations keeps a configuration's seeds together (a race pairs configurations by seed; pruning one seed of a
configuration and not another would leave it half measured); ranking within an optimizer keeps the comparison
between optimizers to the final, full-budget losses. keep = 0.5 is successive halving's (Jamieson and Talwalkar,
2016) factor 2, gentler than ASHA's default 1/3: early rankings of learning rates are noisy (a small lr is slow
early and may be best late), and a pruned configuration cannot come back.
"""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Halving:
    rungs: tuple[float, ...]  # fractions of the step budget, increasing, each in (0, 1)
    keep: float = 0.5  # share of each optimizer's configurations that train on at a rung

    def __post_init__(self):
        check(self.rungs, self.keep)

    def steps(self, total_steps: int, eval_every: int) -> list[int]:
        """The rungs as steps: each fraction's step rounded up to the next evaluation point, kept when it lies
        before the end (the last step is the final evaluation: nothing is left to save there)."""
        every = max(1, eval_every)
        found = []
        for fraction in self.rungs:
            step = math.ceil(fraction * total_steps / every) * every
            if 0 < step < total_steps and step not in found:
                found.append(step)
        return found


def check(rungs, keep) -> None:
    """Range checks of hydra.launcher.rungs and .keep (ConfigError: one line naming the key)."""
    if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0 < keep < 1:
        raise ConfigError("hydra.launcher.keep", keep, "a share in (0, 1), e.g. 0.5")
    if rungs is None:
        return
    try:
        values = [float(r) for r in rungs]
    except (TypeError, ValueError):
        raise ConfigError(
            "hydra.launcher.rungs", rungs, "a list of fractions of the step budget, e.g. [0.25,0.5]"
        ) from None
    if not all(0 < v < 1 for v in values) or values != sorted(set(values)):
        raise ConfigError(
            "hydra.launcher.rungs", list(rungs), "increasing fractions in (0, 1), e.g. [0.25,0.5]"
        )


def survivors(
    optimizers: Sequence[str], configurations: Sequence[Hashable], losses: Sequence[float], keep: float
) -> list[int]:
    """Indices of the trials that train on: per optimizer, the best ceil(keep x n) of its n configurations by mean
    loss over their trials (a non-finite loss ranks last; ties keep the first in order)."""
    scores: dict[tuple[str, Hashable], list[float]] = {}
    for optimizer, configuration, loss in zip(optimizers, configurations, losses):
        value = float(loss) if math.isfinite(loss) else math.inf
        scores.setdefault((optimizer, configuration), []).append(value)
    kept: set[tuple[str, Hashable]] = set()
    for optimizer in dict.fromkeys(optimizers):
        ranked = sorted(
            (key for key in scores if key[0] == optimizer),
            key=lambda key: sum(scores[key]) / len(scores[key]),
        )
        kept.update(ranked[: max(1, math.ceil(keep * len(ranked)))])
    return [i for i, key in enumerate(zip(optimizers, configurations)) if key in kept]


__all__ = ["Halving", "check", "survivors"]
