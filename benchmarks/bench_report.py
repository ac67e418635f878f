"""Benchmark the report at scale: a sweep of 1,000 runs x 1,000 steps x 2 per-step metrics in a SQLite store.

    MLFLOW_DISABLE_TELEMETRY=true .venv/bin/python benchmarks/bench_report.py [--dir DIR] [--rebuild]

Builds the store once with `MlflowClient.log_batch` (a few minutes) under DIR (default: <tmp>/harness-bench-report)
and reuses it afterwards. Then times, in this process: a cold load (no cache: reads the store), a load from the
Parquet cache, and a full report render (figures, tables, HTML, Markdown, CSV). Targets on 2 cores: cold <= 60 s,
cached <= 10 s.

The synthetic sweep mimics the harness's own: 4 optimizers x 10 learning rates x 5 batch sizes x 5 seeds. Each
run logs `train/loss` and `time/wall_s` at every step, `val/loss` every 50 steps and the final metrics; runs at
too high a learning rate diverge part-way, as real ones do.
"""

import argparse
import itertools
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402

EXPERIMENT = "bench"
OPTIMIZERS = {"adam": 1e-3, "momentum": 1e-2, "rmsprop": 1e-3, "sgd": 1e-1}  # name -> default lr
LR_SCALES = np.logspace(-1.5, 1.5, 10)
BATCH_SIZES = [16, 32, 64, 128, 256]
SEEDS = range(5)
EVAL_EVERY = 50
POINTS_PER_BATCH = 1000  # MLflow's limit per log_batch call


def main() -> None:
    args = _parse()
    db, done = args.dir / "mlflow.db", args.dir / "complete"
    uri = f"sqlite:///{db}"
    size = f"{args.runs} runs x {args.steps} steps"
    stale = not done.is_file() or done.read_text().strip() != size  # interrupted, or built at another size
    if (args.rebuild or stale) and args.dir.exists():
        shutil.rmtree(args.dir)
    if not done.is_file():
        started = time.perf_counter()
        build_store(uri, args.dir, args.runs, args.steps)
        done.write_text(size + "\n")
        print(
            f"built the store: {args.runs} runs x {args.steps} steps in {time.perf_counter() - started:.0f} s ({db})"
        )
    else:
        print(f"reusing the store at {db} (--rebuild to make it again)")
    time_report(uri, args.dir / "report")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "harness-bench-report")
    parser.add_argument("--runs", type=int, default=1000, help="runs to create (the first N grid points)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run")
    parser.add_argument("--rebuild", action="store_true", help="delete and rebuild the store")
    return parser.parse_args()


def time_report(uri: str, out_dir: Path) -> None:
    """Cold load, cached load and render, each timed and printed."""
    started = time.perf_counter()
    from harness.report.build import write_report
    from harness.report.load import load_sweep

    print(f"imports (mlflow, pandas, seaborn): {time.perf_counter() - started:.1f} s")
    shutil.rmtree(out_dir, ignore_errors=True)
    cache_dir = out_dir / "cache"
    data = _timed(
        "cold load (store -> DataFrame, cache written)", load_sweep, uri, EXPERIMENT, cache_dir=cache_dir
    )
    assert data.source == "mlflow", data.source
    print(f"  {len(data.runs):,} runs, {len(data.metrics):,} metric points; stages: {_stages(data.timings)}")
    data = _timed("cached load (Parquet)", load_sweep, uri, EXPERIMENT, cache_dir=cache_dir)
    assert data.source == "cache", data.source
    print(f"  stages: {_stages(data.timings)}")
    report = _timed("render (figures, tables, HTML, Markdown, CSV)", write_report, data, out_dir)
    print(f"  {report.html}")


def _timed(label: str, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label}: {time.perf_counter() - started:.1f} s")
    return result


def _stages(timings: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.1f} s" for key, value in timings.items())


# --- the synthetic store ----------------------------------------------------------------------------------------


def build_store(uri: str, directory: Path, n_runs: int, steps: int) -> None:
    """One sweep parent and `n_runs` finished child runs, written as the harness writes them (log_batch)."""
    from mlflow import MlflowClient

    directory.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(directory / "artifacts").as_uri())
    grid = list(itertools.product(OPTIMIZERS, LR_SCALES, BATCH_SIZES, SEEDS))[:n_runs]
    parent = client.create_run(
        experiment_id,
        run_name="sweep bench",
        tags={"harness.role": "sweep", "harness.sweep_key": "bench", "harness.grid_size": str(len(grid))},
    ).info.run_id
    for index, point in enumerate(grid):
        _log_run(client, experiment_id, parent, point, steps)
        if (index + 1) % 100 == 0:
            print(f"  {index + 1}/{len(grid)} runs written", file=sys.stderr)
    client.set_terminated(parent, "FINISHED")


