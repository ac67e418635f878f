"""Shared pieces of the benchmarks: a plain PyTorch loop on the same data and model, and timing helpers."""

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402

from harness.tasks import create_task  # noqa: E402


def digits_data(task: str = "digits_mlp") -> tuple[torch.Tensor, torch.Tensor]:
    splits = create_task(task).make_data()
    return splits.train


def plain_loop(
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    task: str = "digits_mlp",
    device: str = "cpu",
) -> list[float]:
    """What a user would write by hand: randperm index slices, Adam, losses kept in a list.

    On an accelerator the losses stay on the device until the end (a `.item()` per step would wait for it).
    """
    problem = create_task(task)
    x, y = (t.to(device) for t in problem.make_data().train)
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    on_host = torch.device(device).type == "cpu"
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item() if on_host else loss.detach())
    return losses if on_host else torch.stack(losses).tolist()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def process_clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads)."""
    return time.perf_counter(), time.process_time()


def children_clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of the finished child processes): for timing whole processes."""
    times = os.times()
    return time.perf_counter(), times.children_user + times.children_system


def interleaved_marginals(
    runs: dict[str, Callable[[int], object]],
    short: int,
    long: int,
    rounds: int,
    clock: Callable[[], tuple[float, float]] = process_clock,
) -> dict[str, list[float]]:
    """Marginal seconds per epoch of each run, round after round, the order rotating every round.

    Interleaving puts every variant under the same load drift, so per-round ratios stay comparable on a busy machine.
    Returns wall time under each name and CPU time under `<name> cpu`: on a machine shared with other work, CPU time
    counts the work done rather than the time spent waiting for a core.
    """
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in runs} | {f"{name} cpu": [] for name in runs}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = clock()
            runs[name](long)
            t1 = clock()
            runs[name](short)
            t2 = clock()
            samples[name].append(((t1[0] - t0[0]) - (t2[0] - t1[0])) / (long - short))
            samples[f"{name} cpu"].append(((t1[1] - t0[1]) - (t2[1] - t1[1])) / (long - short))
    return samples


def median_ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of the per-round ratio name / baseline."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline]))
