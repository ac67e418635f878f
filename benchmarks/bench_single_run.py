"""Single run vs a plain PyTorch loop: marginal cost per epoch of digits_mlp, Adam, batch 32, per-step logging.

    .venv/bin/python benchmarks/bench_single_run.py [--repeats 5] [--threads 1]

Both run in this process, interleaved, on the same data, model and thread count; the harness logs every step to a
fresh SQLite MLflow store (the default kind of store).
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import marginal_per_epoch, plain_loop  # noqa: E402

from harness.config import register_configs, to_config  # noqa: E402
from harness.job import JobContext, run_job  # noqa: E402


def harness_run(store: Path, threads: int, tracking: bool = True):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        base = [
            "task=digits_mlp",
            "optimizer=adam",
            "data.batch_size=32",
            f"threads={threads}",
            f"tracking.uri=sqlite:///{store}/mlflow.db",
            f"tracking.enabled={str(tracking).lower()}",
            "tracking.progress=false",
            "trainer.eval_every=1000000",
        ]
        configs = {}

    def run(epochs: int):
        if epochs not in configs:
            with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
                configs[epochs] = to_config(compose("config", overrides=[*base, f"trainer.epochs={epochs}"]))
        return run_job(configs[epochs], JobContext(project_dir=store))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=12)
    parser.add_argument(
        "--no-lightning", action="store_true", help="skip PyTorch Lightning (needs `.[bench]`)"
    )
    args = parser.parse_args()
    register_configs()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        harness = harness_run(store, args.threads)
        untracked = harness_run(store, args.threads, tracking=False)
        harness(1), plain_loop(1)  # warm-up: imports, store creation, first-call costs
        plain = marginal_per_epoch(lambda e: plain_loop(e), args.short, args.long, args.repeats)
        tracked = marginal_per_epoch(harness, args.short, args.long, args.repeats)
        bare = marginal_per_epoch(untracked, args.short, args.long, args.repeats)
        lightning = None
        if not args.no_lightning:
            from lightning_baseline import lightning_run

            uri = f"sqlite:///{store}/lightning.db"
            lightning_run(1, uri)
            lightning = marginal_per_epoch(
                lambda e: lightning_run(e, uri), args.short, args.long, args.repeats
            )
    print(f"threads={args.threads} epochs {args.short} vs {args.long}, median of {args.repeats}")
    print(f"plain loop          {plain * 1e3:8.2f} ms/epoch")
    print(f"harness, no MLflow  {bare * 1e3:8.2f} ms/epoch  ratio {bare / plain:.3f}")
    print(f"harness + MLflow    {tracked * 1e3:8.2f} ms/epoch  ratio {tracked / plain:.3f}")
    if lightning is not None:
        print(f"Lightning + MLflow  {lightning * 1e3:8.2f} ms/epoch  ratio {lightning / plain:.3f}")


if __name__ == "__main__":
    main()
