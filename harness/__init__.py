"""Optimizer benchmark harness: Hydra sweeps of PyTorch trainings, tracked in MLflow."""

import os

# MLflow contacts a telemetry host on import; off unless the user opted in explicitly.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
