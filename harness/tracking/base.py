"""The tracker interface the training loop and the job talk to; MLflow is one implementation of it."""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

# Run statuses, as MLflow names them.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class Tracker(Protocol):
    """Where a run's params, metrics, tags and artifacts go."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metrics at an optimizer step. Implementations buffer: this is called every step."""

    def log_columns(
        self,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        """Record a chunk of steps at once: `columns[key][i]` is the value of `key` at `steps[i]`.

        The columnar path of the lean loop and of batched trials: one call per chunk, not per step. Values are
        Python floats (or anything `float()` takes; lists beat tensors here: convert a chunk with `.tolist()`).
        `timestamps[i]` (ms since the epoch) is when step i happened; None: now. Implementations may keep the
        sequences until they are written, so pass ones that will not be changed afterwards.
        """

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def close(self, status: str = FINISHED) -> None:
        """Flush everything and end the run with `status` (FINISHED, FAILED or KILLED)."""


class NullTracker:
    """Records nothing: `tracking.enabled=false`."""

    run_id = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_columns(
        self,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def close(self, status: str = FINISHED) -> None:
        pass
