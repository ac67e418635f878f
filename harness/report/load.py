"""Load a sweep: its runs (one row each) and one tidy frame of every metric point, from MLflow or the cache."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Run

from harness.report import cache, history, sweeps
from harness.report.errors import ReportError
from harness.report.keys import FINISHED_OUTCOMES, RUNNING
from harness.report.runs import add_initial_val_loss, runs_frame

# Run columns copied onto every metric point, so that one frame answers "which optimizer, lr, batch size".
DESCRIPTORS = ["task", "optimizer", "lr", "batch_size", "seed", "outcome"]


@dataclass(frozen=True)
class SweepData:
    """Everything a report draws from."""

    experiment: str
    sweep_run_id: str
    sweep_name: str
    sweep_tags: dict[str, str]
    runs: pd.DataFrame  # one row per run (runs.RUN_COLUMNS, then params.*, tags.*, metrics.*)
    metrics: pd.DataFrame  # one row per run x metric x step: history.COLUMNS + DESCRIPTORS
    source: str  # "mlflow" or "cache": where the histories came from
    timings: dict[str, float] = field(default_factory=dict)  # seconds per loading stage


def load_sweep(
    uri: str, experiment: str, sweep: str = sweeps.LATEST, cache_dir: Path | None = None
) -> SweepData:
    """Find the sweep, check that it can be reported on, and load its runs and histories.

    Args:
        uri: the tracking URI.
        experiment: the experiment's name.
        sweep: the parent run's id, or "latest".
        cache_dir: where the Parquet cache lives (None: no cache).

    Raises:
        ReportError: unknown experiment or sweep, runs still running, or no finished run.
    """
    started = time.perf_counter()
    client = sweeps.open_client(uri)
    found = sweeps.find_experiment(client, experiment)
    parent = sweeps.find_sweep(client, found, sweep)
    children = sweeps.sweep_runs(client, found.experiment_id, parent.info.run_id)
    runs = runs_frame(children)
    check_reportable(runs, parent.info.run_id)
    listed = time.perf_counter()
    metrics, source = _histories(client, children, runs, cache_dir)
    loaded = time.perf_counter()
    return SweepData(
        experiment=experiment,
        sweep_run_id=parent.info.run_id,
        sweep_name=parent.info.run_name or parent.info.run_id,
        sweep_tags=dict(parent.data.tags),
        runs=add_initial_val_loss(runs, metrics),
        metrics=describe(metrics, runs),
        source=source,
        timings={"list_runs_s": listed - started, "histories_s": loaded - listed},
    )


def check_reportable(runs: pd.DataFrame, sweep_run_id: str) -> None:
    """Refuse sweeps that are still running or hold no finished run: a report on them would mislead.

    Raises:
        ReportError: with counts, and what to do.
    """
    if runs.empty:
        raise ReportError(f"sweep {sweep_run_id} has no runs yet")
    running = int((runs["outcome"] == RUNNING).sum())
    if running:
        raise ReportError(
            f"sweep {sweep_run_id} still has {running} running run(s): wait for it to end "
            "(if it was killed, run the same sweep again: it resumes and marks them killed)"
        )
    if not runs["outcome"].isin(FINISHED_OUTCOMES).any():
        counts = runs["outcome"].value_counts().to_dict()
        first_error = runs["error"].dropna().loc[lambda s: s != ""].head(1).tolist()
        hint = f"; first error: {first_error[0]}" if first_error else ""
        raise ReportError(f"sweep {sweep_run_id} has no finished runs ({counts}){hint}")


def _histories(
    client, children: list[Run], runs: pd.DataFrame, cache_dir: Path | None
) -> tuple[pd.DataFrame, str]:
    key = cache.cache_key(runs)
    cached = None if cache_dir is None else cache.read(cache_dir, key)
    if cached is not None:
        return cached, "cache"
    frame = history.read_histories(client, children)
    if cache_dir is not None:
        cache.write(cache_dir, key, frame)
    return frame, "mlflow"


def describe(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Copy each run's DESCRIPTORS onto its metric points (by categorical code: millions of rows, no merge)."""
    ids = metrics["run_id"].astype("category")
    by_id = runs.set_index("run_id")[DESCRIPTORS].reindex(ids.cat.categories.astype(str))
    codes = ids.cat.codes.to_numpy()
    out = metrics.copy()
    for column in DESCRIPTORS:
        values = by_id[column]
        if values.dtype == "string":
            values = values.astype("category")
            out[column] = pd.Categorical.from_codes(
                values.cat.codes.to_numpy()[codes], categories=values.cat.categories
            )
        else:
            out[column] = pd.Series(values.array.take(codes), index=out.index)
    return out
