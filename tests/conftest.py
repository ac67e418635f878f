"""Shared fixtures: configs composed by Hydra exactly as the CLI does, and a private MLflow store per test."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness.config import Config, register_configs, to_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# The scikit-learn splits' cache (harness.tasks.sklearn_data): one per test session, shared by its subprocesses.
os.environ.setdefault("HARNESS_CACHE_DIR", tempfile.mkdtemp(prefix="harness-cache-"))
register_configs()


def compose_config(*overrides: str) -> Config:
    """Compose conf/config.yaml with overrides, as `python -m harness.train <overrides>` would."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store under tmp_path, used by everything the test starts (env is inherited)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch, tmp_path):
    """No test may write to the project's own mlruns/: unless a test says otherwise, tracking goes to tmp."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'default-store' / 'mlflow.db'}")


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m harness.train <args>` in a subprocess, the way a user types it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness.train", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(condition, timeout: float = 240, what: str = "the condition", proc=None):
    """Poll `condition()` until it returns something truthy (returned); fail after `timeout` seconds or when `proc`
    ends first. Tests wait on what they can observe (a run RUNNING in the store), never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc={proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # a polling interval, not a wait for the condition itself


def ended(proc, timeout: float = 120) -> tuple[str, str]:
    """`proc.communicate(timeout)`; a process still alive by then is made to print every thread's stack (SIGABRT
    with PYTHONFAULTHANDLER=1 in its environment, as the tests that start one set it) and the test fails with them."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        raise AssertionError(
            f"the process did not end within {timeout} s; its threads:\n{err[-6000:]}"
        ) from None


def running_runs(uri: str, children_only: bool = False) -> list:
    """Runs RUNNING in the store; an empty list while the store does not exist yet. Opened through the harness's
    store lock, so polling never races the process that is creating the store (MLflow's migrations)."""
    from mlflow.entities import ViewType

    from harness.errors import StoreError
    from harness.tracking.mlflow_store import MlflowStore

    try:
        client = MlflowStore.open(uri, create=False).client
    except StoreError:
        return []
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, "attributes.status = 'RUNNING'") if experiments else []
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags] if children_only else runs


def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(uri: str) -> list:
    """Every run in every experiment of the store (active and deleted experiments alike); none while a SQLite
    store does not exist. Opened through the harness's store lock: a test polling a store that a process it started
    is creating must not race MLflow's migrations."""
    from mlflow.entities import ViewType

    from harness.errors import StoreError
    from harness.tracking.mlflow_store import MlflowStore

    try:
        client = (
            MlflowStore.open(uri, create=False).client if uri.startswith("sqlite:///") else mlflow_client(uri)
        )
    except StoreError:
        return []
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return (
        client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=10_000) if experiments else []
    )


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """A metric's (step, value) points, in step order."""
    points = mlflow_client(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in points)
