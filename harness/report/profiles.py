"""Performance profiles (Dolan & Moré, 2002) over the tasks of a sweep: rho_o(tau) is the share of tasks on which
optimizer o reaches the task's target within tau x the time of the fastest optimizer on that task.

An optimizer's time on a task is that of its fastest configuration (the median over seeds, so a configuration
must reach the target on most seeds to count); never reaching it is an infinite ratio: the curve stays below 1.
"""

import numpy as np
import pandas as pd

TIME_COLUMNS = {"time_to_target_s": "seconds", "steps_to_target": "steps"}


def ratios(configs: pd.DataFrame, column: str = "time_to_target_s") -> pd.DataFrame:
    """task, optimizer, time (its fastest configuration), ratio to the task's fastest optimizer (inf: never)."""
    fastest = configs.groupby(["task", "optimizer"], observed=True)[column].min().rename("time").reset_index()
    best = fastest.groupby("task", observed=True)["time"].transform("min")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(fastest["time"]), fastest["time"] / best, np.inf)
    return fastest.assign(ratio=ratio)


def profile(ratio_table: pd.DataFrame) -> pd.DataFrame:
    """optimizer, tau, rho: a step function (draw with steps-post) from tau = 1 past the largest finite ratio."""
    finite = ratio_table.loc[np.isfinite(ratio_table["ratio"]), "ratio"]
    top = max(2.0, float(finite.max()) * 1.5) if len(finite) else 2.0
    taus = np.unique(np.concatenate([[1.0, top], finite.to_numpy()]))
    tasks = ratio_table["task"].nunique()
    parts = []
    for optimizer, group in ratio_table.groupby("optimizer", observed=True, sort=True):
        values = group["ratio"].to_numpy()
        rho = (values[None, :] <= taus[:, None]).sum(axis=1) / tasks
        parts.append(pd.DataFrame({"optimizer": optimizer, "tau": taus, "rho": rho}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["optimizer", "tau", "rho"])
