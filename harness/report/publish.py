"""Attach a written report to its sweep's parent run, so that it shows in the MLflow UI (artifacts: report/)."""

from mlflow import MlflowClient

from harness.report.build import Report

ARTIFACT_DIR = "report"


def log_report(client: MlflowClient, run_id: str, report: Report) -> None:
    """Log report.html, report.md, summary.csv and figures/ under `report/` of the run.

    The Parquet cache beside them stays local: it can be far larger than the report and MLflow already holds
    the same data.
    """
    for path in (report.html, report.markdown, report.summary_csv):
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    client.log_artifacts(run_id, str(report.directory / "figures"), f"{ARTIFACT_DIR}/figures")
