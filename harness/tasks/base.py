"""The task contract: what a benchmark problem provides to the harness.

Rules, said outright:
- `make_data` depends only on a data seed fixed by the task, never on the run's `seed`, and must not touch torch's
  or numpy's global RNG (use a local generator). Every run of a task sees the same data and the same split.
- `make_model` is called after the harness has seeded torch with the run's seed; all randomness of the
  initialisation comes from there.
- `loss` returns the mean loss over a batch as a 0-d tensor with a graph; it may not step or zero anything.
- `evaluate` returns plain floats (`loss`, and `accuracy` for classification) under no_grad; it may not change the
  model or its mode for the caller (the loop switches eval/train).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, ...]


@dataclass(frozen=True)
class Target:
    """A level of one logged metric that counts as 'solved' for time-to-target."""

    metric: str  # a logged key: "val/accuracy", "val/loss", "train/loss"
    value: float
    higher_is_better: bool = False

    def reached(self, value: float) -> bool:
        return value >= self.value if self.higher_is_better else value <= self.value


@dataclass(frozen=True)
class Budget:
    """Default training length when the user sets neither trainer.epochs nor trainer.max_steps."""

    epochs: int | None = None
    max_steps: int | None = None


@dataclass(frozen=True)
class Splits:
    """In-memory tensors; element 0 of each tuple is the input, element 1 (if any) the target."""

    train: Batch
    val: Batch


class Task:
    """A benchmark problem: data, model, loss, metrics, and the optimum f* where it is known."""

    name: ClassVar[str]
    classification: ClassVar[bool] = False  # evaluate reports accuracy
    dtype: ClassVar[torch.dtype] = torch.float32  # textbook tasks use float64 to match their plain loops
    default_budget: ClassVar[Budget] = Budget(epochs=10)
    # Most torch CPU threads worth using. The built-in models are tiny: waking a second thread costs more than the
    # share of the work it takes (BENCHMARKS.md). None: no cap.
    max_threads: ClassVar[int | None] = 1
    # How K trials of this task train as one program, by name; harness.batched builds that form and checks it
    # against what the task really does. None: its trials run one at a time.
    # - "stacked_net": an nn.Linear or an nn.Sequential of Linear and ReLU/Tanh/Sigmoid layers with a built-in
    #   criterion (mse_loss, cross_entropy, binary_cross_entropy_with_logits); on CPU bitwise the single run.
    # - "function": FunctionTask's `objective` per trial under torch.func.vmap.
    # - "vmap": any buffer-free module per trial under torch.func.vmap; not bitwise (within 1e-6 relative a step).
    # Whatever the name, a task that overrides `loss` or `evaluate`, or whose model the form cannot take, falls back
    # to one at a time. The tasks never import harness.batched: it sits above them.
    batched_form: ClassVar[str | None] = "stacked_net"

    def make_data(self) -> Splits:
        """Build the data (deterministic; see module rules)."""
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """Build a freshly initialised model (torch is already seeded with the run seed)."""
        raise NotImplementedError

    def f_star(self, splits: Splits) -> float | None:
        """The optimal training loss, if known (logs train/suboptimality = loss - f*)."""
        return None

    def target(self, splits: Splits) -> Target | None:
        """The level that counts as reached for time_to_target_s."""
        return None

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Mean loss over a batch."""
        inputs, targets = batch
        return self.criterion(model(inputs), targets)

    criterion: Callable[[Tensor, Tensor], Tensor] = staticmethod(nn.functional.mse_loss)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        """Loss (and accuracy for classification) over a whole split."""
        inputs, targets = data
        outputs = model(inputs)
        metrics = {"loss": float(self.criterion(outputs, targets))}
        if self.classification:
            metrics["accuracy"] = float(self.correct(outputs, targets).float().mean())
        return metrics

    def correct(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-sample correctness (multi-class argmax by default)."""
        return outputs.argmax(dim=1) == targets


class ParameterVector(nn.Module):
    """A model that is just a point x in R^d: the function tasks optimise it directly."""

    def __init__(self, start: list[float], dtype: torch.dtype):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(start, dtype=dtype))

    def forward(self, _inputs: Tensor | None = None) -> Tensor:
        return self.x


class FunctionTask(Task):
    """Minimise f(x) from a fixed start. No data: one dummy sample, so a step is one optimizer step."""

    start: ClassVar[list[float]]
    optimum: ClassVar[float] = 0.0
    tolerance: ClassVar[float] = 1e-4  # target: f(x) - f* below this
    dtype = torch.float64
    default_budget = Budget(max_steps=200)
    batched_form = "function"  # while loss, evaluate and make_model are these (harness.batched checks)

    def objective(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def make_data(self) -> Splits:
        dummy = (torch.zeros(1, 0, dtype=self.dtype),)
        return Splits(train=dummy, val=dummy)

    def make_model(self) -> nn.Module:
        return ParameterVector(self.start, self.dtype)

    def f_star(self, splits: Splits) -> float:
        return self.optimum

    def target(self, splits: Splits) -> Target:
        return Target("train/loss", self.optimum + self.tolerance)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.objective(model())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Batch) -> dict[str, float]:
        return {"loss": float(self.objective(model()))}
