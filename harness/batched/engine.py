"""Train a group of K trials as one program and record each trial as the single-run path records it.

The step convention and the per-step record are harness.loop's: per optimizer step t, `train/loss`, `grad_norm`,
`time/wall_s` (+ `train/suboptimality` when the task knows f*, `lr` when a scheduler changes it); at evaluation
points k (0, every eval_every, the end) `val/*`, `epoch` (k / steps_per_epoch), `samples_seen` (k x batch size) and,
without a scheduler, `lr`.

How a group runs: per step, each trial's batch is gathered with its own shuffle order, the stacked model computes the
(K,) losses, one backward fills the stacked gradients, divergence is judged on the device (loss not finite, or above
divergence_factor x |initial loss|, compared in float64 as the loop compares Python floats) and a diverged trial's
update is masked to zero from that step on (frozen). Per-step values stay in a device buffer
(harness.tracking.columns.StepBuffer, the loop's); every `sync_every` steps they cross to the host in one copy, each
trial's record is cut at its diverged step and written with one `log_columns` call, and diverged trials leave the
group (their tensors are dropped). With successive halving (harness.batched.halving) a chunk also ends at each rung,
where the configurations ranked out stop as pruned and leave the group the same way. Each trial's bookkeeping (what the record derives, divergence messages, target,
best validation loss, RunResult) is a harness.trial.Trial, as the single run's is.

Time: trials share the group's clock. `time/wall_s`, `time/total_s` and time-to-target are the group's elapsed time
at that step, so they compare trials inside a group; across engines compare steps, not seconds.
"""

import ctypes
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from harness.batched.halving import Halving, survivors
from harness.batched.models import BatchedModel
from harness.batched.optim import BatchedOptimizer, build_optimizer
from harness.batched.spec import TrialSpec, batched_form, group_key
from harness.tracking import schema
from harness.tracking.base import Tracker
from harness.tracking.columns import StepBuffer
from harness.trial import STEP_KEYS, RunResult, Trial

DEFAULT_MEMORY_BUDGET_MB = 2048.0
# Copies of the parameters a trial holds at most: parameters and gradients, then the update's state and workspaces
# (Adam: 2 + 2; RMSprop with momentum, centered and weight decay: 3 + 2, the most of the batched updates).
PARAM_COPIES = 7
SYNC_EVERY = 256  # steps between host syncs (one columnar write per trial per sync)


class _Chunk:
    """Up to `sync_every` steps of a group: per-step values and divergence marks on the device until recorded."""

    def __init__(self, first: int, size: int, trials: int, device: torch.device):
        self.first, self.size, self.done = first, size, 0
        # float64: the losses (the model's dtype) widen exactly, the squared norms are float64 already.
        self.values = StepBuffer(STEP_KEYS, [schema.WALL_S], size, device, torch.float64, trials)
        # Per trial, the step whose loss diverged, and the evaluation whose loss was not finite (-1: none).
        self.died = torch.full((trials,), -1, dtype=torch.long, device=device)
        self.val_died = torch.full((trials,), -1, dtype=torch.long, device=device)
        self.evals: list[tuple[int, dict[str, Tensor], float]] = []


@dataclass(frozen=True)
class _Member:
    """One trial of the group: what it trains, where its record goes, its bookkeeping."""

    spec: TrialSpec
    tracker: Tracker
    trial: Trial


def trial_bytes(spec: TrialSpec) -> int:
    """Memory one trial adds to a group, beyond the shared data: parameters, gradients, optimizer state and
    workspaces (PARAM_COPIES), and the activations of a training batch. (Evaluation runs over slices of a few
    trials, so its activations do not grow with K.)"""
    form = batched_form(spec.task)
    itemsize = 8 if spec.task.dtype == torch.float64 else 4
    sample = spec.splits.train[0][:1]
    return (
        PARAM_COPIES * form.param_count() * itemsize + form.sample_bytes(spec.task, sample) * spec.batch_size
    )


