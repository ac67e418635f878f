"""The harness's DataLoader against plain randperm index slices: one digits_mlp epoch (Adam) per batch size.

    .venv/bin/python benchmarks/bench_dataloader.py [--repeats 7]

Both loops train the same model the same way; only where the batches come from differs. Also shown: the default
`DataLoader(TensorDataset, shuffle=True)` that most people write (per-sample fetch + collate).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import digits_data  # noqa: E402

from harness.data import make_loader  # noqa: E402
from harness.tasks import create_task  # noqa: E402


def epoch(batches, model, optimizer) -> None:
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def plain_batches(x, y, batch_size, generator):
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


def time_epochs(make_batches, repeats: int) -> float:
    torch.manual_seed(0)
    model = create_task("digits_mlp").make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch(make_batches(), model, optimizer)  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch(make_batches(), model, optimizer)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = digits_data()
    print("batch  plain ms  harness ms  ratio   default DataLoader ms  ratio")
    for batch_size in (1, 32, 256):
        generator = torch.Generator().manual_seed(0)
        loader = make_loader((x, y), batch_size, shuffle=True, seed=0)
        default = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size, shuffle=True)
        plain = time_epochs(lambda: plain_batches(x, y, batch_size, generator), args.repeats)
        harness = time_epochs(lambda: loader, args.repeats)
        usual = time_epochs(lambda: default, args.repeats)
        print(
            f"{batch_size:5d}  {plain * 1e3:8.1f}  {harness * 1e3:10.1f}  {harness / plain:5.3f}"
            f"   {usual * 1e3:20.1f}  {usual / plain:5.2f}"
        )


if __name__ == "__main__":
    main()
