"""What a report says, independent of its format, and its two renderings: one self-contained HTML page (styles
inline, figures embedded as base64 PNG, so it opens offline and can be mailed as one file) and Markdown (figures
linked from figures/, for a repository or the MLflow UI). Warnings and answers first, figures after."""

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class FigureFile:
    name: str  # file stem under figures/
    title: str
    caption: str  # how to read it
    png: Path
    svg: Path


@dataclass(frozen=True)
class Section:
    """One task: the answer first, then the ranked table, the fairness line, warnings and the figures."""

    task: str
    answer: str
    fairness: str
    warnings: list[str]  # e.g. best lr at the edge of the grid
    ranked: pd.DataFrame  # strings, tables.display_ranked
    figures: list[FigureFile]
    table_notes: list[str] = field(default_factory=list)  # what the table's columns mean (the target, clocks)
    confidence: str | None = None  # how sure the winner is (stats.headline); None with one optimizer


@dataclass(frozen=True)
class Content:
    title: str
    banner: str | None  # an unfinished sweep says so before anything else
    facts: list[str]  # experiment, sweep, run counts
    sections: list[Section]
    overall: list[FigureFile]  # across tasks (performance profiles)
    summary: pd.DataFrame  # strings, tables.display_summary
    notes: list[str] = field(default_factory=list)  # how things were computed
    race: "RaceSection | None" = None  # a raced sweep: what the race spent and decided


@dataclass(frozen=True)
class RaceSection:
    headline: str  # trials and trial-steps against the whole grid's
    decision: list[str]  # one sentence per task
    figure: FigureFile
    events: pd.DataFrame  # strings: eliminations and settlements per round


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.facts { color: #555; margin: 0.1em 0; }
.banner { font-size: 1.1em; background: #fff4e0; border-left: 5px solid #d08000; padding: 0.6em 1em; }
.answer { font-size: 1.15em; background: #eef6ee; border-left: 5px solid #2a8a2a; padding: 0.6em 1em; }
.confidence { font-size: 0.9em; color: #2a4a2a; }
.fair { color: #2a6a2a; } .unfair, .warning { color: #a03000; font-weight: bold; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:nth-child(2) { text-align: left; font-weight: 600; }
table.ranked tbody tr:first-child { background: #eef6ee; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.95em; max-width: 1100px; }
.notes li { color: #444; margin: 0.3em 0; } p.note { color: #444; font-size: 0.92em; margin: 0.2em 0; }
"""


def to_html(content: Content, directory: Path) -> str:
    """The whole page. Figure links (SVG) are relative to `directory`, where the page is written."""
    parts = [f"<h1>{_e(content.title)}</h1>"]
    if content.banner:
        parts.append(f'<p class="banner">{_e(content.banner)}</p>')
    parts += [f'<p class="facts">{_e(fact)}</p>' for fact in content.facts]
    parts += [_html_answer(section) for section in content.sections]
    if content.race is not None:
        race = content.race
        parts += ["<h2>The race</h2>", f'<p class="answer">{_e(race.headline)}</p>']
        parts += [f'<p class="facts">{_e(line)}</p>' for line in race.decision]
        parts += [_html_figure(race.figure, directory), _html_table(race.events, "race")]
    for section in content.sections:
        parts.append(f"<h2>Figures: {_e(section.task)}</h2>")
        parts += [_html_figure(figure, directory) for figure in section.figures]
    if content.overall:
        parts.append("<h2>Across tasks</h2>")
        parts += [_html_figure(figure, directory) for figure in content.overall]
    parts += ["<h2>Per optimizer and batch size</h2>", _html_table(content.summary, "summary")]
    parts += [
        '<p>The same as CSV: <a href="summary.csv">summary.csv</a>.</p>',
        "<h2>How this was computed</h2>",
    ]
    parts.append('<ul class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in content.notes) + "</ul>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(content.title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html_answer(section: Section) -> str:
    fair = "unfair" if section.fairness.startswith("Unfair") else "fair"
    return "\n".join(
        [
            f"<h2>{_e(section.task)}</h2>",
            f'<p class="answer">{_e(section.answer)}'
            + (f'<br><span class="confidence">{_e(section.confidence)}</span>' if section.confidence else "")
            + "</p>",
            _html_table(section.ranked, "ranked"),
            *(f'<p class="note">{_e(note)}</p>' for note in section.table_notes),
            f'<p class="{fair}">{_e(section.fairness)}</p>',
            *(f'<p class="warning">{_e(warning)}</p>' for warning in section.warnings),
        ]
    )


def _html_table(frame: pd.DataFrame, css_class: str) -> str:
    return frame.to_html(index=False, escape=True, border=0, classes=css_class)


def _html_figure(figure: FigureFile, directory: Path) -> str:
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    svg = figure.svg.relative_to(directory).as_posix()
    return (
        f'<figure id="{_e(figure.name)}"><img alt="{_e(figure.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)} "
        f'(<a href="{_e(svg)}">SVG</a>)</figcaption></figure>'
    )


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def to_markdown(content: Content, directory: Path) -> str:
    """The whole document; figure links are relative to `directory`, where it is written."""
    lines = [f"# {content.title}", ""]
    if content.banner:
        lines += [f"> **{content.banner}**", ""]
    lines += [*(f"- {fact}" for fact in content.facts), ""]
    for section in content.sections:
        lines += [f"## {section.task}", "", f"**{section.answer}**", ""]
        lines += [f"{section.confidence}.", ""] if section.confidence else []
        lines += [markdown_table(section.ranked), ""]
        lines += [*(f"*{note}*\n" for note in section.table_notes)]
        lines += [section.fairness, "", *(f"**Warning:** {warning}\n" for warning in section.warnings)]
    if content.race is not None:
        race = content.race
        lines += ["## The race", "", f"**{race.headline}**", "", *(f"- {line}" for line in race.decision), ""]
        lines += [*_md_figure(race.figure, directory), markdown_table(race.events), ""]
    for section in content.sections:
        lines += [f"## Figures: {section.task}", ""]
        lines += [line for figure in section.figures for line in _md_figure(figure, directory)]
    if content.overall:
        lines += ["## Across tasks", ""] + [
            line for figure in content.overall for line in _md_figure(figure, directory)
        ]
    lines += [
        "## Per optimizer and batch size",
        "",
        markdown_table(content.summary),
        "",
        "(also as `summary.csv`)",
        "",
    ]
    lines += ["## How this was computed", "", *(f"- {note}" for note in content.notes), ""]
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of strings (pipes escaped)."""

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    rows = [cells(frame.columns), "|" + "---|" * len(frame.columns)]
    return "\n".join(rows + [cells(row) for row in frame.itertuples(index=False)])


def _md_figure(figure: FigureFile, directory: Path) -> list[str]:
    png, svg = (path.relative_to(directory).as_posix() for path in (figure.png, figure.svg))
    return [
        f"### {figure.title}",
        "",
        f"![{figure.title}]({png})",
        "",
        f"{figure.caption} ([SVG]({svg}))",
        "",
    ]