def max_group_size(spec: TrialSpec, memory_budget_mb: float) -> int:
    return max(1, int(memory_budget_mb * 2**20 // max(1, trial_bytes(spec))))


# glibc mallopt parameters (see _keep_freed_memory)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEPT_BYTES = 64 * 2**20


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for the next step instead of handing it back to the kernel: a group
    step's temporaries (a batch gather, a layer's output for K trials; many over malloc's 128 KiB mmap threshold) were
    mapped afresh and every page faulted in again each step (page faults per worker: BENCHMARKS.md). Blocks up to 64 MiB now come from the heap, and up to 64 MiB of free heap stays mapped. Process-wide, once;
    a no-op without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for parameter in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD, _M_TOP_PAD):
        mallopt(parameter, _KEPT_BYTES)


def train_group(
    specs: list[TrialSpec],
    trackers: list[Tracker],
    max_trials: int | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    sync_every: int = SYNC_EVERY,
    halving: Halving | None = None,
) -> list[RunResult]:
    """Train trials that share a group key, in pieces of at most K (max_trials, and what the memory budget holds).

    Writes each trial's metrics to its tracker and returns one RunResult per trial, in order. The caller logs
    `RunResult.final_metrics()`, sets the status tags and ends the runs. `halving`: successive halving inside each
    piece (the trials that go on are trained exactly as without it).

    Raises:
        ValueError: when the specs do not share one group key, or a trial cannot batch.
    """
    if len(specs) != len(trackers):
        raise ValueError(f"{len(specs)} specs but {len(trackers)} trackers")
    keys = {group_key(s) for s in specs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_group needs trials with one group key (harness.batched.spec.group_key)")
    _keep_freed_memory()
    size = max_group_size(specs[0], memory_budget_mb)
    if max_trials is not None:
        size = max(1, min(size, max_trials))
    results: list[RunResult] = []
    for start in range(0, len(specs), size):
        piece = slice(start, start + size)
        results.extend(_Group(specs[piece], trackers[piece], sync_every, halving).run())
    return results


class _Group:
    """One piece of a group: K trials on one device."""

    def __init__(
        self, specs: list[TrialSpec], trackers: list[Tracker], sync_every: int, halving: Halving | None = None
    ):
        first = specs[0]
        self.task, self.device, self.sync_every = first.task, torch.device(first.device), max(1, sync_every)
        self.total, self.eval_every = first.total_steps, first.eval_every
        self.batch_size, self.spe, self.shuffle = first.batch_size, first.steps_per_epoch, first.shuffle
        self.f_star = self.task.f_star(first.splits)
        self.target = self.task.target(first.splits)
        self.members = [_Member(s, t, self._trial(s)) for s, t in zip(specs, trackers)]
        self.live = list(range(len(specs)))  # indices of self.members still in the group, in tensor order
        self.model: BatchedModel = batched_form(self.task).build(
            self.task, [s.seed for s in specs], self.device
        )
        self.opt: BatchedOptimizer = build_optimizer(self.model.update_tensors, specs)
        self.train_data = tuple(t.to(self.device) for t in first.splits.train)
        self.val_data = tuple(t.to(self.device) for t in first.splits.val)
        self.size = self.train_data[0].shape[0]
        self.generators = [torch.Generator().manual_seed(s.seed) for s in specs]
        self.orders: Tensor | None = None
        self.multipliers = first.scheduler.multipliers(self.total)
        self.dtype = self.model.params[0].dtype
        self.halving = halving
        self.rungs = halving.steps(self.total, self.eval_every) if halving is not None else []

    def _trial(self, spec: TrialSpec) -> Trial:
        return Trial(self.spe, self.batch_size, spec.divergence_factor, self.f_star, self.target)

    # --- data ---------------------------------------------------------------------------------------------------

    def _batch(self, step: int) -> tuple[Tensor, ...]:
        """Each trial's batch at `step`: its own randperm per epoch, as harness.data's sampler draws it."""
        position = (step % self.spe) * self.batch_size
        k = len(self.live)
        if not (self.shuffle and self.size > 1):
            end = min(position + self.batch_size, self.size)
            return tuple(
                t[position:end].unsqueeze(0).expand(k, *t[position:end].shape) for t in self.train_data
            )
        if step % self.spe == 0:
            perms = torch.stack([torch.randperm(self.size, generator=self.generators[i]) for i in self.live])
            if self.device.type == "cuda":  # from pinned memory the copy does not wait for the queued steps
                perms = perms.pin_memory().to(self.device, non_blocking=True)
            self.orders = perms
        index = self.orders[:, position : position + self.batch_size]
        flat = index.reshape(-1)  # index_select of the flat index: faster than t[index] with a (K, B) index
        return tuple(t.index_select(0, flat).view(*index.shape, *t.shape[1:]) for t in self.train_data)

    def _lrs(self, first: int, n: int) -> np.ndarray:
        """(n, K) float64 lr of each live trial at steps first.., as LambdaLR computes base_lr x multiplier."""
        base = np.array([self.members[i].spec.lr for i in self.live], dtype=np.float64)
        if self.multipliers is None:
            return np.tile(base, (n, 1))
        mult = np.array(self.multipliers[first : first + n], dtype=np.float64)
        return mult[:, None] * base[None, :]

    # --- the run ------------------------------------------------------------------------------------------------

    def run(self) -> list[RunResult]:
        """Train to the end; on an exception (Ctrl-C too) the steps done so far are still recorded, then it raises."""
        self.start = time.perf_counter()
        factors = torch.tensor([m.spec.divergence_factor for m in self.members], dtype=torch.float64)
        self.factors = factors.to(self.device)
        self.limit: Tensor | None = None
        evals = [self._evaluate(0)]
        step = 0
        rungs = list(self.rungs)
        while step < self.total and self.live:
            end = min(step + self.sync_every, self.total, *rungs[:1])  # a chunk ends at the next rung
            chunk = _Chunk(step, end - step, len(self.live), self.device)
            chunk.evals = evals
            try:
                self._chunk(chunk)
            except BaseException:
                self._record(chunk)
                raise
            self._record(chunk)
            evals = []
            step += chunk.size
            if rungs and step == rungs[0]:
                rungs.pop(0)
                self._prune(len(self.rungs) - len(rungs))
        return [m.trial.result(m.trial.seen_s) for m in self.members]

    def _evaluate(self, k: int) -> tuple[int, dict[str, Tensor], float]:
        metrics = self.model.evaluate(self.val_data)
        return k, metrics, time.perf_counter() - self.start

    def _chunk(self, chunk: "_Chunk") -> None:
        """chunk.size steps without a host sync: per-step values and divergence marks stay in device tensors."""
        first = chunk.first
        coeffs = self.opt.coefficients(first, self._lrs(first, chunk.size))
        alive = torch.ones(len(self.live), dtype=torch.bool, device=self.device)
        slots = [chunk.values.slots(key) for key in STEP_KEYS]
        walls = chunk.values.host[schema.WALL_S]
        for i in range(chunk.size):
            step = first + i
            value, grads = self.model.losses_and_grads(self._batch(step))
            with torch.no_grad():
                measured = (value, self._sq_norm(grads))  # in the order of STEP_KEYS
                for column, v in zip(slots, measured):
                    column[i].copy_(v)
                if self.limit is None:  # compared in float64, as the loop compares Python floats
                    self.limit = Trial.limits(self.factors, value.double())
                bad = alive & ~(value.double() <= self.limit)  # NaN fails every comparison
                chunk.died = torch.where(bad, step, chunk.died)
                alive = alive & ~bad
                # a diverged trial's update is scaled by 0
                self.opt.step(coeffs, i, alive.to(self.dtype), grads)
            walls[i] = time.perf_counter() - self.start
            done = step + 1
            if done % self.eval_every == 0 or done == self.total:
                evaluation = self._evaluate(done)
                bad_val = alive & ~torch.isfinite(evaluation[1]["loss"])
                chunk.val_died = torch.where(bad_val, done, chunk.val_died)
                alive = alive & ~bad_val
                chunk.evals.append(evaluation)
            chunk.done = i + 1

    @staticmethod
    def _sq_norm(grads: list[Tensor]) -> Tensor:
        """Per trial, the squared global gradient norm (per-tensor norms, then the norm of those), in float64.
        The single run sums in another order: equal to ≈1e-7 relative."""
        norms = [torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads]
        total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)
        total = total.double()
        return total * total

    # --- recording ----------------------------------------------------------------------------------------------

    def _record(self, chunk: "_Chunk") -> None:
        """Copy the chunk to the host, write each live trial's record (cut at its divergence), drop the dead."""
        first, done = chunk.first, chunk.done
        values, (died, val_died) = chunk.values.take(done, extra=[chunk.died, chunk.val_died])
        walls = values[schema.WALL_S]
        evals_h = [
            (k, {key: v.double().cpu().tolist() for key, v in m.items()}, at) for k, m, at in chunk.evals
        ]
        lrs = self._lrs(first, done) if self.multipliers is not None else None
        keep = []
        for slot, index in enumerate(self.live):
            member = self.members[index]
            stop = int(died[slot]) if died[slot] >= 0 else None
            val_stop = int(val_died[slot]) if val_died[slot] >= 0 else None
            last = first + done - 1 if stop is None else stop
            if val_stop is not None:
                last = min(last, val_stop - 1)
            n = last - first + 1
            columns = {key: values[key][slot][:n] for key in STEP_KEYS}
            columns[schema.WALL_S] = walls[:n]
            if lrs is not None:
                columns[schema.LR] = lrs[:n, slot].tolist()
            horizon = stop if stop is not None else (val_stop if val_stop is not None else math.inf)
            evals = [(k, {key: v[slot] for key, v in m.items()}, at) for k, m, at in evals_h if k <= horizon]
            self._write(member, first, columns, evals, stop is not None)
            if stop is None and val_stop is None:
                keep.append(slot)
        if len(keep) < len(self.live):
            self._compact(keep)

    def _prune(self, rung: int) -> None:
        """At a rung (the chunk just recorded ended with its evaluation): the configurations ranked out stop, pruned
        (their record up to the rung is written); the rest train on."""
        members = [self.members[i] for i in self.live]
        keep = survivors(
            [m.spec.optimizer for m in members],
            [_configuration(m.spec) for m in members],
            [m.trial.val.get("loss", math.nan) for m in members],
            self.halving.keep,
        )
        for slot, member in enumerate(members):
            if slot not in keep:
                member.trial.prune(rung)
        if len(keep) < len(self.live):
            self._compact(keep)

    def _write(self, member: _Member, first: int, columns: dict, evals: list, diverged: bool) -> None:
        """A trial's steps of the chunk (then its evaluations in the chunk) to its tracker. The trial sees the
        evaluations first: the single run evaluates after k updates before it computes step k's loss."""
        trial, steps, eval_columns = member.trial, [], {}
        lr = member.spec.lr if self.multipliers is None else None
        for k, metrics, at in evals:
            steps.append(k)
            for key, value in trial.evaluated(k, metrics, lr, at).items():
                eval_columns.setdefault(key, []).append(value)
        columns = trial.steps_done(first, columns, diverged)
        n = len(columns[schema.TRAIN_LOSS])
        if n:
            member.tracker.log_columns(list(range(first, first + n)), columns)
        if steps:
            member.tracker.log_columns(steps, eval_columns)

    def _compact(self, keep: list[int]) -> None:
        """Drop diverged trials from every stacked tensor (their record is complete)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.model.select(index)
        self.opt.select(index, keep)
        self.opt.params = self.model.update_tensors
        self.factors = self.factors.index_select(0, index)
        if self.limit is not None:
            self.limit = self.limit.index_select(0, index)
        if self.orders is not None:
            self.orders = self.orders.index_select(0, index)
        self.live = [self.live[slot] for slot in keep]

    def params_of(self, index: int) -> list[Tensor] | None:
        """Trial `index`'s parameters now (None once it left the group), in its model's `parameters()` order."""
        if index not in self.live:
            return None
        return self.model.trial_state(self.live.index(index))


def _configuration(spec: TrialSpec) -> tuple:
    """A trial's configuration within its group: everything that differs between its trials but the seed."""
    return (
        spec.optimizer,
        spec.lr,
        tuple(sorted((k, repr(v)) for k, v in spec.hparams.items())),
        spec.divergence_factor,
    )
