"""Training curves of chosen runs on four clocks, binned to the plotted resolution and pooled over seeds into a
centre line and a 95% band before any plotting library sees them.

Every point of a metric logged at step k describes the parameters after k updates (harness.loop's convention), so
it is placed where those parameters were reached: k steps, k x batch size samples, k / steps-per-epoch epochs, and
the wall-clock time at which update k finished (`time/wall_s` of step k-1; 0 at k = 0). Steps per epoch and the batch
size are the run's params (resolved.*); runs logged before resolved.steps_per_epoch existed logged `epoch` at every
step instead, and it is counted from that series.

Losses are pooled on the log scale the figures use: per run the mean of log10(loss) in each bin, then over seeds the
mean (the centre is a geometric mean) and a 95% t-interval, so the band never crosses zero and reads right on log axes.
"""

import warnings

import numpy as np
import pandas as pd
from scipy import special  # stdtrit: t quantiles, without importing all of scipy.stats

from harness.tracking import schema

AXES = {
    "step": "optimizer steps",
    "epoch": "epochs",
    "samples": "training samples seen",
    "wall_s": "wall-clock time (s)",
}
MAX_POINTS = 300  # bins per curve: about the pixels of a panel; averages mini-batch noise on long runs
BAND = ["x", "center", "low", "high", "n"]


def points(histories: pd.DataFrame, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """One metric's points of `runs` on every clock: run_id, step, value, epoch, samples, wall_s."""
    per_run = runs.astype({"run_id": str}).set_index("run_id")
    chosen = histories[histories["run_id"].isin(per_run.index)]
    mine = chosen[chosen["key"] == key]
    run_ids = mine["run_id"].astype(str).to_numpy()
    steps = mine["step"].to_numpy()
    spe = per_run["steps_per_epoch"].fillna(_counted_steps_per_epoch(chosen))
    return pd.DataFrame(
        {
            "run_id": run_ids,
            "step": steps,
            "value": mine["value"].to_numpy(),
            "epoch": steps / spe.reindex(run_ids).to_numpy(dtype=float),
            "samples": steps * per_run["batch_size"].reindex(run_ids).to_numpy(dtype=float),
            "wall_s": _wall_clock(chosen, run_ids, steps),
        }
    )


def _wall_clock(histories: pd.DataFrame, run_ids: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """When update k of each point's run finished: time/wall_s logged at step k - 1; 0 at k = 0; NaN if unknown."""
    wall = histories[histories["key"] == schema.WALL_S]
    lookup = pd.Series(
        wall["value"].to_numpy(),
        index=pd.MultiIndex.from_arrays([wall["run_id"].astype(str), wall["step"] + 1]),
    )
    lookup = lookup[~lookup.index.duplicated(keep="last")]
    found = lookup.reindex(pd.MultiIndex.from_arrays([run_ids, steps])).to_numpy(dtype=float)
    return np.where(steps == 0, 0.0, found)


def _counted_steps_per_epoch(histories: pd.DataFrame) -> pd.Series:
    """Per run, the steps of its first epoch from a per-step `epoch` series (older runs); NaN for runs that never
    finished one, or that logged `epoch` at evaluations only (they record resolved.steps_per_epoch instead)."""
    epochs = histories[histories["key"] == schema.EPOCH].astype({"run_id": str})
    first = epochs[epochs["value"] == 0].groupby("run_id")["step"].agg(["count", "max"])
    per_step = first["count"] == first["max"] + 1  # every step of epoch 0 logged, not just evaluations
    finished_one = epochs.groupby("run_id")["value"].max() >= 1
    ok = per_step & finished_one.reindex(first.index, fill_value=False)
    return first["count"].where(ok).astype("float64")


def pool(frame: pd.DataFrame, axis: str, groups: list[str]) -> pd.DataFrame:
    """Centre and 95% band over runs (seeds) of `value` against `axis`, per group.

    Args:
        frame: points() with the group columns added.
        axis: one of AXES.
        groups: columns identifying a curve (e.g. ["optimizer"]); the runs inside one group are its seeds.

    Returns:
        groups..., x, center, low, high, n (runs contributing to the point): at most MAX_POINTS rows per group.
    """
    # Log scale: a non-positive loss cannot be drawn (nor averaged in logs).
    frame = frame[(frame["value"] > 0) & frame[axis].notna()]
    parts = []
    for key, group in frame.groupby(groups, observed=True, sort=True):
        matrix, x = (interpolated if axis == "wall_s" else binned)(group, axis)
        labels = dict(zip(groups, key if isinstance(key, tuple) else (key,)))
        parts.append(band(matrix, x).assign(**labels))
    if not parts:
        empty = {g: pd.Series(dtype=frame[g].dtype) for g in groups}
        return pd.DataFrame(empty | {c: pd.Series(dtype="float64") for c in BAND})
    return pd.concat(parts, ignore_index=True)[[*groups, *BAND]]


def binned(group: pd.DataFrame, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """runs x bins of the mean log10(value) per run and bin (NaN: no point there), and the bins' centres.

    Few positions (all runs share them, e.g. evaluation steps): one bin each, at the position itself. Else
    MAX_POINTS equal bins over the range.
    """
    x = group[axis].to_numpy(dtype=float)
    positions = np.unique(x)
    if positions.size <= MAX_POINTS:
        where, centers = np.searchsorted(positions, x), positions
    else:
        edges = np.linspace(positions[0], positions[-1], MAX_POINTS + 1)
        where = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, MAX_POINTS - 1)
        centers = (edges[:-1] + edges[1:]) / 2
    run, runs = pd.factorize(group["run_id"])
    cell = run * centers.size + where
    size = len(runs) * centers.size
    total = np.bincount(cell, weights=np.log10(group["value"].to_numpy(dtype=float)), minlength=size)
    count = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (total / count).reshape(len(runs), centers.size)
    used = count.reshape(len(runs), centers.size).sum(axis=0) > 0
    return matrix[:, used], centers[used]


def interpolated(group: pd.DataFrame, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """runs x grid of log10(value) interpolated on a shared time grid (seeds differ in wall-clock time), up to the
    time at which the shortest run ended: beyond it the mean would silently lose seeds."""
    curves = [c.sort_values(axis) for _, c in group.groupby("run_id", observed=True)]
    end = min(c[axis].max() for c in curves)
    grid = np.linspace(0.0, end, min(MAX_POINTS, max(len(c) for c in curves)))
    rows = [np.interp(grid, c[axis], np.log10(c["value"]), left=np.nan) for c in curves]
    return np.vstack(rows), grid


def band(matrix: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    """Per column: 10^mean over runs, and the 95% t-interval of the mean log (NaN with one run: no band)."""
    n = np.sum(~np.isnan(matrix), axis=0)
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        mean = np.nanmean(matrix, axis=0)
        sem = np.nanstd(matrix, axis=0, ddof=1) / np.sqrt(n)
        half = np.where(n > 1, special.stdtrit(np.maximum(n - 1, 1), 0.975) * sem, np.nan)
    return pd.DataFrame(
        {"x": x, "center": 10**mean, "low": 10 ** (mean - half), "high": 10 ** (mean + half), "n": n}
    )
