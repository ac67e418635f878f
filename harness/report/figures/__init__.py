"""The report's figures, one module per subject; each figure is one `style.FigureKind` (name, title, caption,
drawing) defined beside its drawing code. The report draws them in this order.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot: no global figure registry to leak
or close, and no GUI backend is ever touched (Agg for PNG, the SVG backend for SVG), so reports run headless on
servers and in CI, and in worker processes.
"""

from harness.report.figures import convergence, heatmap, sensitivity, target, tuning

PER_TASK = (
    convergence.CONVERGENCE,
    convergence.BY_BATCH,
    sensitivity.SENSITIVITY,
    heatmap.HEATMAP,
    target.TIME_TO_TARGET,
    tuning.BUDGET,
)
ACROSS_TASKS = (target.PROFILES,)
