"""Load a sweep: its runs as one row each (the latest run per grid point), how complete its grid is, and the metric
histories the report draws, read on demand and kept as Parquet beside the report.

Histories are read for the runs a figure shows (each optimizer's best configurations, all their seeds), not for the
whole grid: ranking needs only each run's final metrics, which come with the run. A second report on the same runs
reads the Parquet file; its key is the set of runs with their end times and outcomes plus what was read, so a resumed
sweep or an edited run reads the store again. Runs that have not ended are never cached: their histories may grow.
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.report.source import LATEST, ReportError, find_sweep, open_source
from harness.tracking import queries, schema
from harness.tracking.port import Store

# The histories a report draws: losses and the clocks they are drawn against. `epoch` and `samples_seen` are read for
# runs logged before resolved.steps_per_epoch existed (they logged both at every step; see curves.clocks).
HISTORY_KEYS = (schema.TRAIN_LOSS, schema.VAL_LOSS, schema.WALL_S, schema.EPOCH, schema.SAMPLES_SEEN)
CACHE_FORMAT = 2  # bump when the cached frame's columns or meaning change
CACHE_DATA, CACHE_KEY = "metrics.parquet", "key.txt"

# The typed columns of the runs frame; everything else in it is params.*, tags.*, metrics.* (mlflow.search_runs).
RUN_COLUMNS = {
    "run_id": "string",
    "run_name": "string",
    "status": "string",  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    "outcome": "string",  # schema.outcome: completed, diverged, failed, killed, running
    "start_time": "Int64",  # ms since the epoch
    "end_time": "Int64",
    "task": "string",
    "optimizer": "string",
    "lr": "float64",  # the effective lr (optimizer.lr x lr_scale): what the optimizer used
    "batch_size": "Int64",  # resolved: "full" is the training-set size
    "batch_label": "string",  # as configured: 32, or "full"
    "steps_per_epoch": "float64",  # resolved; NaN for runs logged before it was recorded
    "total_steps": "Int64",  # the step budget
    "seed": "Int64",
    "config_hash": "string",
    "error": "string",
    "final_val_loss": "float64",  # absent (NaN) for diverged and failed runs
    "final_val_accuracy": "float64",
    "time_s": "float64",  # wall-clock of the whole run
    "steps_to_target": "float64",  # NaN: never reached; 0: the initial model already met it
    "time_to_target_s": "float64",
    "batch_trials": "Int64",  # K: trials trained together in a batched group (whose clock they share)
    "target": "string",  # the task's target as the run recorded it ("val/accuracy >= 0.95"), if it did
    # val/loss before the first update: what a run that learnt nothing scores (read where it is used, see
    # _with_initial_val_loss: NaN for completed runs when every other run has its own)
    "initial_val_loss": "float64",
}
RECORDS = ("params", "tags", "metrics")  # a run's dicts, as columns params.<key>, tags.<key>, metrics.<key>


@dataclass(frozen=True)
class Grid:
    """How much of the sweep's grid is in: what the report must say at its top when the sweep is unfinished."""

    parent_status: str  # the parent run's MLflow status
    size: int | None  # grid points launched (the parent's harness.grid_size), None if unknown
    done: int  # grid points whose latest run completed or diverged
    running: int  # runs still running (not compared)
    missing: dict[str, int]  # optimizer -> grid points without a finished run (empty if the grid is unknown)
    detached: bool = False  # pieces left on a cluster (hydra.launcher.wait=false), not yet collected

    @property
    def unfinished(self) -> bool:
        return (
            self.parent_status in (schema.RUNNING, schema.KILLED)
            or self.running > 0
            or bool(self.missing)
            or (self.size is not None and self.done < self.size)
        )


