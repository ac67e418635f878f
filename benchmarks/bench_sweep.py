"""Sweep costs, measured from the command line the way users launch sweeps.

    .venv/bin/python benchmarks/bench_sweep.py overhead   # fixed cost per job in an in-process sweep
    .venv/bin/python benchmarks/bench_sweep.py launchers  # a 48-job digits_mlp sweep, basic vs joblib (n_jobs=2)

overhead: `quadratic` with 10 steps (the optimisation itself is ~1 ms), N1 and N2 jobs, basic launcher;
(t(N2) - t(N1)) / (N2 - N1) is the cost per job with process start-up and sweep set-up cancelled.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(args: list[str], cwd: str) -> float:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.train", "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return elapsed


def overhead(small: int, large: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sweep(
            ["task=quadratic", "trainer.max_steps=10", "seed=0", "tracking.experiment=warm"], tmp
        )  # create DB

        def timed(n: int, tag: str) -> float:
            return sweep(
                [
                    "task=quadratic",
                    "trainer.max_steps=10",
                    f"seed=range(0,{n})",
                    f"tracking.experiment={tag}",
                ],
                tmp,
            )

        t_small, t_large = timed(small, "small"), timed(large, "large")
    per_job = (t_large - t_small) / (large - small)
    print(f"in-process sweep, quadratic 10 steps: {small} jobs {t_small:.2f} s, {large} jobs {t_large:.2f} s")
    print(f"fixed cost per job: {per_job * 1e3:.1f} ms")


def launchers() -> None:
    grid = [
        "task=digits_mlp",
        "optimizer=sgd,momentum,adam,rmsprop",
        "optimizer.lr_scale=0.3,1,3",
        "data.batch_size=32,128",
        "seed=0,1",
        "trainer.epochs=5",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        basic = sweep([*grid, "tracking.experiment=basic"], tmp)
        joblib = sweep(
            [*grid, "tracking.experiment=joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp
        )
    print(
        f"48-job digits_mlp sweep: basic {basic:.1f} s, joblib n_jobs=2 {joblib:.1f} s, ratio {joblib / basic:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["overhead", "launchers"])
    parser.add_argument("--small", type=int, default=5)
    parser.add_argument("--large", type=int, default=45)
    args = parser.parse_args()
    overhead(args.small, args.large) if args.what == "overhead" else launchers()


if __name__ == "__main__":
    main()
