"""The report as Markdown (figures linked from figures/), for reading in a repository or the MLflow UI."""

from pathlib import Path

import pandas as pd

from harness.report.content import Content, FigureFile


def render(content: Content, directory: Path) -> str:
    """The whole document; figure links are relative to `directory`, where it is written."""
    lines = [f"# {content.title}", "", *(f"- {fact}" for fact in content.facts), ""]
    for section in content.sections:
        lines += [
            f"## {section.task}",
            "",
            f"**{section.answer}**",
            "",
            table(section.ranked),
            "",
            section.fairness,
            "",
        ]
    for section in content.sections:
        lines += [f"## Figures: {section.task}", ""]
        lines += [line for figure in section.figures for line in _figure(figure, directory)]
    if content.overall:
        lines += ["## Across tasks", ""] + [
            line for figure in content.overall for line in _figure(figure, directory)
        ]
    lines += [
        "## Per optimizer and batch size",
        "",
        table(content.summary),
        "",
        "(also as `summary.csv`)",
        "",
    ]
    lines += ["## How this was computed", "", *(f"- {note}" for note in content.notes), ""]
    return "\n".join(lines)


def table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of strings (pipes escaped)."""

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    rows = [cells(frame.columns), "|" + "---|" * len(frame.columns)]
    rows += [cells(row) for row in frame.itertuples(index=False)]
    return "\n".join(rows)


def _figure(figure: FigureFile, directory: Path) -> list[str]:
    png, svg = (path.relative_to(directory).as_posix() for path in (figure.png, figure.svg))
    return [
        f"### {figure.title}",
        "",
        f"![{figure.title}]({png})",
        "",
        f"{figure.caption} ([SVG]({svg}))",
        "",
    ]
