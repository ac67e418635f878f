"""Shared pieces of the benchmarks: a plain PyTorch loop on the same data and model, and timing helpers."""

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402

from harness.tasks import create_task  # noqa: E402


def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    splits = create_task("digits_mlp").make_data()
    return splits.train


def plain_loop(epochs: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """What a user would write by hand: randperm index slices, Adam, losses kept in a list."""
    x, y = digits_data()
    torch.manual_seed(seed)
    model = create_task("digits_mlp").make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def marginal_per_epoch(run: Callable[[int], object], short: int, long: int, repeats: int) -> float:
    """(time of a long run - time of a short run) / extra epochs: fixed costs (start-up, run creation) cancel."""
    samples = [
        (timed(lambda: run(long)) - timed(lambda: run(short))) / (long - short) for _ in range(repeats)
    ]
    return statistics.median(samples)