@dataclass
class SweepData:
    """Everything a report draws from: the runs, the grid's completeness, and histories on demand."""

    experiment: str
    sweep_run_id: str
    sweep_name: str
    parent: object  # the sweep's parent run (MLflow's Run shape)
    grid: Grid
    runs: pd.DataFrame  # one row per grid point: RUN_COLUMNS, then params.*, tags.*, metrics.*
    source: Store  # read-only (harness.report.source.open_source)
    cache_dir: Path | None = None
    history_source: str = ""  # "store" or "cache": where the last histories() came from
    _histories: pd.DataFrame | None = field(default=None, repr=False)
    _read_keys: tuple[set, set] = field(default=(set(), set()), repr=False)  # the runs and keys in _histories

    def histories(self, run_ids, keys=HISTORY_KEYS) -> pd.DataFrame:
        """run_id, key, step, value of `keys` for `run_ids`, one row per point (the latest value at a step wins).

        The first call reads (or takes from the Parquet cache) every run and key asked for: pass all the runs a
        report needs at once. Later calls filter that frame; runs or keys it lacks are read then, uncached.
        """
        wanted, keys = sorted(set(map(str, run_ids))), list(keys)
        if self._histories is None:
            self._histories, self._read_keys = self._read(wanted, keys), (set(wanted), set(keys))
        done_ids, done_keys = self._read_keys
        if not (set(wanted) <= done_ids and set(keys) <= done_keys):
            return _read_histories(self.source, wanted, keys)
        frame = self._histories
        return frame[frame["run_id"].isin(wanted) & frame["key"].isin(keys)]

    def tidy(self, *columns: str, keys=HISTORY_KEYS) -> pd.DataFrame:
        """The histories of every run with run columns copied onto each point (task, optimizer, lr, batch size,
        seed, outcome, and any of `columns`, e.g. "params.optimizer.betas"), for analyses of your own."""
        wanted = ["task", "optimizer", "lr", "batch_size", "seed", "outcome", *columns]
        points = _read_histories(self.source, self.runs["run_id"].tolist(), list(keys))
        return points.merge(self.runs[["run_id", *wanted]].astype({"run_id": str}), on="run_id", how="left")

    def _read(self, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
        key = _cache_key(self.runs, run_ids, keys)
        cached = _cache_read(self.cache_dir, key)
        if cached is not None:
            self.history_source = "cache"
            return cached
        frame = _read_histories(self.source, run_ids, keys)
        _cache_write(self.cache_dir, key, frame)
        self.history_source = "store"
        return frame


def load(uri: str, experiment: str, sweep: str = LATEST, cache_dir: Path | None = None) -> SweepData:
    """The sweep's runs (latest per grid point) and its grid's completeness; histories come later, on demand.

    Raises:
        ReportError: no store, unknown experiment or sweep, or a sweep with no finished run.
    """
    source = open_source(uri)
    found, parent = find_sweep(source, experiment, sweep)
    runs = list(
        queries.latest_per_grid_point(source.children(found.experiment_id, parent.info.run_id)).values()
    )
    frame = runs_frame(runs)
    check_reportable(frame, parent.info.run_id, detached=left_on_cluster(parent))
    frame = _with_initial_val_loss(frame, source)
    return SweepData(
        experiment=found.name,
        sweep_run_id=parent.info.run_id,
        sweep_name=parent.info.run_name or parent.info.run_id,
        parent=parent,
        grid=grid_of(parent, frame),
        runs=frame,
        source=source,
        cache_dir=cache_dir,
    )


def check_reportable(runs: pd.DataFrame, sweep_run_id: str, detached: bool = False) -> None:
    """Refuse sweeps with no finished run: there is nothing to compare. (`detached`: its pieces were left on a
    cluster, and only the sweep's own command records them.)

    Raises:
        ReportError: with counts and the first error.
    """
    if runs.empty:
        raise ReportError(f"sweep {sweep_run_id} has no runs yet")
    if not runs["outcome"].isin(schema.RANKED_OUTCOMES).any():
        counts = {k: v for k, v in schema.count_outcomes(runs["outcome"]).items() if v and k != "total"}
        first_error = runs["error"].dropna().loc[lambda s: s != ""].head(1).tolist()
        hint = f"; first error: {first_error[0]}" if first_error else ""
        if detached:
            hint += (
                "; its pieces were left on the cluster (hydra.launcher.wait=false): the sweep's own command run "
                "again records what they trained"
            )
        raise ReportError(f"sweep {sweep_run_id} has no finished runs ({counts}){hint}")


def left_on_cluster(parent) -> bool:
    """The sweep's pieces were left on a cluster (hydra.launcher.wait=false) and are not collected yet."""
    return bool(parent.data.tags.get(schema.DETACHED)) and parent.info.status == schema.RUNNING


def grid_of(parent, runs: pd.DataFrame) -> Grid:
    """How complete the grid is: the parent's status and grid size against the grid points that finished.

    Points missing per optimizer assume the grid is a product over the sweep's optimizers (the basic sweeper's),
    read from the parent's `harness.sweep_overrides` (else the optimizers that have runs). A race's grid is the most
    it trains: its size is the trials it launched once it finished (unknown while it runs), none missing.
    """
    tags = parent.data.tags
    detached = left_on_cluster(parent)
    size = queries.number(tags.get(schema.GRID_SIZE), int)
    done = runs["outcome"].isin(schema.DONE_OUTCOMES)
    running = int((runs["outcome"] == schema.RUNNING_OUTCOME).sum())
    missing: dict[str, int] = {}
    if schema.RACE_ROUNDS in tags:
        size = len(runs) if parent.info.status == schema.FINISHED else None
        return Grid(parent.info.status, size, int(done.sum()), running, missing, detached)
    optimizers = _swept_optimizers(tags.get(schema.SWEEP_OVERRIDES, "")) or sorted(
        runs["optimizer"].dropna().unique()
    )
    if size is not None and optimizers and size % len(optimizers) == 0:
        per_optimizer = size // len(optimizers)
        finished = runs[done].groupby("optimizer").size()
        missing = {name: per_optimizer - int(finished.get(name, 0)) for name in optimizers}
        missing = {name: count for name, count in missing.items() if count > 0}
    return Grid(parent.info.status, size, int(done.sum()), running, missing, detached)


def _swept_optimizers(overrides: str) -> list[str]:
    """The values of `optimizer=a,b` in the sweep's overrides, as typed (empty when it is not swept that way)."""
    match = re.search(r"(?:^|\s)optimizer=([\w.,-]+)(?:\s|$)", overrides)
    return sorted(set(match.group(1).split(","))) if match else []


def runs_frame(runs: list) -> pd.DataFrame:
    """The runs as a DataFrame with RUN_COLUMNS first (typed: queries.trial_row), then params.*, tags.*, metrics.*.

    Built column by column: one list per key over the runs, not one dict per run (a frame from 20,000 dicts of
    70 keys each costs more than the rest of loading).
    """
    trials = [queries.trial_row(run) for run in runs]
    columns = {
        column: pd.array([trial.get(column) for trial in trials], dtype="object").astype(dtype)
        for column, dtype in RUN_COLUMNS.items()
        if column != "initial_val_loss"
    }
    columns["initial_val_loss"] = pd.array([None] * len(runs), dtype="object").astype("float64")
    records = [(name, [getattr(run.data, name) for run in runs]) for name in RECORDS]
    extra = {
        f"{name}.{key}": [record.get(key) for record in dicts]
        for name, dicts in records
        for key in sorted({key for record in dicts for key in record})
    }
    return pd.DataFrame({**columns, **dict(sorted(extra.items()))})


def _with_initial_val_loss(runs: pd.DataFrame, source) -> pd.DataFrame:
    """`initial_val_loss`: val/loss at step 0, logged before any update: what a run that did not complete scores in
    the tuning budget (ranking's budget_score). One point per run, read for those runs; for every run when one of
    them has none (it failed before its first evaluation), as the fallback is then the task's worst initial loss."""
    unfinished = runs.loc[runs["outcome"] != schema.COMPLETED, "run_id"].astype(str).tolist()
    if not unfinished:
        return runs
    first = source.histories(unfinished, [schema.VAL_LOSS], step=0)
    if not set(unfinished) <= set(first["run_id"]):
        first = source.histories(runs["run_id"].astype(str).tolist(), [schema.VAL_LOSS], step=0)
    initial = first.drop_duplicates("run_id", keep="last").set_index("run_id")["value"]
    return runs.assign(initial_val_loss=runs["run_id"].astype(str).map(initial).astype("float64"))


def _read_histories(source, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """The points, typed and sorted by run, key and step; a point logged twice at one step keeps the later one."""
    frame = source.histories(run_ids, keys).astype({"step": "int64", "value": "float64"})
    frame = frame.astype({"run_id": "category", "key": "category"})
    frame = frame.drop_duplicates(["run_id", "key", "step"], keep="last")
    return frame.sort_values(["run_id", "key", "step"], kind="stable").reset_index(drop=True)


# --- the Parquet cache ------------------------------------------------------------------------------------------


def _cache_key(runs: pd.DataFrame, run_ids: list[str], keys: list[str]) -> str | None:
    """A digest of every run's (id, end time, status, outcome) and of what is read; None if a run has not ended."""
    if runs["end_time"].isna().any() or (runs["status"] == schema.RUNNING).any():
        return None
    columns = [runs["run_id"], runs["end_time"].astype("int64"), runs["status"], runs["outcome"].fillna("")]
    items = sorted(zip(*(column.tolist() for column in columns)))
    return hashlib.sha256(json.dumps([CACHE_FORMAT, items, run_ids, sorted(keys)]).encode()).hexdigest()


def _cache_read(directory: Path | None, key: str | None) -> pd.DataFrame | None:
    if directory is None or key is None or not (directory / CACHE_KEY).is_file():
        return None
    if (directory / CACHE_KEY).read_text().strip() != key or not (directory / CACHE_DATA).is_file():
        return None
    return pd.read_parquet(directory / CACHE_DATA)


def _cache_write(directory: Path | None, key: str | None, frame: pd.DataFrame) -> None:
    if directory is None or key is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    # The key goes last, so that an interrupted write leaves no key pointing at partial data.
    (directory / CACHE_KEY).unlink(missing_ok=True)
    partial = directory / f"{CACHE_DATA}.partial"
    frame.to_parquet(partial, index=False)
    partial.replace(directory / CACHE_DATA)
    (directory / CACHE_KEY).write_text(key + "\n")
