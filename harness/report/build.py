"""Write a sweep's report into a folder: figures/ (PNG + SVG), summary.csv, report.md and report.html."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.report import budget, configs, html, markdown, tables
from harness.report.content import Content, FigureFile, Section
from harness.report.figures import convergence, sensitivity, style, target, tuning
from harness.report.load import SweepData

NOTES = [
    "Ranking: configurations (lr, batch size) rank by the share of their seeds that diverged (none first), "
    "then by mean final validation loss over completed seeds, ties by mean wall-clock time. Failed runs (a "
    "crash, a missing device) count neither way. lr is the effective one (optimizer.lr × optimizer.lr_scale).",
    "A grid point run several times (a resumed sweep) counts once: its latest run.",
    "Diverged runs have no final loss: they are counted, drawn in a strip at the top of the sensitivity plots "
    "and score as the untrained model (initial validation loss) in the tuning-budget curve.",
    "Time to target: the task's own target (e.g. a validation accuracy); a configuration's time is the median "
    "over its seeds, counting seeds that never reached it as infinitely slow.",
]
TITLES = {
    "convergence": "Convergence",
    "convergence_by_batch": "Convergence by batch size",
    "sensitivity": "Learning-rate sensitivity",
    "heatmap": "Final loss by learning rate and batch size",
    "time_to_target": "Time to target",
    "tuning_budget": "Tuning budget",
    "performance_profile": "Performance profiles",
}
CAPTIONS = {
    "convergence": "Each optimizer at its best configuration (the ranked table). Line: geometric mean over "
    "seeds; band: 95% t-interval (log scale). Training loss is the mini-batch loss, averaged into at most 300 "
    "points.",
    "convergence_by_batch": "Per batch size, each optimizer at its best lr for that batch size, against "
    "samples seen (the same data budget in every column).",
    "sensitivity": "Final validation loss of every run against the effective lr. Runs without a final loss "
    "(diverged: red X; failed: grey x) sit in the strip at the top, one row per optimizer.",
    "heatmap": "Mean final validation loss over seeds for each lr × batch size; one shared colour scale. "
    "The outlined cell is the optimizer's best; 'lost' counts seeds that diverged or failed.",
    "time_to_target": "Steps and seconds until the task's target was first reached. Points: runs; black bar: "
    "the optimizer's fastest configuration (median over seeds). Runs that never reached it are counted below.",
    "tuning_budget": "Expected best mean final validation loss if you tried k configurations of the grid at "
    "random (exact, from order statistics). A curve that drops fast is easy to tune.",
    "performance_profile": "Share of tasks on which each optimizer reaches the target within τ × the "
    "fastest optimizer's time (its fastest configuration per task). At τ = 1: how often it is the fastest.",
}


@dataclass(frozen=True)
class Report:
    directory: Path
    html: Path
    markdown: Path
    summary_csv: Path
    figures: list[FigureFile]
    answers: list[str]  # one sentence per task


def write_report(data: SweepData, directory: Path) -> Report:
    """Draw, tabulate and write everything for `data` into `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    grid = configs.per_config(data.runs)
    best = tables.ranked(grid, data.runs)
    colours = style.palette(data.runs["optimizer"].dropna())
    tasks = sorted(data.runs["task"].dropna().unique())
    sections = [_section(data, grid, best, task, colours, directory, len(tasks) > 1) for task in tasks]
    overall = _overall(grid, colours, directory) if len(tasks) > 1 else []
    summary = tables.summary(grid)
    summary.to_csv(directory / "summary.csv", index=False)
    content = Content(
        title=f"Optimizer comparison: {data.experiment}",
        facts=_facts(data),
        sections=sections,
        overall=overall,
        summary=tables.display_summary(summary),
        notes=NOTES,
    )
    html_path, md_path = directory / "report.html", directory / "report.md"
    html_path.write_text(html.render(content, directory), encoding="utf-8")
    md_path.write_text(markdown.render(content, directory), encoding="utf-8")
    figures = [f for s in sections for f in s.figures] + overall
    return Report(
        directory, html_path, md_path, directory / "summary.csv", figures, [s.answer for s in sections]
    )


def _section(
    data: SweepData,
    grid: pd.DataFrame,
    best: pd.DataFrame,
    task: str,
    colours: dict,
    directory: Path,
    multi: bool,
) -> Section:
    runs, cfg = data.runs[data.runs["task"] == task], grid[grid["task"] == task]
    metrics = data.metrics[data.metrics["task"] == task]
    mine = best[best["task"] == task]
    per_batch = configs.best_per(cfg, ["task", "optimizer", "batch_size"])
    drawings = {
        "convergence": lambda: convergence.convergence_figure(metrics, runs, mine, colours),
        "convergence_by_batch": lambda: convergence.convergence_by_batch_figure(
            metrics, runs, per_batch, colours
        ),
        "sensitivity": lambda: sensitivity.sensitivity_figure(runs, cfg, colours),
        "heatmap": lambda: sensitivity.heatmap_figure(cfg, colours),
        "time_to_target": lambda: target.time_to_target_figure(runs, cfg, colours),
        "tuning_budget": lambda: tuning.budget_figure(budget.tuning_curves(cfg), colours),
    }
    suffix = f"_{_slug(task)}" if multi else ""
    figures = [_save(draw(), directory, kind, suffix, task) for kind, draw in drawings.items()]
    return Section(
        task,
        tables.answer(best, task),
        tables.fairness_line(data.runs, task),
        tables.display_ranked(best, task),
        figures,
    )


def _overall(grid: pd.DataFrame, colours: dict, directory: Path) -> list[FigureFile]:
    return [_save(target.profile_figure(grid, colours), directory, "performance_profile", "", None)]


def _save(figure, directory: Path, kind: str, suffix: str, task: str | None) -> FigureFile:
    paths = style.save(figure, directory / "figures", kind + suffix)
    title = TITLES[kind] + (f" — {task}" if task else " — all tasks")
    return FigureFile(kind + suffix, title, CAPTIONS[kind], paths["png"], paths["svg"])


def _facts(data: SweepData) -> list[str]:
    counts = data.runs["outcome"].value_counts()
    outcome = ", ".join(
        f"{counts[k]} {k}" for k in ("completed", "diverged", "failed", "killed") if k in counts
    )
    return [
        f"Experiment: {data.experiment}",
        f"Sweep: {data.sweep_name} (parent run {data.sweep_run_id})",
        f"Runs: {len(data.runs)} grid points ({outcome}); {len(data.metrics):,} metric points",
    ]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
