"""Benchmark the report at scale, in two cases: long runs (1,000 child runs x 1,000 steps with the harness's per-step
record) and many runs (20,000 child runs x 10 steps, a quadratic sweep trained by the batched launcher).

    MLFLOW_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/bench_report.py [--case steps|runs] [--dir DIR]
        [--rebuild] [--repeats N] [--compare OTHER_CHECKOUT ...]

Builds the store once under DIR (default: <tmp>/harness-bench-report[-runs]) and reuses it afterwards. Then times
whole `scripts/report.py --no-log` processes, imports included, as a user runs them: cold (no Parquet cache: reads
the store) and cached (the second report on the same sweep), `--repeats` rounds, and prints the medians of wall and
CPU time and the peak resident memory (of the report process and the workers it waited for). With --compare, the
other checkouts' reports run interleaved with this one's, on the same store.
Targets on 2 cores: long runs cold <= 10 s, cached <= 4 s; many runs cold <= 10 s and <= 1 GB.

The many-runs store is what a user's sweep makes: `python -m harness.train -m hydra/launcher=batched task=quadratic
optimizer=sgd,adam optimizer.lr=<RUNS_LRS log-spaced lrs> seed=0,1 trainer.max_steps=10`, in DIR; the largest lrs
diverge.

The store holds what the harness logs (the record contract of harness.tracking.schema), written through the
harness's own tracking port (harness.tracking.port, the path a training run takes on SQLite):
- per optimizer step: train/loss, train/suboptimality (the task knows f*), grad_norm, time/wall_s;
- at evaluation points (step 0, every EVAL_EVERY steps, the end): val/loss, val/accuracy, epoch, samples_seen, lr;
- once: the final metrics; params resolved.batch_size, resolved.steps_per_epoch, resolved.total_steps.
The grid: 4 optimizers x 10 learning rates x 5 batch sizes x 5 seeds; runs at too high an lr diverge part-way.
"""

import argparse
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

from harness.tracking import schema  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench"
TASK = "synthetic"
OPTIMIZERS = {"adam": 1e-3, "momentum": 1e-2, "rmsprop": 1e-3, "sgd": 1e-1}  # name -> default lr
LR_SCALES = np.logspace(-1.5, 1.5, 10)
BATCH_SIZES = [16, 32, 64, 128, 256]
SEEDS = range(5)
TRAIN_SIZE = 8192  # samples in the synthetic training set: steps per epoch = ceil(TRAIN_SIZE / batch size)
EVAL_EVERY = 50
F_STAR = 0.04
RUNS_LRS = np.logspace(-3, 0.5, 5000)  # the many-runs case: x 2 optimizers x 2 seeds = 20,000 runs


def main() -> None:
    args = _parse()
    directory = args.dir or Path(tempfile.gettempdir()) / (
        "harness-bench-report" + ("-runs" if args.case == "runs" else "")
    )
    db, done = directory / "mlflow.db", directory / "complete"
    uri = f"sqlite:///{db}"
    if args.case == "runs":
        size = f"{2 * 2 * len(RUNS_LRS)} runs x 10 steps, batched quadratic sweep"
    else:
        size = f"{args.runs} runs x {args.steps} steps, record v2"
    stale = not done.is_file() or done.read_text().strip() != size  # interrupted, or built at another size
    if (args.rebuild or stale) and directory.exists():
        shutil.rmtree(directory)
    if not done.is_file():
        started = time.perf_counter()
        if args.case == "runs":
            points = build_many_runs(uri, directory)
        else:
            points = build_store(uri, directory, args.runs, args.steps)
        done.write_text(size + "\n")
        print(
            f"built the store: {size}, {points:,} metric points in {time.perf_counter() - started:.0f} s ({db})"
        )
    else:
        print(f"reusing the store at {db} (--rebuild to make it again)")
    time_processes(uri, directory / "report", args.repeats, [ROOT, *args.compare])


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case", choices=["steps", "runs"], default="steps", help="long runs (default) or many runs"
    )
    parser.add_argument("--dir", type=Path, help="where the store is built (default: under the temp folder)")
    parser.add_argument(
        "--runs", type=int, default=1000, help="steps case: runs to create (the first N points)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="steps case: optimizer steps per run")
    parser.add_argument("--rebuild", action="store_true", help="delete and rebuild the store")
    parser.add_argument("--repeats", type=int, default=3, help="cold/cached rounds to time (medians printed)")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        help="other checkouts (e.g. `git worktree add /tmp/before main`) timed interleaved with this one",
    )
    return parser.parse_args()


