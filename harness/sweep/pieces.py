"""Which jobs of a batched sweep train together, and how groups are cut into pieces: pure decisions, no store.

Jobs whose trials share `harness.batched.spec.group_key` (task, model, optimizer update family, batch size, step
budget, eval cadence, scheduler kind, device) form a group; a group is cut into pieces that one program may hold
(the memory budget, `max_trials`), and the largest are halved until every worker has one.
"""

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import devices
from harness.batched import engine
from harness.batched.spec import TrialSpec, batched_form, group_key, spec_from_plan
from harness.errors import ConfigError
from harness.plan import Plan, make_plan

if TYPE_CHECKING:
    from harness.sweep.inprocess import BatchOptions, InProcessJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Piece:
    """Trials that train as one program: one group key, at most what the memory budget (and max_trials) allows."""

    jobs: tuple["InProcessJob", ...]
    plans: tuple[Plan, ...]
    specs: tuple[TrialSpec, ...]

    @functools.cached_property
    def cost(self) -> float:
        """Work, roughly, to order pieces for the workers: trials x steps x parameters x (samples per step + what a
        step costs beyond its samples, about 64 samples' worth on digits_mlp)."""
        spec = self.specs[0]
        params = batched_form(spec.task).param_count()
        return len(self.specs) * spec.total_steps * max(1, params) * (max(1, spec.batch_size) + 64)

    def halves(self) -> "tuple[Piece, Piece]":
        mid = len(self.jobs) // 2
        cut = lambda part: Piece(self.jobs[part], self.plans[part], self.specs[part])  # noqa: E731
        return cut(slice(None, mid)), cut(slice(mid, None))


def partition(jobs: Sequence["InProcessJob"], contexts) -> tuple[list, list[list[tuple]]]:
    """(jobs to run alone with their plan or None, groups of (job, plan) pairs to train together).

    `contexts(job)` gives the job's JobContext. A job whose config is refused goes alone without a plan: the single
    path records it as a failed run.
    """
    singles, keyed = [], {}
    for job in jobs:
        try:
            plan = make_plan(job.config, contexts(job))
        except ConfigError:
            singles.append((job, None))
            continue
        try:
            key = group_key(spec_from_plan(plan))
        except Exception as exc:  # noqa: BLE001 - whatever the engine cannot classify trains alone, never stops the sweep
            log.warning(
                "job %d trains alone: the batched engine could not group it (%s: %s)",
                job.index,
                type(exc).__name__,
                exc,
            )
            key = None
        if key is None:
            singles.append((job, plan))
        else:
            keyed.setdefault(key, []).append((job, plan))
    groups = []
    for members in keyed.values():
        if len(members) == 1:
            singles.append(members[0])
        else:
            groups.append(members)
    return singles, groups


def cut(groups: list[list[tuple]], options: "BatchOptions", workers: int) -> list[Piece]:
    """Groups cut to what one program may hold, then the largest halved until every worker has a piece (not with
    successive halving); largest first (the longest work starts first, so the workers finish together)."""
    pieces = []
    budget = options.memory_budget_mb or engine.DEFAULT_MEMORY_BUDGET_MB
    for members in groups:
        jobs, plans = zip(*members)
        specs = tuple(spec_from_plan(p) for p in plans)
        size = engine.max_group_size(specs[0], budget)
        if options.max_trials is not None:
            size = max(1, min(size, options.max_trials))
        for start in range(0, len(jobs), size):
            part = slice(start, start + size)
            pieces.append(Piece(jobs[part], plans[part], specs[part]))
    pieces.sort(key=_cost, reverse=True)
    # Successive halving ranks the configurations of a piece: a group halved to feed the workers would be ranked per
    # half, and who is pruned would follow the number of cores.
    if workers <= 1 or options.halving is not None:
        return pieces
    while len(pieces) < workers and len(pieces[0].jobs) >= 4:
        pieces = sorted([*pieces[1:], *pieces[0].halves()], key=_cost, reverse=True)
    # The last pieces handed out decide how long one worker trains while the others wait: halved, the wait halves.
    tail = [
        half for piece in pieces[-workers:] for half in (piece.halves() if len(piece.jobs) >= 8 else [piece])
    ]
    return pieces[:-workers] + sorted(tail, key=_cost, reverse=True)


def _cost(piece: Piece) -> float:
    return piece.cost


def worker_target(groups: list[list[tuple]], options: "BatchOptions") -> int:
    """Processes for the groups: one per usable core (per trial's torch threads); one (this process) on a GPU, where
    one process drives the device, or where fork is not available."""
    from harness.sweep import workers

    if not groups or not workers.available():
        return 1
    plans = [p for members in groups for _, p in members]
    if any(p.device.type != "cpu" for p in plans):
        return 1
    if options.workers is not None:
        return max(1, options.workers)
    return max(1, devices.usable_cores() // max(1, max(p.threads for p in plans)))
