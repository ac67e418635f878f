"""What a sweep's jobs need to know, decided once in the launching process before any job starts.

The sweep callback writes it as `harness_sweep.json` into Hydra's sweep directory; each job reads it from there
(harness.train), whichever process or machine runs it. An in-process launcher passes it to `run_in_sweep` directly.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.context import ParentRun

STATE_FILE = "harness_sweep.json"


@dataclass(frozen=True)
class SweepState:
    total_jobs: int | None  # grid size, when the sweeper can tell in advance
    started_at: float  # time.time() of the sweep start (for the ETA)
    progress_file: str  # one JSON line per finished job, appended by every worker
    parent: ParentRun | None = None  # None: tracking disabled
    completed: dict[str, float | None] = field(default_factory=dict)  # config hash -> final val loss (resume)

    def save(self, sweep_dir: Path) -> None:
        (sweep_dir / STATE_FILE).write_text(json.dumps(dataclasses.asdict(self)))


def load(sweep_dir: Path) -> SweepState | None:
    """The state the sweep callback left in `sweep_dir`, or None when there is none (no callback configured)."""
    path = sweep_dir / STATE_FILE
    if not path.exists():
        return None
    values = json.loads(path.read_text())
    parent = values.pop("parent")
    return SweepState(**values, parent=ParentRun(**parent) if parent else None)
