"""A run's artifacts, known by the run's artifact URI: written in place for a local folder (a SQLite store's default,
as MLflow's local artifact repository stores them, without importing MLflow), through MLflow's artifact
repositories for anything else (a tracking server, object storage)."""

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.tracking.store import local_artifact_path


def log_text(artifact_uri: str, text: str, artifact_file: str, tracking_uri: str) -> None:
    """Write `text` as the artifact `artifact_file` (a relative path) under `artifact_uri`; `tracking_uri` resolves
    a server's `mlflow-artifacts:` URIs."""
    if not write_local_text(artifact_uri, text, artifact_file):
        upload_text(artifact_uri, text, artifact_file, tracking_uri)


def log_files(artifact_uri: str, files: Sequence[Path], directory: str, tracking_uri: str) -> None:
    """Copy local files (or folders) under `directory` of the artifacts at `artifact_uri`."""
    if not copy_local_files(artifact_uri, files, directory):
        upload_files(artifact_uri, files, directory, tracking_uri)


def read_text(artifact_uri: str, artifact_file: str, tracking_uri: str) -> str | None:
    """The text of the artifact `artifact_file` under `artifact_uri`, or None when there is no such file."""
    directory = local_artifact_path(artifact_uri)
    if directory is not None:
        path = directory / artifact_file
        return path.read_text() if path.is_file() else None
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = get_artifact_repository(artifact_uri, tracking_uri).download_artifacts(artifact_file, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises its own errors (and OSError) for a missing file
            return None
        return Path(local).read_text()


def write_local_text(artifact_uri: str, text: str, artifact_file: str) -> bool:
    """Write `text` as `artifact_file` under a local (`file:`) artifact URI, as MLflow's local artifact repository
    stores it; False (nothing written) for any other URI."""
    directory = local_artifact_path(artifact_uri)
    if directory is None:
        return False
    path = directory / artifact_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def copy_local_files(artifact_uri: str, files: Sequence[Path], directory: str) -> bool:
    """Copy files (or folders) under `directory` of a local (`file:`) artifact URI, as MLflow's local artifact
    repository stores them; False (nothing copied) for any other URI."""
    root = local_artifact_path(artifact_uri)
    if root is None:
        return False
    target = root / directory
    target.mkdir(parents=True, exist_ok=True)
    for path in map(Path, files):
        if path.is_dir():
            shutil.copytree(path, target / path.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, target / path.name)
    return True


def upload_text(artifact_uri: str, text: str, artifact_file: str, tracking_uri: str) -> None:
    """Write `text` as `artifact_file` into a remote artifact store, known by its URI (no run lookup)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, Path(artifact_file).name)
        local.write_text(text)
        directory = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        get_artifact_repository(artifact_uri, tracking_uri).log_artifact(str(local), directory)


def upload_files(artifact_uri: str, files: Sequence[Path], directory: str, tracking_uri: str) -> None:
    """Files (or folders) into a remote artifact store under `directory`."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(artifact_uri, tracking_uri)
    for path in files:
        if Path(path).is_dir():
            repository.log_artifacts(str(path), f"{directory}/{Path(path).name}")
        else:
            repository.log_artifact(str(path), directory)
