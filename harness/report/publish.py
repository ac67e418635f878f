"""Attach a written report to its sweep's parent run, so that the MLflow UI answers the question by itself: the
files under report/ (report-<rule>/ for another time-to-target rule), the sweep's answer as the run's description
(`mlflow.note.content`: the headline sentences and the ranked tables, in Markdown) and the ranked table as a logged
table (`mlflow.loggedArtifacts`, as mlflow.log_table records it: the UI's table view).

The Parquet cache beside the report stays local: it can be far larger than the report and MLflow holds the data.
Everything goes through the tracking port: files copied into a local artifact folder (a SQLite store's default)
without MLflow, or uploaded to any other artifact store; the tags written by a store opened for writing.
"""

from harness.report import note
from harness.report.ranking import DEFAULT_RULE
from harness.tracking import schema, stores
from harness.tracking.port import Store

ARTIFACT_DIR = "report"


def artifact_dir(rule: str, aggregate: str = "mean") -> str:
    """Where a report made with time-to-target `rule` and score `aggregate` goes among the parent's artifacts:
    report/ for the defaults, report-<rule>/, report-iqm/ or report-<rule>-iqm/ beside it otherwise, so that none
    replaces another."""
    return "-".join([ARTIFACT_DIR, *variant(rule, aggregate)])


def variant(rule: str, aggregate: str) -> list[str]:
    """The choices of a report other than the defaults, for the names of its folders."""
    return [value for value, default in ((rule, DEFAULT_RULE), (aggregate, "mean")) if value != default]


def attach(source: Store, parent, report, directory: str = ARTIFACT_DIR) -> None:
    """Log report.html, report.md, summary.csv, ranking.json and figures/ under `directory` of the parent run, add
    the table to its logged tables, and make the report its description (the default rule's report always; another
    rule's only where the run has none yet, so that it never replaces the default's).

    Args:
        source: the store the report was read from (read-only: the tags are written through the same store opened
            for writing).
        parent: the parent run (the port's StoredRun: info.run_id, info.artifact_uri).
        report: build.Report.
        directory: the report's folder among the run's artifacts (artifact_dir).

    Raises:
        OSError, StoreError, mlflow.exceptions.MlflowException: the artifacts or tags could not be written.
    """
    files = [
        report.html,
        report.markdown,
        report.summary_csv,
        report.ranking_json,
        report.directory / "figures",
    ]
    source.log_artifacts(parent.info.artifact_uri, files, directory)
    writer = stores.open_store(source.uri, create=False)
    current = writer.run(parent.info.run_id)
    tags = (current or parent).data.tags
    table = f"{directory}/{report.ranking_json.name}"
    written = {schema.LOGGED_ARTIFACTS: note.logged_artifacts(tags.get(schema.LOGGED_ARTIFACTS), table)}
    if directory == ARTIFACT_DIR or not tags.get(schema.NOTE_CONTENT):
        written[schema.NOTE_CONTENT] = note.note(report.content, directory)
    writer.set_tags(parent.info.run_id, written)
