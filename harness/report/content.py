"""What a report says, independent of its format: the HTML and Markdown writers both render a Content."""

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
    """One task: the answer first, then the ranked table, the fairness line and the figures."""

    task: str
    answer: str
    fairness: str
    ranked: pd.DataFrame  # strings, tables.display_ranked
    figures: list[FigureFile]


@dataclass(frozen=True)
class Content:
    title: str
    facts: list[str]  # experiment, sweep, store, run counts
    sections: list[Section]
    overall: list[FigureFile]  # across tasks (performance profiles)
    summary: pd.DataFrame  # strings, tables.display_summary
    notes: list[str] = field(default_factory=list)  # how things were computed
