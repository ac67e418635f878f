"""Single run vs a plain PyTorch loop: marginal cost per epoch of digits_mlp, Adam, per-step logging.

    .venv/bin/python benchmarks/bench_single_run.py [--rounds 7] [--processes] [--lightning]

In-process: the plain loop and the harness (`run_job`, the path `python -m harness.train` takes) run interleaved in
this process, round after round, on the same data, model and thread count; the harness logs every step to a fresh
SQLite MLflow store. Marginal cost per epoch = (long run - short run) / extra epochs, so start-up and run creation
cancel; each ratio is the median over rounds of that round's ratio. With --processes the same comparison is made
between whole processes: `python -m harness.train ...` against a script running the plain loop. With CUDA present
the script also prints steps/s of the plain loop and the harness on the GPU for digits_mlp and digits_cnn.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import children_clock, interleaved_marginals, median_ratio, plain_loop  # noqa: E402

from harness.config import register_configs, to_config  # noqa: E402
from harness.job import JobContext, run_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def harness_overrides(
    store: Path, threads: int, batch_size: int, tracking: bool, task: str = "digits_mlp", device: str = "cpu"
) -> list[str]:
    return [
        f"task={task}",
        "optimizer=adam",
        f"data.batch_size={batch_size}",
        f"threads={threads}",
        f"device={device}",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.enabled={str(tracking).lower()}",
        "tracking.progress=false",
        "trainer.eval_every=1000000",  # evaluations at the start and the end only: this measures the steps
    ]


def harness_run(store: Path, threads: int, batch_size: int = 32, tracking: bool = True, **kw):
    """run(epochs) -> RunResult through run_job, composing each epoch count's config once."""
    from hydra import compose, initialize_config_dir

    base, configs = harness_overrides(store, threads, batch_size, tracking, **kw), {}

    def run(epochs: int):
        if epochs not in configs:
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                configs[epochs] = to_config(compose("config", overrides=[*base, f"trainer.epochs={epochs}"]))
        return run_job(configs[epochs], JobContext(project_dir=store))

    return run


def in_process(args, store: Path) -> None:
    runs = {
        "plain b32": lambda e: plain_loop(e, 32),
        "harness b32": harness_run(store, args.threads, 32),
        "no tracking b32": harness_run(store, args.threads, 32, tracking=False),
        "plain b1": lambda e: plain_loop(e, 1),
        "harness b1": harness_run(store, args.threads, 1),
    }
    if not args.b1_rounds:
        runs = {k: v for k, v in runs.items() if k.endswith("b32")}
    for run in runs.values():  # warm-up: imports, store creation, first-call costs
        run(1)
    big = {k: v for k, v in runs.items() if k.endswith("b32")}
    small = {k: v for k, v in runs.items() if k.endswith("b1")}
    rows = [
        ("plain loop, batch 32", "plain b32", None, None),
        ("harness + MLflow, batch 32", "harness b32", "plain b32", 1.05),
        ("harness, tracking disabled, batch 32", "no tracking b32", "plain b32", 1.02),
        ("plain loop, batch 1", "plain b1", None, None),
        ("harness + MLflow, batch 1", "harness b1", "plain b1", 1.10),
    ]
    samples = interleaved_marginals(big, args.short, args.long, args.rounds)
    if args.b1_rounds:
        samples.update(interleaved_marginals(small, 1, 1 + args.long_b1, args.b1_rounds))
    else:
        rows = rows[:3]
    print(
        f"in-process, threads={args.threads}, median of {args.rounds} interleaved rounds ({args.b1_rounds} at batch 1)"
    )
    print(f"  {'':38s} {'wall ms/epoch':>14s} {'ratio':>7s}   {'CPU ms/epoch':>13s} {'ratio':>7s}   target")
    for label, name, baseline, target in rows:
        line = f"  {label:38s} {statistics.median(samples[name]) * 1e3:14.2f} "
        wall = f"{median_ratio(samples, name, baseline):7.3f}" if baseline else " " * 7
        cpu = f"{median_ratio(samples, f'{name} cpu', f'{baseline} cpu'):7.3f}" if baseline else " " * 7
        line += f"{wall}   {statistics.median(samples[f'{name} cpu']) * 1e3:13.2f} {cpu}"
        print(line + (f"   <= {target:.2f}" if target else ""))


PLAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {bench!r})
torch.set_num_threads({threads})
from common import plain_loop
plain_loop(int(sys.argv[1]))
"""


def whole_processes(args, store: Path) -> None:
    """`python -m harness.train` vs `python plain.py`, both with the whole process timed from outside."""
    script = store / "plain.py"
    script.write_text(PLAIN_SCRIPT.format(bench=str(ROOT / "benchmarks"), threads=args.threads))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    harness_args = harness_overrides(store, args.threads, 32, tracking=True)

    def process(argv):
        def run(epochs: int) -> None:
            extra = [f"trainer.epochs={epochs}"] if "harness.train" in argv else [str(epochs)]
            subprocess.run([*argv, *extra], cwd=store, env=env, check=True, capture_output=True)

        return run

    runs = {
        "plain": process([sys.executable, str(script)]),
        "harness": process([sys.executable, "-m", "harness.train", *harness_args]),
    }
    for run in runs.values():
        run(1)
    samples = interleaved_marginals(runs, args.short, args.process_long, args.rounds, clock=children_clock)
    print(f"whole processes, epochs {args.short} vs {args.process_long}, median of {args.rounds} rounds")
    print(f"  {'':26s} {'wall ms/epoch':>14s} {'ratio':>7s}   {'CPU ms/epoch':>13s} {'ratio':>7s}   target")
    for label, name in (("plain loop process", "plain"), ("python -m harness.train", "harness")):
        wall = f"{median_ratio(samples, name, 'plain'):7.3f}" if name != "plain" else " " * 7
        cpu = f"{median_ratio(samples, f'{name} cpu', 'plain cpu'):7.3f}" if name != "plain" else " " * 7
        line = f"  {label:26s} {statistics.median(samples[name]) * 1e3:14.2f} {wall}"
        line += f"   {statistics.median(samples[f'{name} cpu']) * 1e3:13.2f} {cpu}"
        print(line + ("   <= 1.10" if name != "plain" else ""))


def on_gpu(args, store: Path) -> None:
    """Steps per second of the plain loop and the harness on CUDA (no per-step host sync in either)."""
    print("CUDA:", torch.cuda.get_device_name())
    for task in ("digits_mlp", "digits_cnn"):
        harness = harness_run(store, args.threads, 32, tracking=True, task=task, device="cuda")
        steps_per_epoch = -(-len(create_data(task)) // 32)
        rates = {"plain": [], "harness": []}

        def plain(epochs: int, task: str = task) -> None:
            plain_loop(epochs, task=task, device="cuda")

        plain(1), harness(1)
        for _ in range(args.rounds):
            for name, run in (("plain", plain), ("harness", harness)):
                torch.cuda.synchronize()
                start = time.perf_counter()
                run(args.gpu_epochs)
                torch.cuda.synchronize()
                rates[name].append(args.gpu_epochs * steps_per_epoch / (time.perf_counter() - start))
        theirs, ours = (statistics.median(rates[k]) for k in ("plain", "harness"))
        print(
            f"  {task:11s} plain {theirs:8.0f} steps/s   harness {ours:8.0f} steps/s   ratio {theirs / ours:.3f}"
        )


def create_data(task: str):
    from harness.tasks import create_task

    return create_task(task).make_data().train[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=12)
    parser.add_argument("--long-b1", type=int, default=2, help="extra epochs of the batch-1 runs")
    parser.add_argument(
        "--b1-rounds", type=int, default=None, help="rounds at batch 1 (default --rounds; 0: skip)"
    )
    parser.add_argument("--processes", action="store_true", help="also compare whole processes")
    parser.add_argument("--process-long", type=int, default=60)
    parser.add_argument("--gpu-epochs", type=int, default=20)
    parser.add_argument("--lightning", action="store_true", help="also PyTorch Lightning (needs `.[bench]`)")
    args = parser.parse_args()
    args.b1_rounds = args.rounds if args.b1_rounds is None else args.b1_rounds
    register_configs()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        in_process(args, store)
        if args.processes:
            whole_processes(args, store)
        if args.lightning:
            lightning(args, store)
        if torch.cuda.is_available():
            on_gpu(args, store)


def lightning(args, store: Path) -> None:
    from lightning_baseline import lightning_run

    uri = f"sqlite:///{store}/lightning.db"
    runs = {"plain": lambda e: plain_loop(e), "lightning": lambda e: lightning_run(e, uri)}
    lightning_run(1, uri)
    samples = interleaved_marginals(runs, args.short, args.long, args.rounds)
    print(f"  Lightning + MLFlowLogger  ratio {median_ratio(samples, 'lightning', 'plain'):.3f}")


if __name__ == "__main__":
    main()
