"""Training curves of chosen runs, on four clocks, pooled over seeds into a centre line and a 95% band.

Every point of a metric logged at step k describes the parameters after k updates (harness.loop's convention), so
it is placed where those parameters were reached: k steps, k x batch size samples, k / (steps per epoch) epochs,
and the wall-clock time at which update k finished (`time/wall_s` of step k-1; 0 at k = 0).

Losses are pooled on the log scale the figures use: the centre is the geometric mean over seeds and the band a
95% t-interval of the mean log loss, so it never crosses zero and reads right on log axes.
"""

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from harness.report.keys import EPOCH, WALL_S

AXES = {
    "step": "optimizer steps",
    "epoch": "epochs",
    "samples": "training samples seen",
    "wall_s": "wall-clock time (s)",
}
MAX_POINTS = 300  # per curve: keeps SVGs small and averages mini-batch noise on long runs


def clocks(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """run_id, step, epoch, samples, wall_s for every step at which the chosen runs logged anything."""
    ids = runs["run_id"].tolist()
    mine = metrics[metrics["run_id"].isin(ids)]
    steps = mine[["run_id", "step"]].drop_duplicates().astype({"run_id": "string"})
    wall = mine.loc[mine["key"] == WALL_S, ["run_id", "step", "value"]].astype({"run_id": "string"})
    wall = wall.assign(step=wall["step"] + 1).rename(columns={"value": "wall_s"})
    frame = steps.merge(wall, on=["run_id", "step"], how="left")
    frame.loc[frame["step"] == 0, "wall_s"] = 0.0
    per_run = runs.set_index("run_id")
    frame["samples"] = frame["step"] * frame["run_id"].map(per_run["batch_size"]).astype("float64")
    frame["epoch"] = frame["step"] / frame["run_id"].map(steps_per_epoch(mine))
    return frame


def steps_per_epoch(metrics: pd.DataFrame) -> pd.Series:
    """Per run, the steps in its first epoch (every epoch has as many); NaN for runs that never finished one."""
    epochs = metrics[metrics["key"] == EPOCH]
    first = epochs[epochs["value"] == 0].groupby("run_id", observed=True)["step"].count()
    finished_one = epochs.groupby("run_id", observed=True)["value"].max() >= 1
    first = first.where(finished_one.reindex(first.index, fill_value=False))
    return first.rename(index=str).astype("float64")


def points(metrics: pd.DataFrame, clock: pd.DataFrame, key: str) -> pd.DataFrame:
    """One metric's points with every clock: run_id, step, value, epoch, samples, wall_s."""
    mine = metrics.loc[metrics["key"] == key, ["run_id", "step", "value"]].astype({"run_id": "string"})
    mine = mine[mine["run_id"].isin(clock["run_id"].unique())]
    return mine.merge(clock, on=["run_id", "step"], how="left")


def pool(frame: pd.DataFrame, axis: str, groups: list[str]) -> pd.DataFrame:
    """Centre and 95% band over runs (seeds) of `value` against `axis`, per group.

    Args:
        frame: points() with the group columns added.
        axis: one of AXES.
        groups: columns identifying a curve (e.g. ["optimizer"]); the runs inside one group are its seeds.

    Returns:
        groups..., x, center, low, high, n (runs contributing to the point).
    """
    # Log scale: a non-positive loss cannot be drawn (nor averaged in logs).
    frame = frame[(frame["value"] > 0) & frame[axis].notna()]
    parts = []
    for key, group in frame.groupby(groups, observed=True, sort=True):
        matrix, x = (_interpolated if axis == "wall_s" else _binned)(group, axis)
        parts.append(_band(matrix, x).assign(**dict(zip(groups, key if isinstance(key, tuple) else (key,)))))
    if not parts:
        empty = {g: pd.Series(dtype=frame[g].dtype) for g in groups}
        return pd.DataFrame(
            empty | {c: pd.Series(dtype="float64") for c in ("x", "center", "low", "high", "n")}
        )
    return pd.concat(parts, ignore_index=True)[[*groups, "x", "center", "low", "high", "n"]]


def _binned(group: pd.DataFrame, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """runs x positions of log10(value): the exact positions when few, else MAX_POINTS bins (seeds share steps)."""
    x = group[axis].to_numpy(dtype=float)
    positions = np.unique(x)
    if positions.size <= MAX_POINTS:
        where = np.searchsorted(positions, x)
        centers = positions
    else:
        edges = np.linspace(positions[0], positions[-1], MAX_POINTS + 1)
        where = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, MAX_POINTS - 1)
        centers = (edges[:-1] + edges[1:]) / 2
    table = pd.DataFrame(
        {"run": group["run_id"].to_numpy(), "at": where, "log": np.log10(group["value"].to_numpy())}
    )
    wide = table.pivot_table(index="run", columns="at", values="log", aggfunc="mean")
    return wide.to_numpy(), centers[wide.columns.to_numpy()]


def _interpolated(group: pd.DataFrame, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """runs x grid of log10(value) interpolated on a shared time grid (seeds differ in wall-clock time), up to the
    time at which the shortest run ended: beyond it the mean would silently lose seeds."""
    curves = [c.sort_values(axis) for _, c in group.groupby("run_id", observed=True)]
    end = min(c[axis].max() for c in curves)
    grid = np.linspace(0.0, end, min(MAX_POINTS, max(len(c) for c in curves)))
    rows = [np.interp(grid, c[axis], np.log10(c["value"]), left=np.nan) for c in curves]
    return np.vstack(rows), grid


def _band(matrix: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    n = np.sum(~np.isnan(matrix), axis=0)
    # One seed has no spread (ddof=1 divides by zero): its band is NaN, drawn as no band.
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        mean = np.nanmean(matrix, axis=0)
        sem = np.nanstd(matrix, axis=0, ddof=1) / np.sqrt(n)
        half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sem, np.nan)
    return pd.DataFrame(
        {"x": x, "center": 10**mean, "low": 10 ** (mean - half), "high": 10 ** (mean + half), "n": n}
    )
