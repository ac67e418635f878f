"""A Tracker that keeps everything in memory: for tests of the loop and the batched engine (no store)."""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from harness.tracking.base import FINISHED


class MemoryTracker:
    """Keeps everything in memory."""

    run_id = None

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.status: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.history[key].append((step, value))

    def log_columns(
        self,
        steps: Sequence[int],
        columns: Mapping[str, Sequence[float]],
        timestamps: Sequence[int] | None = None,
    ) -> None:
        for key, values in columns.items():
            self.history[key].extend(zip((int(s) for s in steps), (float(v) for v in values)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def close(self, status: str = FINISHED) -> None:
        self.status = status

    def values(self, key: str) -> list[float]:
        return [value for _, value in self.history[key]]