def time_processes(uri: str, out_dir: Path, repeats: int, roots: list[Path]) -> None:
    """Whole `scripts/report.py` processes of each checkout in `roots`: cold (cache removed first) then cached,
    `repeats` rounds, the checkouts interleaved within each round. Prints wall and CPU (user + sys) seconds and
    the peak resident memory."""
    times: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(repeats):
        for kind in ("cold", "cached"):
            for root in roots:
                out = out_dir / root.name
                if kind == "cold":
                    shutil.rmtree(out, ignore_errors=True)
                wall, cpu, peak, line = _time_report(root, uri, out)
                times.setdefault((str(root), kind), []).append((wall, cpu, peak))
                print(f"{root} {kind}: wall {wall:.1f} s, cpu {cpu:.1f} s, peak {peak:.0f} MiB  ({line})")
    for (root, kind), values in times.items():
        walls, cpus, peaks = ([v[i] for v in values] for i in range(3))
        print(
            f"{root} whole process, {kind}: median wall {statistics.median(walls):.1f} s "
            f"(cpu {statistics.median(cpus):.1f} s, peak {max(peaks):.0f} MiB) over {len(values)}"
        )


def _time_report(root: Path, uri: str, out: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak resident MiB of the process and the children it waited for, its first stderr line)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(root)}
    command = [sys.executable, str(root / "scripts" / "report.py"), "--experiment", EXPERIMENT]
    command += ["--tracking-uri", uri, "--out", str(out), "--no-log"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this process (Popen.wait gives none)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stderr.seek(0)
        text = stderr.read()
    if process.returncode != 0:
        sys.exit(f"report failed:\n{text}")
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    return wall, usage.ru_utime + usage.ru_stime, peak, text.strip().splitlines()[0]


def build_many_runs(uri: str, directory: Path) -> int:
    """The many-runs store, as a user's sweep makes it (the batched launcher); returns the metric points."""
    directory.mkdir(parents=True, exist_ok=True)
    lrs = ",".join(f"{lr:.6g}" for lr in RUNS_LRS)
    command = [sys.executable, "-m", "harness.train", "-m", "hydra/launcher=batched", "task=quadratic"]
    command += ["optimizer=sgd,adam", f"optimizer.lr={lrs}", "seed=0,1", "trainer.max_steps=10"]
    command += [f"tracking.experiment={EXPERIMENT}", "hydra.sweep.dir=multirun"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the sweep failed:\n{done.stderr[-3000:]}")
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{directory / 'mlflow.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]


# --- the synthetic store ----------------------------------------------------------------------------------------


def build_store(uri: str, directory: Path, n_runs: int, steps: int) -> int:
    """One sweep parent and `n_runs` finished child runs; returns the number of metric points written."""
    from harness.tracking import stores
    from harness.tracking.port import Columns, NewRun, RunUpdate

    directory.mkdir(parents=True, exist_ok=True)
    found = stores.open_store(uri)  # a new store: MLflow's migrations, WAL mode as the harness sets it
    experiment_id = found.ensure_experiment(EXPERIMENT)
    grid = list(itertools.product(OPTIMIZERS, LR_SCALES, BATCH_SIZES, SEEDS))[:n_runs]
    tags = {schema.ROLE: schema.ROLE_SWEEP, schema.SWEEP_KEY: "bench", schema.GRID_SIZE: str(len(grid))}
    [parent] = found.create_runs(experiment_id, [NewRun("sweep bench", tags, {})])
    points = 0
    for index, point in enumerate(grid):
        points += _log_run(found, experiment_id, parent.run_id, point, steps, Columns, NewRun, RunUpdate)
        if (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(grid)} runs written", file=sys.stderr)
    found.end_run(parent.run_id, schema.FINISHED)
    return points


def _log_run(
    found, experiment_id: str, parent: str, point: tuple, steps: int, Columns, NewRun, RunUpdate
) -> int:
    optimizer, scale, batch_size, seed = point
    lr = OPTIMIZERS[optimizer] * scale
    tags = {
        schema.ROLE: schema.ROLE_JOB,
        schema.TASK: TASK,
        schema.OPTIMIZER: optimizer,
        schema.CONFIG_HASH: f"{optimizer}-{scale:.4g}-{batch_size}-{seed}",
    }
    params = {
        "task.name": TASK,
        "optimizer.name": optimizer,
        "optimizer.lr": OPTIMIZERS[optimizer],
        "optimizer.lr_scale": scale,
        "data.batch_size": batch_size,
        "seed": seed,
        schema.RESOLVED_LR: lr,
        schema.RESOLVED_BATCH_SIZE: batch_size,
        schema.RESOLVED_TOTAL_STEPS: steps,
        schema.RESOLVED_STEPS_PER_EPOCH: -(-TRAIN_SIZE // batch_size),
    }
    name = f"{optimizer} lr={lr:.3g} bs={batch_size} seed={seed}"
    [run] = found.create_runs(experiment_id, [NewRun(name, tags, params)], parent)
    start_ms = run.start_time
    rows, status, final = _trajectory(point, steps, start_ms)
    metrics = Columns.of_rows(rows) + [Columns.at(int(final[schema.STEPS]), final, start_ms)]
    end = start_ms + int(final[schema.TOTAL_S] * 1000)
    found.write([RunUpdate(run.run_id, metrics, {schema.STATUS: status}, schema.FINISHED, end)])
    return len(rows) + len(final)


def _trajectory(point: tuple, steps: int, start_ms: int) -> tuple[list[tuple], str, dict[str, float]]:
    """(key, value, timestamp, step) rows of one run, its outcome, and its final metrics."""
    optimizer, scale, batch_size, seed = point
    rng = np.random.default_rng(zlib.crc32(repr(point).encode()))  # stable across processes
    # Each optimizer has its own best lr scale; too large a scale diverges (sooner for larger ones).
    best = {"adam": 0.3, "momentum": 0.0, "rmsprop": -0.3, "sgd": 0.5}[optimizer]
    distance = math.log10(scale) - best
    rate = 0.01 * math.exp(-(distance**2)) * (64 / batch_size) ** 0.3
    floor = F_STAR + 0.02 * abs(distance) + 0.01 * rng.random()
    diverge_at = max(10, int(steps * (1.6 - distance))) if distance > 0.7 + 0.2 * rng.random() else None
    t = np.arange(steps if diverge_at is None else min(steps, diverge_at))
    loss = floor + (2.3 - floor) * np.exp(-rate * t) * np.exp(0.05 * rng.standard_normal(t.size))
    diverged = diverge_at is not None and diverge_at < steps
    if diverged:
        loss[-20:] *= np.logspace(0, 6, min(20, t.size))
    wall = np.cumsum(np.full(t.size, 0.002 + 1e-5 * batch_size) * (1 + 0.1 * rng.random(t.size)))
    stamps = start_ms + (wall * 1000).astype(int)
    per_step = {
        schema.TRAIN_LOSS: loss,
        schema.TRAIN_SUBOPTIMALITY: loss - F_STAR,
        schema.GRAD_NORM: np.sqrt(loss) * (1 + 0.2 * rng.random(t.size)),
        schema.WALL_S: wall,
    }
    rows = [(k, float(v), int(s), int(i)) for k, vs in per_step.items() for i, v, s in zip(t, vs, stamps)]
    done = t.size if not diverged else t.size - 1
    evals = sorted({*range(0, done + 1, EVAL_EVERY), done})  # step 0, every EVAL_EVERY, the end
    spe = -(-TRAIN_SIZE // batch_size)
    for k in evals:
        at, stamp = min(k, t.size - 1), int(stamps[min(k, t.size - 1)])
        val = {
            schema.VAL_LOSS: float(loss[at] * 1.05),
            schema.VAL_ACCURACY: float(1 - loss[at] / 2.5),
            schema.EPOCH: float(k // spe),
            schema.SAMPLES_SEEN: float(k * batch_size),
            schema.LR: OPTIMIZERS[optimizer] * scale,
        }
        rows += [(key, value, stamp, int(k)) for key, value in val.items()]
    final = {schema.TOTAL_S: float(wall[-1]), schema.STEPS: float(done)}
    if diverged:
        return rows, schema.DIVERGED, final
    final.update({schema.FINAL_VAL_LOSS: float(loss[-1] * 1.05), schema.FINAL_TRAIN_LOSS: float(loss[-1])})
    reached = np.flatnonzero(loss < 0.2)
    if reached.size:
        final.update(
            {schema.STEPS_TO_TARGET: float(reached[0]), schema.TIME_TO_TARGET_S: float(wall[reached[0]])}
        )
    return rows, schema.COMPLETED, final


if __name__ == "__main__":
    main()
