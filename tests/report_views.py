"""A report's per-task view built from a constructed runs frame, as harness.report.view.task_views builds each one
(without the curves, which need histories from a store): shared by the report's tests."""

import pandas as pd

from harness.report import ranking, stats, view
from harness.report.figures import style


def toy_view(
    runs: pd.DataFrame, rule: str = "median-seeds", method: stats.Method = stats.DEFAULT_METHOD
) -> view.TaskView:
    configs = ranking.per_config(runs)
    return view.TaskView(
        task="toy",
        runs=runs,
        configs=configs,
        best=ranking.ranked(configs, runs),
        best_per_batch=ranking.best_per(configs, ["task", "optimizer", "batch_size"]),
        curves=pd.DataFrame(columns=view.CURVE_COLUMNS),
        targets=ranking.target_times(runs, configs, rule),
        colours=style.palette(runs["optimizer"]),
        method=method,
    )
