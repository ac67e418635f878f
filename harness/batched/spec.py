"""One trial of a batched group, fully resolved (no Hydra, no MLflow), and the key that groups trials.

Trials with the same key differ only in numbers (lr, betas, momentum, weight decay, eps, seed, divergence factor)
and train as one program: see harness.batched.engine.
"""

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.batched.models import BatchedForm, form_for
from harness.batched.optim import optimizer_family
from harness.optim import create_scheduler
from harness.optim.schedulers import get_schedule_info
from harness.tasks import Splits, Task


@dataclass(frozen=True)
class ScheduleSpec:
    """The lr schedule of harness.optim.schedulers by name and settings (the fields of the scheduler config)."""

    name: str = "none"
    step_every: float = 0.3
    gamma: float = 0.1
    warmup: float = 0.05
    min_factor: float = 0.0

    def multipliers(self, total_steps: int) -> list[float] | None:
        """The lr multiplier at each optimizer step 0..total_steps-1, or None for a constant lr.

        Read off the very scheduler the single-run path builds (a LambdaLR with base lr 1.0, so its lr IS the
        multiplier), so a batched trial's lr is `base_lr * multiplier` computed as LambdaLR computes it.
        """
        if self.name == "none":
            return None
        dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        settings = {k: getattr(self, k) for k in get_schedule_info(self.name).defaults()}
        scheduler = create_scheduler(dummy, self.name, total_steps, settings)
        values = []
        for _ in range(total_steps):
            values.append(dummy.param_groups[0]["lr"])
            dummy.step()
            scheduler.step()
        return values


@dataclass(frozen=True)
class TrialSpec:
    """One job of a sweep, resolved: what the single-run path (harness.job + harness.loop) would train."""

    task: Task  # an instance (harness.tasks.create_task)
    splits: Splits  # the task's data, shared between the trials of a group
    optimizer: str  # registry name (harness.optim.OPTIMIZERS)
    lr: float  # the effective lr: optimizer.lr x optimizer.lr_scale
    hparams: Mapping[
        str, Any
    ]  # the optimizer's other hyperparameters, as harness.config.optimizer_hparams gives
    seed: (
        int  # torch.manual_seed(seed) before task.make_model(); randperm(generator seeded with it) per epoch
    )
    batch_size: int
    shuffle: bool
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    divergence_factor: float = 1e4
    scheduler: ScheduleSpec = field(default_factory=ScheduleSpec)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def spec_from_plan(plan) -> TrialSpec:
    """The TrialSpec of a job from its harness.plan.Plan: exactly what the single-run path trains."""
    return TrialSpec(
        task=plan.task,
        splits=plan.splits,
        optimizer=plan.optimizer_name,
        lr=plan.lr,
        hparams=plan.hparams,
        seed=plan.seed,
        batch_size=plan.batch_size,
        shuffle=plan.shuffle,
        total_steps=plan.total_steps,
        steps_per_epoch=plan.steps_per_epoch,
        eval_every=plan.eval_every,
        divergence_factor=plan.divergence_factor,
        scheduler=ScheduleSpec(name=plan.schedule.name, **plan.schedule_params),
        device=plan.device,
    )


def task_identity(task: Task) -> tuple[str, str]:
    """Same class and same constructor state: the same problem (the key harness.job shares data by)."""
    cls = type(task)
    return f"{cls.__module__}.{cls.__qualname__}", json.dumps(vars(task), sort_keys=True, default=str)


_FORMS: dict[tuple[str, str], BatchedForm | None] = {}


def batched_form(task: Task) -> BatchedForm | None:
    """The task's batched model family, or None when it cannot batch (decided once per task identity)."""
    identity = task_identity(task)
    if identity not in _FORMS:
        _FORMS[identity] = form_for(task)
    return _FORMS[identity]


def group_key(spec: TrialSpec) -> Hashable | None:
    """What must be equal for trials to train together; None when this trial cannot batch.

    It cannot batch when its optimizer has no batched update (L-BFGS, custom, Muon, ...), when a hyperparameter
    takes a branch the batched update does not write (maximize...), or when its task has no batched form. Decided
    once per distinct set of its inputs (all of the spec but lr, seed and divergence factor): classifying the update
    builds an optimizer, which costs far more than the rest of a job's set-up.
    """
    shared = (
        task_identity(spec.task), spec.batch_size, spec.shuffle, spec.total_steps, spec.steps_per_epoch,
        spec.eval_every, spec.scheduler, str(spec.device),
    )  # fmt: skip
    inputs = (shared, spec.optimizer, tuple(sorted((k, repr(v)) for k, v in spec.hparams.items())))
    if inputs not in _KEYS:
        family = optimizer_family(spec.optimizer, spec.hparams)
        form = batched_form(spec.task) if family is not None else None
        _KEYS[inputs] = None if form is None else (*shared, form.key, family)
    return _KEYS[inputs]


_KEYS: dict[tuple, Hashable | None] = {}
