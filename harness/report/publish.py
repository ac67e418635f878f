"""Attach a written report to its sweep's parent run, so that it shows in the MLflow UI (artifacts: report/).

The Parquet cache beside the report stays local: it can be far larger than the report and MLflow holds the data.
A run whose artifacts live in a local folder (a SQLite store's default, a `file:` URI) gets the files copied there,
which is all MLflow's local artifact repository does, without importing MLflow; other artifact stores (a tracking
server, object storage) go through MlflowClient.
"""

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

ARTIFACT_DIR = "report"


def attach(uri: str, parent, report) -> None:
    """Log report.html, report.md, summary.csv and figures/ under `report/` of the parent run.

    Args:
        uri: the tracking URI.
        parent: the parent run (MLflow's Run shape: info.run_id, info.artifact_uri).
        report: build.Report.

    Raises:
        OSError, mlflow.exceptions.MlflowException: the artifacts could not be written.
    """
    files = [report.html, report.markdown, report.summary_csv]
    folder = _local_folder(parent.info.artifact_uri)
    if folder is not None:
        target = folder / ARTIFACT_DIR
        (target / "figures").mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, target / path.name)
        shutil.copytree(report.directory / "figures", target / "figures", dirs_exist_ok=True)
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for path in files:
        client.log_artifact(parent.info.run_id, str(path), ARTIFACT_DIR)
    client.log_artifacts(parent.info.run_id, str(report.directory / "figures"), f"{ARTIFACT_DIR}/figures")


def _local_folder(artifact_uri: str | None) -> Path | None:
    """The folder of a `file:` (or plain path) artifact URI; None for any other scheme."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None
