"""Sweep costs, measured from the command line the way users launch sweeps.

    .venv/bin/python benchmarks/bench_sweep.py overhead   # fixed cost per job in an in-process sweep
    .venv/bin/python benchmarks/bench_sweep.py overhead --launcher batched --optimizer lbfgs
    .venv/bin/python benchmarks/bench_sweep.py launchers  # a 48-job digits_mlp sweep, basic vs joblib (n_jobs=2)
    .venv/bin/python benchmarks/bench_sweep.py demo       # the demo grid (+sweep=demo): joblib vs batched
    .venv/bin/python benchmarks/bench_sweep.py resume     # a done 2,000-point grid run again: cost per skip
    .venv/bin/python benchmarks/bench_sweep.py first --points 300  # time to the first job: harness vs basic sweeper

overhead: `quadratic` with 10 steps (the optimisation itself is negligible), N1 and N2 jobs (seeds), one launcher;
(t(N2) - t(N1)) / (N2 - N1) is the cost per job with process start-up and sweep set-up cancelled. The launchers
named in --launcher are measured interleaved, median of --repeats rounds.
"""

import argparse
import os
import statistics
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


LAUNCHER_ARGS = {"basic": ["hydra/launcher=basic"], "batched": ["hydra/launcher=batched"]}


def overhead(small: int, large: int, launchers: list[str], optimizer: str, repeats: int) -> None:
    base = ["task=quadratic", "trainer.max_steps=10", f"optimizer={optimizer}"]
    samples: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        sweep([*base, "seed=0", "tracking.experiment=warm"], tmp)  # create the DB

        def timed(n: int, tag: str, launcher: str) -> float:
            args = [*base, f"seed=range(0,{n})", f"tracking.experiment={tag}", *LAUNCHER_ARGS[launcher]]
            return sweep([*args, "hydra.callbacks.sweep.rerun=all"], tmp)

        for round_ in range(repeats):
            for name in launchers:
                t_small = timed(small, f"{name}-small-{round_}", name)
                t_large = timed(large, f"{name}-large-{round_}", name)
                samples[name].append((t_large - t_small) / (large - small))
                print(f"  {name}: {small} jobs {t_small:.2f} s, {large} jobs {t_large:.2f} s", flush=True)
    for name, values in samples.items():
        print(
            f"{name} launcher, quadratic {optimizer} 10 steps: fixed cost per job "
            f"{statistics.median(values) * 1e3:.1f} ms (median of {len(values)})"
        )


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


def demo(repeats: int) -> None:
    """The demo grid (`+sweep=demo`, 144 digits_mlp jobs) with joblib (as the demo ran it) and batched, interleaved."""
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        sweep(["task=quadratic", "trainer.max_steps=1", "tracking.experiment=warm"], tmp)  # create the DB
        for round_ in range(repeats):
            common = ["+sweep=demo", "hydra.callbacks.sweep.rerun=all", f"tracking.experiment=demo-{round_}"]
            joblib = sweep([*common, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp)
            batched = sweep([*common, "hydra/launcher=batched"], tmp)
            ratios.append(batched / joblib)
            print(
                f"demo grid (144 jobs): joblib n_jobs=2 {joblib:.1f} s, batched {batched:.1f} s, "
                f"ratio {batched / joblib:.3f}",
                flush=True,
            )
    print(
        f"batched / joblib wall time on the demo grid: {statistics.median(ratios):.3f} (median of {repeats})"
    )


def resume(points: int) -> None:
    """A grid of `points` done jobs run again: every job is skipped; (t(run again) - t(1-point sweep)) / points."""
    with tempfile.TemporaryDirectory() as tmp:
        grid = [
            "task=quadratic",
            "trainer.max_steps=1",
            f"seed=range(0,{points})",
            "tracking.experiment=resume",
        ]
        first = sweep([*grid, "hydra/launcher=batched"], tmp)
        again = sweep([*grid, "hydra/launcher=batched"], tmp)
        one = sweep(["task=quadratic", "trainer.max_steps=1", "seed=0", "tracking.experiment=one"], tmp)
    print(
        f"{points}-point grid: first run {first:.1f} s, run again (all skipped) {again:.1f} s, "
        f"1-job sweep {one:.1f} s: {(again - one) / points * 1e3:.2f} ms per skipped point"
    )


def first_job(points: int, args: list[str]) -> float:
    """Seconds from the command to the first job's progress line (the sweep is stopped there)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        command = [sys.executable, "-m", "harness.train", "-m", "task=quadratic", "trainer.max_steps=1"]
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*command, f"seed=range(0,{points})", *args], cwd=tmp, env=env, stderr=subprocess.PIPE, text=True
        )
        for line in proc.stderr:
            if line.startswith("[sweep] 1/"):
                break
        elapsed = time.perf_counter() - start
        proc.kill()
        proc.wait()
    return elapsed


def first(points: int) -> None:
    """Time to the first job: Hydra's basic sweeper (composes every job first) vs the harness sweeper."""
    for name, args in [("harness sweeper", []), ("basic sweeper", ["hydra/sweeper=basic"])]:
        print(
            f"{points}-point grid, {name}, basic launcher: first job done after {first_job(points, args):.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["overhead", "launchers", "demo", "resume", "first"])
    parser.add_argument("--small", type=int, default=5)
    parser.add_argument("--large", type=int, default=45)
    parser.add_argument("--launcher", nargs="+", default=["basic"], choices=sorted(LAUNCHER_ARGS))
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--points", type=int, default=2000)
    args = parser.parse_args()
    if args.what == "overhead":
        overhead(args.small, args.large, args.launcher, args.optimizer, args.repeats)
    elif args.what == "launchers":
        launchers()
    elif args.what == "demo":
        demo(args.repeats)
    elif args.what == "first":
        first(args.points)
    else:
        resume(args.points)


if __name__ == "__main__":
    main()
