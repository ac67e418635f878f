"""The sweep's answer as the MLflow UI shows it: Markdown for the parent run's description (`mlflow.note.content`)
and the ranked table in the JSON that `mlflow.log_table` writes, so that the UI's table view shows it.

MLflow keeps a tag of at most MAX_NOTE characters: a note that would be longer keeps every answer and cuts the
tables, first to their main columns, then to their first rows (saying how many are left out and where they are).
"""

import json

import pandas as pd

from harness.report.render import Content, markdown_table
from harness.tracking.port import MAX_TAG_LENGTH

MAX_NOTE = MAX_TAG_LENGTH
TABLE_TYPE = "table"  # the type mlflow.log_table records in mlflow.loggedArtifacts
MAIN_COLUMNS = [
    "#",
    "optimizer",
    "best lr",
    "batch size",
    "final val loss (mean ± std)",
    "score (95 % CI)",
    "seeds",
    "diverged",
]


def note(content: Content, report_path: str) -> str:
    """The parent run's description: per task the answer and the ranked table, then where the report is; at most
    MAX_NOTE characters.

    Args:
        content: the report's content (render.Content).
        report_path: the report's folder among the run's artifacts, e.g. "report".
    """
    footer = (
        f"Full report: artifacts `{report_path}/report.html` (figures, per batch size, how it was computed)."
    )
    head = [f"**{content.banner}**"] if content.banner else []
    for columns, rows in [(None, None), *((MAIN_COLUMNS, rows) for rows in (None, 20, 10, 5, 3, 1, 0))]:
        text = _compose(content, head, footer, columns, rows, report_path)
        if len(text) <= MAX_NOTE:
            return text
    return text[: MAX_NOTE - 1] + "…"


def _compose(content: Content, head, footer, columns, rows, report_path) -> str:
    parts = list(head)
    for section in content.sections:
        parts.append(f"**{section.answer}**")
        if section.confidence:
            parts.append(f"{section.confidence}.")
        table = (
            section.ranked if columns is None else section.ranked[[c for c in columns if c in section.ranked]]
        )
        if rows != 0:
            shown = table if rows is None else table.head(rows)
            parts.append(markdown_table(shown))
            if len(shown) < len(table):
                parts.append(f"({len(table) - len(shown)} more rows in `{report_path}/report.md`)")
    return "\n\n".join([*parts, footer]) + "\n"


def table_json(table: pd.DataFrame) -> str:
    """`table` as mlflow.log_table writes a .json table: {"columns": [...], "data": [[...], ...]} (pandas' split
    orient without the index; missing values as null). Floats written as Python writes them, which read back to the
    same number (pandas' to_json keeps 10 digits)."""
    rows = table.astype(object).where(table.notna(), None).to_numpy().tolist()
    return json.dumps(
        {"columns": [str(c) for c in table.columns], "data": [[_plain(v) for v in row] for row in rows]}
    )


def _plain(value):
    """numpy scalars as the Python numbers json writes."""
    return value.item() if hasattr(value, "item") else value


def logged_artifacts(current: str | None, path: str) -> str:
    """The `mlflow.loggedArtifacts` tag with the table at `path` added (once), as mlflow.log_table updates it."""
    entries = json.loads(current or "[]")
    entry = {"path": path, "type": TABLE_TYPE}
    return json.dumps(entries if entry in entries else [*entries, entry])
