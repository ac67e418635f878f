"""Load a sweep: its runs (one row each) and one tidy frame of every metric point, from MLflow or the cache."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment, Run

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

    def tidy(self, *columns: str) -> pd.DataFrame:
        """The metric points with more of their run's columns copied on, e.g. tidy("params.optimizer.betas",
        "tags.harness.device"): any column of `runs` (DESCRIPTORS are always there)."""
        return describe(self.metrics, self.runs, list(columns))


@dataclass(frozen=True)
class SweepRef:
    """A sweep found in a store: enough to name its report folder before loading anything big."""

    client: MlflowClient
    experiment: Experiment
    parent: Run

    @property
    def run_id(self) -> str:
        return self.parent.info.run_id


def find(uri: str, experiment: str, sweep: str = sweeps.LATEST) -> SweepRef:
    """The sweep's parent run: the latest of the experiment, or the run id given.

    Raises:
        ReportError: no store at `uri`, unknown experiment, no sweep, or not a sweep of this experiment.
    """
    client = sweeps.open_client(uri)
    found = sweeps.find_experiment(client, experiment)
    return SweepRef(client, found, sweeps.find_sweep(client, found, sweep))


def load(ref: SweepRef, cache_dir: Path | None = None) -> SweepData:
    """The sweep's runs (latest per grid point) and their histories, from `cache_dir` when it holds them.

    Raises:
        ReportError: runs still running, or no finished run.
    """
    started = time.perf_counter()
    children = sweeps.sweep_runs(ref.client, ref.experiment.experiment_id, ref.run_id)
    runs = runs_frame(children)
    check_reportable(runs, ref.run_id)
    listed = time.perf_counter()
    metrics, source = _histories(ref.client, children, runs, cache_dir)
    loaded = time.perf_counter()
    return SweepData(
        experiment=ref.experiment.name,
        sweep_run_id=ref.run_id,
        sweep_name=ref.parent.info.run_name or ref.run_id,
        sweep_tags=dict(ref.parent.data.tags),
        runs=add_initial_val_loss(runs, metrics),
        metrics=describe(metrics, runs),
        source=source,
        timings={"list_runs_s": listed - started, "histories_s": loaded - listed},
    )


def load_sweep(
    uri: str, experiment: str, sweep: str = sweeps.LATEST, cache_dir: Path | None = None
) -> SweepData:
    """find() then load(): the sweep's runs and one tidy frame of its metric histories.

    Args:
        uri: the tracking URI.
        experiment: the experiment's name.
        sweep: the parent run's id, or "latest".
        cache_dir: where the Parquet cache lives (None: no cache).

    Raises:
        ReportError: see find() and load().
    """
    return load(find(uri, experiment, sweep), cache_dir)


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
    client: MlflowClient, children: list[Run], runs: pd.DataFrame, cache_dir: Path | None
) -> tuple[pd.DataFrame, str]:
    """The histories from the cache when its key matches, else from the store (then cached)."""
    key = cache.cache_key(runs)
    cached = None if cache_dir is None else cache.read(cache_dir, key)
    if cached is not None:
        return cached, "cache"
    frame = history.read_histories(client, children)
    if cache_dir is not None:
        cache.write(cache_dir, key, frame)
    return frame, "mlflow"


def describe(metrics: pd.DataFrame, runs: pd.DataFrame, columns: list[str] = DESCRIPTORS) -> pd.DataFrame:
    """Copy each run's `columns` onto its metric points (by categorical code: millions of rows, no merge).
    Text columns become categoricals: a handful of distinct values repeated millions of times."""
    ids = metrics["run_id"].astype("category")
    by_id = runs.set_index("run_id")[columns].reindex(ids.cat.categories.astype(str))
    codes = ids.cat.codes.to_numpy()
    out = metrics.copy()
    for column in columns:
        values = by_id[column]
        if values.dtype in ("string", "object"):
            values = values.astype("category")
            out[column] = pd.Categorical.from_codes(
                values.cat.codes.to_numpy()[codes], categories=values.cat.categories
            )
        else:
            out[column] = pd.Series(values.array.take(codes), index=out.index)
    return out
