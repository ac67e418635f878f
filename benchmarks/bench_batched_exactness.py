"""Batched trials vs the same jobs run alone: bitwise, or the largest relative difference (BENCHMARKS.md §6 table).

Per (task, optimizer) cell: 3 trials (two lrs, two seeds) trained as one group and each alone through harness.loop
and the DataLoader, with the helpers of tests/test_batched.py (the very comparison the tests make, over more steps).
Prints `bitwise` when every per-step train/loss, every val/loss and the final parameters have equal bits, else the
largest relative difference of train/loss and val/loss.

    PYTHONPATH=.:tests python benchmarks/bench_batched_exactness.py --tasks digits_mlp --optimizers rmsprop adagrad
"""

import argparse

import torch
from test_batched import _specs, rel_diff, run_alone, run_group


def cell(task: str, optimizer: str, steps: int) -> str:
    """`bitwise`, or the largest relative difference of the per-step losses, for one table cell."""
    specs = _specs(task, optimizer, steps=steps, eval_every=10)
    trackers, _, params = run_group(specs)
    worst, bitwise = 0.0, True
    for i, spec in enumerate(specs):
        alone, _, alone_params = run_alone(spec)
        for key in ("train/loss", "val/loss"):
            bitwise &= trackers[i].values(key) == alone.values(key)
            worst = max(worst, rel_diff(trackers[i].values(key), alone.values(key)))
        if params[i] is not None:
            bitwise &= all(torch.equal(a, b) for a, b in zip(params[i], alone_params))
    return "bitwise" if bitwise else f"{worst:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["quadratic", "linreg_1d", "digits_mlp", "linreg_10d"])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam", "rmsprop", "adagrad"])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    for task in args.tasks:
        for optimizer in args.optimizers:
            print(f"{task} {optimizer}: {cell(task, optimizer, args.steps)}", flush=True)


if __name__ == "__main__":
    main()
