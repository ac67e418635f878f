"""Attach a written report to its sweep's parent run, so that it shows in the MLflow UI (artifacts: report/).

The Parquet cache beside the report stays local: it can be far larger than the report and MLflow holds the data.
The files go through the tracking port: copied into a local artifact folder (a SQLite store's default) without
MLflow, or uploaded to any other artifact store.
"""

from harness.tracking.port import Store

ARTIFACT_DIR = "report"


def attach(source: Store, parent, report) -> None:
    """Log report.html, report.md, summary.csv and figures/ under `report/` of the parent run.

    Args:
        source: the store the report was read from.
        parent: the parent run (the port's StoredRun: info.artifact_uri).
        report: build.Report.

    Raises:
        OSError, mlflow.exceptions.MlflowException: the artifacts could not be written.
    """
    files = [report.html, report.markdown, report.summary_csv, report.directory / "figures"]
    source.log_artifacts(parent.info.artifact_uri, files, ARTIFACT_DIR)
