"""What could not reach the tracking server, kept on local disk until `python -m harness.sync <file>` uploads it.

A spool file is JSON lines: a header naming the run and the tracking URI, then records in the order they happened:
`{"text": {"artifact_file": ..., "text": ...}}`, `{"metrics": [[key, value, timestamp_ms, step], ...]}`,
`{"tags": {...}}`, `{"end": {"status": ..., "end_time": ...}}`.
"""

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path


class Spool:
    """Append-only, thread-safe (the metric writer thread and the training thread both write)."""

    def __init__(self, path: Path, run_id: str, tracking_uri: str, reason: str):
        self.path = path
        self._lock = threading.Lock()
        self.records = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._append({"run_id": run_id, "tracking_uri": tracking_uri, "reason": reason})

    def metrics(self, rows: Sequence[tuple[str, float, int, int]]) -> None:
        self._append({"metrics": [list(row) for row in rows]})

    def text(self, text: str, artifact_file: str) -> None:
        self._append({"text": {"artifact_file": artifact_file, "text": text}})

    def tags(self, tags: Mapping[str, str]) -> None:
        self._append({"tags": dict(tags)})

    def end(self, status: str, end_time: int) -> None:
        self._append({"end": {"status": status, "end_time": end_time}})

    def _append(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=True) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)
            self.records += 1


def read(path: Path) -> tuple[dict, list[dict]]:
    """The header and the records of a spool file."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or not isinstance(lines[0], dict) or "run_id" not in lines[0]:
        raise ValueError(f"{path} is not a harness spool file (no header)")
    if not all(isinstance(line, dict) for line in lines):
        raise ValueError(f"{path} is not a harness spool file (a line is not a JSON object)")
    return lines[0], lines[1:]
