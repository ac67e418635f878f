"""One row per run: typed columns the report groups by, then every param, tag and latest metric (MLflow's
`params.*`, `tags.*`, `metrics.*` naming, as in `mlflow.search_runs`)."""

import math

import pandas as pd
from mlflow.entities import Run

from harness.report.keys import (
    CONFIG_HASH,
    FINAL_VAL_ACCURACY,
    FINAL_VAL_LOSS,
    STEPS_TO_TARGET,
    TIME_TO_TARGET_S,
    TOTAL_S,
    VAL_LOSS,
)
from harness.sweep import parent

# The typed columns; everything else in the frame is params.*, tags.* and metrics.*.
RUN_COLUMNS = {
    "run_id": "string",
    "run_name": "string",
    "status": "string",  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    "outcome": "string",  # the harness's: completed, diverged, failed, killed, running
    "start_time": "Int64",  # ms since the epoch
    "end_time": "Int64",
    "task": "string",
    "optimizer": "string",
    "lr": "float64",  # the effective lr (optimizer.lr x lr_scale): what the optimizer used
    "batch_size": "Int64",  # resolved: "full" is the training-set size
    "batch_label": "string",  # as configured: 32, or "full"
    "total_steps": "Int64",  # the step budget
    "seed": "Int64",
    "config_hash": "string",
    "error": "string",
    "final_val_loss": "float64",  # absent (NaN) for diverged and failed runs
    "final_val_accuracy": "float64",
    "time_s": "float64",  # wall-clock of the whole run
    "steps_to_target": "float64",  # NaN: never reached
    "time_to_target_s": "float64",
    "initial_val_loss": "float64",  # val/loss before the first update: what a run that learnt nothing scores
}


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """The runs as a DataFrame with RUN_COLUMNS first (typed), then params.*, tags.*, metrics.*."""
    frame = pd.DataFrame([_row(run) for run in runs])
    for column, dtype in RUN_COLUMNS.items():
        values = frame[column] if column in frame else pd.Series(None, index=frame.index, dtype="object")
        frame[column] = values.astype("object").astype(dtype)
    extra = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
    return frame[list(RUN_COLUMNS) + extra].reset_index(drop=True)


def _row(run: Run) -> dict:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    row = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "outcome": parent.outcome(run).status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "task": params.get("task.name") or tags.get("harness.task"),
        "optimizer": params.get("optimizer.name") or tags.get("harness.optimizer"),
        "lr": _effective_lr(params),
        "batch_size": _number(params.get("resolved.batch_size") or params.get("data.batch_size"), int),
        "batch_label": params.get("data.batch_size"),
        "total_steps": _number(params.get("resolved.total_steps"), int),
        "seed": _number(params.get("seed"), int),
        "config_hash": tags.get(CONFIG_HASH, ""),
        "error": tags.get("harness.error", ""),
        "final_val_loss": metrics.get(FINAL_VAL_LOSS),
        "final_val_accuracy": metrics.get(FINAL_VAL_ACCURACY),
        "time_s": metrics.get(TOTAL_S),
        "steps_to_target": metrics.get(STEPS_TO_TARGET),
        "time_to_target_s": metrics.get(TIME_TO_TARGET_S),
    }
    row.update({f"params.{k}": v for k, v in params.items()})
    row.update({f"tags.{k}": v for k, v in tags.items()})
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def _effective_lr(params: dict[str, str]) -> float | None:
    """resolved.lr; runs refused before it was logged: optimizer.lr x optimizer.lr_scale."""
    lr = _number(params.get("resolved.lr"), float)
    if lr is None:
        base, scale = (
            _number(params.get("optimizer.lr"), float),
            _number(params.get("optimizer.lr_scale"), float),
        )
        lr = None if base is None else base * (scale or 1.0)
    return lr


def _number(text: str | None, kind: type) -> int | float | None:
    """int("32") or float("0.1"); None for missing or non-numeric text ("full", "None")."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return int(value) if kind is int else value


def add_initial_val_loss(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Fill `initial_val_loss` from the histories: val/loss at step 0, logged before any update."""
    first = metrics[(metrics["key"] == VAL_LOSS) & (metrics["step"] == 0)]
    initial = first.groupby("run_id", observed=True)["value"].first()
    runs = runs.copy()
    runs["initial_val_loss"] = runs["run_id"].map(initial).astype("float64")
    return runs