def _log_run(client, experiment_id: str, parent: str, point: tuple, steps: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    optimizer, scale, batch_size, seed = point
    lr = OPTIMIZERS[optimizer] * scale
    tags = {"mlflow.parentRunId": parent, "harness.task": "synthetic", "harness.optimizer": optimizer}
    tags["harness.config_hash"] = f"{optimizer}-{scale:.4g}-{batch_size}-{seed}"
    run = client.create_run(
        experiment_id, run_name=f"{optimizer} lr={lr:.3g} bs={batch_size} seed={seed}", tags=tags
    )
    run_id, start_ms = run.info.run_id, run.info.start_time
    params = {
        "task.name": "synthetic",
        "optimizer.name": optimizer,
        "optimizer.lr": OPTIMIZERS[optimizer],
        "optimizer.lr_scale": scale,
        "resolved.lr": lr,
        "data.batch_size": batch_size,
        "resolved.batch_size": batch_size,
        "resolved.total_steps": steps,
        "seed": seed,
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    points, status, final = _trajectory(point, steps, start_ms)
    for start in range(0, len(points), POINTS_PER_BATCH):
        client.log_batch(run_id, metrics=[Metric(*p) for p in points[start : start + POINTS_PER_BATCH]])
    client.log_batch(run_id, metrics=[Metric(k, v, start_ms, steps) for k, v in final.items()])
    client.log_batch(run_id, tags=[RunTag("harness.status", status)])
    client.set_terminated(run_id, "FINISHED", end_time=start_ms + int(final["time/total_s"] * 1000))


def _trajectory(point: tuple, steps: int, start_ms: int) -> tuple[list[tuple], str, dict[str, float]]:
    """(key, value, timestamp, step) points of one run, its outcome, and its final metrics."""
    optimizer, scale, batch_size, seed = point
    rng = np.random.default_rng(zlib.crc32(repr(point).encode()))  # stable across processes
    # Each optimizer has its own best lr scale; too large a scale diverges (sooner for larger ones).
    best = {"adam": 0.3, "momentum": 0.0, "rmsprop": -0.3, "sgd": 0.5}[optimizer]
    distance = math.log10(scale) - best
    rate = 0.01 * math.exp(-(distance**2)) * (64 / batch_size) ** 0.3
    floor = 0.05 + 0.02 * abs(distance) + 0.01 * rng.random()
    diverge_at = max(10, int(steps * (1.6 - distance))) if distance > 0.7 + 0.2 * rng.random() else None
    t = np.arange(steps if diverge_at is None else min(steps, diverge_at))
    loss = floor + (2.3 - floor) * np.exp(-rate * t) * np.exp(0.05 * rng.standard_normal(t.size))
    if diverge_at is not None and diverge_at < steps:
        loss[-20:] *= np.logspace(0, 6, min(20, t.size))
    wall = np.cumsum(np.full(t.size, 0.002 + 1e-5 * batch_size) * (1 + 0.1 * rng.random(t.size)))
    stamps = start_ms + (wall * 1000).astype(int)
    points = [("train/loss", float(v), int(s), int(i)) for i, v, s in zip(t, loss, stamps)]
    points += [("time/wall_s", float(w), int(s), int(i)) for i, w, s in zip(t, wall, stamps)]
    evals = t[::EVAL_EVERY]
    points += [("val/loss", float(loss[i] * 1.05), int(stamps[i]), int(i)) for i in evals]
    final = {"time/total_s": float(wall[-1]), "steps": float(t.size)}
    if diverge_at is not None and diverge_at < steps:
        return points, "diverged", final
    final.update({"final/val_loss": float(loss[-1] * 1.05), "final/train_loss": float(loss[-1])})
    reached = np.flatnonzero(loss < 0.2)
    if reached.size:
        final.update({"steps_to_target": float(reached[0]), "time_to_target_s": float(wall[reached[0]])})
    return points, "completed", final


if __name__ == "__main__":
    main()
