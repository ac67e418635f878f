"""Linear regression problems from the textbooks, with the least-squares optimum as f*."""

import numpy as np
import torch
from torch import nn

from harness.tasks.base import Budget, Splits, Target, Task
from harness.tasks.registry import register_task


def least_squares_mse(x: torch.Tensor, y: torch.Tensor, bias: bool) -> float:
    """The minimum of the training MSE over linear models, solved exactly in float64."""
    a = x.double().numpy()
    if bias:
        a = np.hstack([a, np.ones((a.shape[0], 1))])
    b = y.double().numpy()
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(np.mean((a @ coef - b) ** 2))


class LinearRegression(Task):
    """Shared by the regression tasks: MSE of a linear model; val is the full training set unless split."""

    bias = True
    tolerance = 1e-3  # target: val loss within this of the least-squares optimum

    def f_star(self, splits: Splits) -> float:
        return least_squares_mse(*splits.train, bias=self.bias)

    def target(self, splits: Splits) -> Target:
        return Target("val/loss", least_squares_mse(*splits.val, bias=self.bias) + self.tolerance)


@register_task
class LinregOrigin(LinearRegression):
    """x = [1, 2, 3], y = [2, 4, 6]; y = w x without bias from w = 1.0. Full-batch GD at lr 0.01 reproduces
    `loss = mean((w x - y)^2); w -= lr * mean(2 x (w x - y))` step by step."""

    name = "linreg_origin"
    dtype = torch.float64
    bias = False
    tolerance = 1e-6
    default_budget = Budget(epochs=50)

    def make_data(self) -> Splits:
        x = torch.tensor([[1.0], [2.0], [3.0]], dtype=self.dtype)
        data = (x, 2 * x)
        return Splits(train=data, val=data)

    def make_model(self) -> nn.Module:
        model = nn.Linear(1, 1, bias=False, dtype=self.dtype)
        nn.init.constant_(model.weight, 1.0)
        return model


@register_task
class Linreg1d(LinearRegression):
    """numpy seed 42: X = rand(100, 1), y = 2X + 1 + 0.1 randn(100, 1); nn.Linear(1, 1); all 100 points train."""

    name = "linreg_1d"
    dtype = torch.float64
    default_budget = Budget(epochs=50)

    def make_data(self) -> Splits:
        rng = np.random.RandomState(42)  # the legacy global-seed stream, without touching the global RNG
        x = rng.rand(100, 1)
        y = 2 * x + 1 + 0.1 * rng.randn(100, 1)
        data = (torch.tensor(x, dtype=self.dtype), torch.tensor(y, dtype=self.dtype))
        return Splits(train=data, val=data)

    def make_model(self) -> nn.Module:
        return nn.Linear(1, 1, dtype=self.dtype)


@register_task
class Linreg10d(LinearRegression):
    """nn.Linear(10, 1) on 1,000 Gaussian inputs; targets from a fixed random linear teacher plus noise 0.1;
    800 train / 200 validation."""

    name = "linreg_10d"
    default_budget = Budget(epochs=20)
    tolerance = 5e-3

    def make_data(self) -> Splits:
        rng = np.random.RandomState(10)
        x = rng.randn(1000, 10)
        y = x @ rng.randn(10, 1) + 0.5 + 0.1 * rng.randn(1000, 1)
        x_t, y_t = torch.tensor(x, dtype=self.dtype), torch.tensor(y, dtype=self.dtype)
        return Splits(train=(x_t[:800], y_t[:800]), val=(x_t[800:], y_t[800:]))

    def make_model(self) -> nn.Module:
        return nn.Linear(10, 1)
