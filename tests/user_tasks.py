"""A user's own tasks, registered from outside the harness (`task.module=user_tasks task=<name>`)."""

from torch import Tensor, nn

from harness.tasks import Batch, register_task
from harness.tasks.functions import Quadratic
from harness.tasks.sklearn_data import DigitsMLP


class _FailsAtStep(Quadratic):
    fail_at = 4
    error: type[BaseException] = RuntimeError

    def __init__(self) -> None:
        self.calls = 0

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.calls == self.fail_at:
            raise self.error(f"boom at step {self.calls}")
        self.calls += 1
        return super().loss(model, batch)


@register_task
class FailingTask(_FailsAtStep):
    name = "user_failing"


@register_task
class InterruptedTask(_FailsAtStep):
    name = "user_interrupted"
    error = KeyboardInterrupt


@register_task
class Cube(Quadratic):
    """f(x) = sum(x^4): a user task with its own objective."""

    name = "user_quartic"

    def objective(self, x: Tensor) -> Tensor:
        return (x**4).sum()


@register_task
class DiesInWorker(Quadratic):
    """Batches (it defines only its objective), and ends the process it trains in with exit code 3 when that is a
    worker of the batched launcher: a worker killed by the OOM killer or a crash in native code, as a test sees it."""

    name = "user_dies_in_worker"

    def objective(self, x: Tensor) -> Tensor:
        import multiprocessing
        import os

        if multiprocessing.parent_process() is not None:
            os._exit(3)
        return super().objective(x)


@register_task
class TanhSigmoidDigits(DigitsMLP):
    """A user's MLP of the building blocks with Sigmoid and Tanh (and a bias-free layer): it batches exactly."""

    name = "user_tanh_sigmoid_mlp"

    def make_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 48), nn.Sigmoid(), nn.Linear(48, 24, bias=False), nn.Tanh(), nn.Linear(24, 10)
        )
