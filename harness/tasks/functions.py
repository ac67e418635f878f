"""Classic test functions of optimisation, from fixed starting points, with known minima."""

import math

import torch
from torch import Tensor

from harness.tasks.base import Budget, FunctionTask
from harness.tasks.registry import register_task


@register_task
class Quadratic(FunctionTask):
    """The quadratic bowl f(x) = x0^2 + x1^2 from [3, 2]: SGD at lr 0.1 gives x_t = 0.8^t [3, 2]."""

    name = "quadratic"
    start = [3.0, 2.0]
    default_budget = Budget(max_steps=100)

    def objective(self, x: Tensor) -> Tensor:
        return (x**2).sum()


@register_task
class Rosenbrock(FunctionTask):
    """The banana valley (1 - x)^2 + 100 (y - x^2)^2 from [-1.2, 1]; minimum 0 at [1, 1]."""

    name = "rosenbrock"
    start = [-1.2, 1.0]
    default_budget = Budget(max_steps=2000)

    def objective(self, x: Tensor) -> Tensor:
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@register_task
class Rastrigin(FunctionTask):
    """The 2-D Rastrigin function 20 + sum(x^2 - 10 cos(2 pi x)) from [2.2, -1.7]; global minimum 0 at the origin,
    with a local minimum near every integer point: a test of getting stuck."""

    name = "rastrigin"
    start = [2.2, -1.7]
    tolerance = 1e-2
    default_budget = Budget(max_steps=500)

    def objective(self, x: Tensor) -> Tensor:
        return 10 * x.numel() + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum()
