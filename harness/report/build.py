"""Write a sweep's report into a folder: figures/ (PNG + SVG), summary.csv, ranking.json, report.md and report.html.

The order is the data flow: the per-task views (view.py) are built once; tables read them; the figures are drawn
from them in worker processes (each figure is independent, and drawing and saving is most of a report's time);
then everything is rendered.
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.report import figures, note, ranking, render, stats, tables
from harness.report.figures import race as race_figure
from harness.report.figures import style
from harness.report.load import SweepData
from harness.report.race import race_record
from harness.report.view import TaskView, task_views
from harness.tracking import schema

NOTES = [
    "Ranking: configurations (lr, batch size) rank by the share of their seeds that diverged (none first), "
    "then by mean final validation loss over completed seeds, ties by mean wall-clock time. Failed runs (a "
    "crash, a missing device) count neither way. lr is the effective one (optimizer.lr × optimizer.lr_scale).",
    "A grid point run several times (a resumed sweep) counts once: its latest run. Runs still running are not "
    "compared.",
    "Pruned runs (successive halving, hydra.launcher.rungs) stopped at a rung: they are counted and drawn in the "
    "race, never ranked (their last loss is not a final result) and never counted as failed.",
    "Diverged runs have no final loss: they are counted, drawn in a strip at the top of the sensitivity plots "
    "and score as the untrained model (initial validation loss) in the tuning-budget curve.",
    "Time to target: the task's own target (e.g. a validation accuracy). An optimizer's time is {rule}. A time of "
    "0 (the initial model already meets the target) counts as reached.",
    "Convergence curves: epochs and samples are derived from the step and each run's resolved.steps_per_epoch "
    "and resolved.batch_size; every run's curve is averaged into bins of the plotted resolution before the mean "
    "and 95% interval over seeds are taken.",
]


@dataclass(frozen=True)
class Report:
    directory: Path
    html: Path
    markdown: Path
    summary_csv: Path
    ranking_json: Path  # the ranked tables as numbers, in mlflow.log_table's JSON
    figures: list[render.FigureFile]
    answers: list[str]  # one sentence per task
    banner: str | None  # set when the sweep is unfinished
    content: render.Content  # what the report says (the parent run's description is made from it)


def write_report(
    data: SweepData,
    directory: Path,
    rule: str = ranking.DEFAULT_RULE,
    workers: int | None = None,
    method: stats.Method = stats.DEFAULT_METHOD,
) -> Report:
    """Build, draw, tabulate and write everything for `data` into `directory` (created if needed).

    Args:
        data: the loaded sweep.
        directory: the report folder.
        rule: how an optimizer's time to target is aggregated (ranking.TARGET_RULES).
        workers: processes drawing figures (default: one per CPU, at most one per figure; 1 draws in this process).
        method: how the intervals are computed (stats.Method: the aggregate over seeds, replicates, confidence).
    """
    directory.mkdir(parents=True, exist_ok=True)
    colours = style.palette(data.runs["optimizer"].dropna())
    views = task_views(data, colours, rule, method)
    multi = len(views) > 1
    jobs = [
        (kind, view, f"_{_slug(view.task)}" if multi else "")
        for view in views
        for kind in figures.PER_TASK
        if kind.shows(view)
    ]
    jobs += [(kind, views, "") for kind in figures.ACROSS_TASKS if multi and kind.shows(views)]
    raced = race_record(data, colours)
    if raced is not None:
        jobs.append((race_figure.RACE, raced, ""))
    drawn = draw_all(jobs, directory / "figures", ranking.TARGET_RULES[rule], workers)
    sections = [
        _section(view, [f for (_, subject, _), f in zip(jobs, drawn) if subject is view]) for view in views
    ]
    summary = tables.summary(views)
    summary.to_csv(directory / "summary.csv", index=False)
    ranking_json = directory / "ranking.json"
    ranking_json.write_text(note.table_json(tables.ranking_table(views)), encoding="utf-8")
    content = render.Content(
        title=f"Optimizer comparison: {data.experiment}",
        banner=tables.unfinished_banner(data.grid),
        facts=_facts(data),
        sections=sections,
        overall=[
            f for (kind, _, _), f in zip(jobs, drawn) if kind.across_tasks and kind is not race_figure.RACE
        ],
        summary=tables.display_summary(summary),
        notes=[text.format(rule=ranking.TARGET_RULES[rule]) for text in NOTES] + [stats.how_computed(method)],
        race=_race_section(raced, drawn[-1]) if raced is not None else None,
    )
    html_path, md_path = directory / "report.html", directory / "report.md"
    html_path.write_text(render.to_html(content, directory), encoding="utf-8")
    md_path.write_text(render.to_markdown(content, directory), encoding="utf-8")
    answers = [" ".join(filter(None, [s.answer, s.confidence and f"{s.confidence}."])) for s in sections]
    return Report(
        directory,
        html_path,
        md_path,
        directory / "summary.csv",
        ranking_json,
        drawn,
        answers,
        content.banner,
        content,
    )


def _race_section(raced, figure: render.FigureFile) -> render.RaceSection:
    return render.RaceSection(raced.headline, raced.decision, figure, raced.table())


def _section(view: TaskView, drawn: list[render.FigureFile]) -> render.Section:
    return render.Section(
        view.task,
        tables.answer(view),
        tables.fairness_line(view),
        tables.edge_of_grid(view) + tables.identical_seeds(view),
        tables.display_ranked(view),
        drawn,
        tables.table_notes(view),
        tables.confidence(view),
    )


# Set before the worker processes fork, read by them: the jobs travel by inheritance, not by pickling.
_JOBS: list = []


def draw_all(jobs: list, directory: Path, rule: str, workers: int | None) -> list[render.FigureFile]:
    """Draw and save each (FigureKind, view(s), file suffix); returns the files in the jobs' order."""
    global _JOBS
    directory.mkdir(parents=True, exist_ok=True)
    _JOBS = [(kind, subject, suffix, directory, rule) for kind, subject, suffix in jobs]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    try:
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [_draw(i) for i in range(len(jobs))]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_draw, range(len(jobs))))
    finally:
        _JOBS = []


def _draw(index: int) -> render.FigureFile:
    kind, subject, suffix, directory, rule = _JOBS[index]
    paths = style.save(kind.draw(subject), directory, kind.name + suffix)
    where = " — all tasks" if kind.across_tasks else f" — {subject.task}"
    return render.FigureFile(
        kind.name + suffix, kind.title + where, kind.caption.format(rule=rule), paths["png"], paths["svg"]
    )


def _facts(data: SweepData) -> list[str]:
    counts = schema.count_outcomes(data.runs["outcome"])
    outcome = ", ".join(
        f"{counts[k]} {k}" for k in (*schema.OUTCOMES, schema.RUNNING_OUTCOME) if counts.get(k)
    )
    return [
        f"Experiment: {data.experiment}",
        f"Sweep: {data.sweep_name} (parent run {data.sweep_run_id})",
        f"Runs: {len(data.runs)} grid points ({outcome})",
    ]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
