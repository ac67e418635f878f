"""The demo grid on a SLURM cluster: packed pieces (hydra/launcher=batched_slurm) against one array task per job
(hydra/launcher=slurm), side by side, each into its own SQLite store in its own folder.

    bash scripts/slurm.sh start    # the single-node test cluster (make cluster)
    PYTHONPATH=. .venv/bin/python benchmarks/bench_cluster.py [--grid demo|small] [--only packed]

For each: wall time of the command as a user types it, SLURM jobs (array tasks) submitted, runs recorded; then the
relaunch of the finished sweep (0 submitted). `small` is a 24-point linreg grid, for a quick look.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

GRIDS = {
    "demo": ["+sweep=demo"],
    "small": ["task=linreg_10d", "optimizer=sgd,adam", "optimizer.lr_scale=0.1,1", "seed=range(0,6)"],
}
LAUNCHERS = {"packed": ["hydra/launcher=batched_slurm"], "per-job": ["hydra/launcher=slurm"]}


def run(arguments: list[str], cwd: Path) -> tuple[float, str]:
    command = [sys.executable, "-m", "harness.train", "-m", *arguments]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stderr


def tasks(cwd: Path) -> int:
    """Array tasks submitit made folders for (one per SLURM job of the array)."""
    return sum(1 for p in cwd.glob("multirun/*/*/.submitit/*") if re.fullmatch(r"\d+_\d+", p.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="demo")
    parser.add_argument("--only", choices=sorted(LAUNCHERS), help="one launcher (the per-job one takes minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for name, launcher in LAUNCHERS.items():
            if args.only and name != args.only:
                continue
            cwd = Path(tmp, name)
            cwd.mkdir()
            arguments = [*launcher, *GRIDS[args.grid], f"tracking.uri=sqlite:///{cwd}/mlflow.db"]
            wall, said = run(arguments, cwd)
            again, said_again = run(arguments, cwd)
            walls[name] = wall
            done = re.search(r"(\d+) grid points: ([^\n]*)", said)
            print(
                f"{name:8s} {wall:7.1f} s wall, {tasks(cwd)} SLURM jobs (array tasks), "
                f"{done.group(0) if done else '?'}; relaunch {again:.1f} s, "
                f"{'0 submitted' if 'nothing to launch' in said_again else 'SUBMITTED AGAIN'}",
                flush=True,
            )
        if len(walls) == 2:
            print(f"packed / per-job wall: {walls['packed'] / walls['per-job']:.3f}")


if __name__ == "__main__":
    main()
