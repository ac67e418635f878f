"""One tracked run that evaluates every epoch vs a plain PyTorch loop that does the same: marginal cost per epoch.

    .venv/bin/python benchmarks/bench_eval.py [--rounds 7] [--no-processes] [--no-in-process] [--sparse]

digits_mlp, Adam, batch 32, 1 torch thread. The plain loop is what a user writes by hand: randperm slices, the loss
of every step kept as a float, and after every epoch (and before the first) the validation loss and accuracy under
`torch.no_grad()` in eval mode. The harness is `python -m harness.train ... trainer.eval_every=<steps per epoch>`
logging to a fresh SQLite MLflow store (every step's series, every evaluation's metrics).

- whole process: `python -m harness.train` against a script running the plain loop, each timed from outside
  (start-up, run creation, the end of the run and the interpreter's exit included);
- in-process: `run_job` (the path `python -m harness.train` takes) against the plain loop in this process.

Marginal cost per epoch = (long run - short run) / extra epochs, so start-up and run creation cancel. The variants
run alternated, the order rotating every round; each ratio is the median over rounds of that round's ratio.
`--sparse` adds both with evaluations only before and after training, to isolate what one evaluation costs each.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import children_clock, digits_data, interleaved_marginals, median_ratio  # noqa: E402

from harness.config import register_configs, to_config  # noqa: E402
from harness.job import JobContext, run_job  # noqa: E402
from harness.tasks import create_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
TARGET = 1.05  # issue 19, item 5: per-epoch cost with an evaluation every epoch, whole process and in-process


def steps_per_epoch() -> int:
    return -(-len(digits_data()[0]) // BATCH)


def plain_loop_with_eval(
    epochs: int, evaluate_each_epoch: bool = True, batch_size: int = BATCH, lr: float = 1e-3, seed: int = 0
) -> list:
    """The hand-written loop (benchmarks/common.plain_loop) plus an evaluation before training and after each
    epoch (only before and after training when not `evaluate_each_epoch`); returns the step losses and the
    (val loss, val accuracy) pairs."""
    task = create_task("digits_mlp")
    splits = task.make_data()
    (x, y), (xv, yv) = splits.train, splits.val
    torch.manual_seed(seed)
    model = task.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, evaluations = [], []

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            out = model(xv)
            evaluations.append(
                (
                    float(torch.nn.functional.cross_entropy(out, yv)),
                    float((out.argmax(1) == yv).float().mean()),
                )
            )
        model.train()

    evaluate()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if evaluate_each_epoch or epoch == epochs - 1:
            evaluate()
    return [losses, evaluations]


def harness_overrides(store: Path, eval_every: int) -> list[str]:
    return [
        "task=digits_mlp",
        "optimizer=adam",
        f"data.batch_size={BATCH}",
        "threads=1",
        "device=cpu",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        "tracking.progress=false",
        f"trainer.eval_every={eval_every}",
    ]


def harness_in_process(store: Path, eval_every: int):
    """run(epochs) -> RunResult through run_job, composing each epoch count's config once."""
    from hydra import compose, initialize_config_dir

    base, configs = harness_overrides(store, eval_every), {}

    def run(epochs: int):
        if epochs not in configs:
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                configs[epochs] = to_config(compose("config", overrides=[*base, f"trainer.epochs={epochs}"]))
        return run_job(configs[epochs], JobContext(project_dir=store))

    return run


PLAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {bench!r})
torch.set_num_threads(1)
from bench_eval import plain_loop_with_eval
plain_loop_with_eval(int(sys.argv[-1]), evaluate_each_epoch=sys.argv[1] == "every")
"""


def processes(store: Path, eval_every: int, sparse: bool) -> dict:
    """run(epochs) per variant, each a whole process."""
    script = store / "plain.py"
    script.write_text(PLAIN_SCRIPT.format(bench=str(ROOT / "benchmarks")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}

    def process(argv: list[str], harness: bool):
        def run(epochs: int) -> None:
            extra = [f"trainer.epochs={epochs}"] if harness else [str(epochs)]  # the epochs come last
            done = subprocess.run([*argv, *extra], cwd=store, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{' '.join([*argv, *extra])} failed ({done.returncode}):\n{done.stderr[-2000:]}")

        return run

    train = [sys.executable, "-m", "harness.train"]
    runs = {
        "plain": process([sys.executable, str(script), "every"], harness=False),
        "harness": process([*train, *harness_overrides(store, eval_every)], harness=True),
    }
    if sparse:
        runs["plain sparse"] = process([sys.executable, str(script), "ends"], harness=False)
        runs["sparse"] = process([*train, *harness_overrides(store, 10**9)], harness=True)
    return runs


def in_process(store: Path, eval_every: int, sparse: bool) -> dict:
    runs = {"plain": plain_loop_with_eval, "harness": harness_in_process(store, eval_every)}
    if sparse:
        runs["plain sparse"] = lambda epochs: plain_loop_with_eval(epochs, evaluate_each_epoch=False)
        runs["sparse"] = harness_in_process(store, 10**9)
    return runs


LABELS = {
    "plain": "plain loop, eval every epoch",
    "harness": "harness + MLflow, eval every epoch",
    "plain sparse": "plain loop, eval at start/end",
    "sparse": "harness + MLflow, eval at start/end",
}


def measure(title: str, runs: dict, short: int, long: int, rounds: int, clock=None) -> None:
    for run in runs.values():  # warm-up: imports, the store's creation, first-call costs
        run(1)
    kw = {"clock": clock} if clock else {}
    samples = interleaved_marginals(runs, short, long, rounds, **kw)
    print(f"{title}, epochs {short} vs {long}, median of {rounds} alternated rounds")
    print(f"  {'':36s} {'wall ms/epoch':>14s} {'ratio':>7s}   {'CPU ms/epoch':>13s} {'ratio':>7s}   target")
    for name in runs:
        baseline = "plain sparse" if name == "sparse" else "plain"
        base = name not in ("plain", "plain sparse")
        wall = f"{median_ratio(samples, name, baseline):7.3f}" if base else " " * 7
        cpu = f"{median_ratio(samples, f'{name} cpu', f'{baseline} cpu'):7.3f}" if base else " " * 7
        line = f"  {LABELS[name]:36s} {statistics.median(samples[name]) * 1e3:14.2f} {wall}"
        line += f"   {statistics.median(samples[f'{name} cpu']) * 1e3:13.2f} {cpu}"
        print(line + (f"   <= {TARGET:.2f}" if name == "harness" else ""), flush=True)
    print(f"  harness/plain wall ratio per round: {spread(samples, 'harness', 'plain')}")
    if (
        "sparse" in runs
    ):  # one evaluation more per epoch: the marginal difference is what one evaluation costs
        for who, every, ends in (("harness", "harness", "sparse"), ("plain loop", "plain", "plain sparse")):
            wall = statistics.median(a - b for a, b in zip(samples[every], samples[ends])) * 1e3
            cpu = (
                statistics.median(a - b for a, b in zip(samples[f"{every} cpu"], samples[f"{ends} cpu"]))
                * 1e3
            )
            print(
                f"  one evaluation, {who:10s}: {wall:6.2f} ms wall, {cpu:6.2f} ms CPU (median of per-round differences)"
            )


def spread(samples: dict, name: str, baseline: str) -> str:
    """The per-round ratios' quartiles, so that a median can be read against the machine's scatter."""
    ratios = sorted(a / b for a, b in zip(samples[name], samples[baseline]))
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
    return f"min {ratios[0]:.3f}, quartiles {q1:.3f}-{q3:.3f}, max {ratios[-1]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--short", type=int, default=10, help="epochs of the short whole-process runs")
    parser.add_argument("--long", type=int, default=130, help="epochs of the long whole-process runs")
    parser.add_argument("--in-short", type=int, default=4, help="epochs of the short in-process runs")
    parser.add_argument("--in-long", type=int, default=44, help="epochs of the long in-process runs")
    parser.add_argument("--no-processes", action="store_true", help="skip the whole-process comparison")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process comparison")
    parser.add_argument("--sparse", action="store_true", help="also the harness evaluating at start/end only")
    args = parser.parse_args()
    register_configs()
    torch.set_num_threads(1)
    eval_every = steps_per_epoch()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        if not args.no_processes:
            runs = processes(store, eval_every, args.sparse)
            measure("whole processes", runs, args.short, args.long, args.rounds, clock=children_clock)
        if not args.no_in_process:
            runs = in_process(store, eval_every, args.sparse)
            measure("in-process", runs, args.in_short, args.in_long, args.rounds)


if __name__ == "__main__":
    main()
