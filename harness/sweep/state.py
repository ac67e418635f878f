"""What a sweep's jobs need to know, created once in the launching process before any job starts.

The Hydra callback holds a SweepState; Hydra pickles the callback to joblib and submitit workers, and calls its
`on_job_start` in the process that runs the job, which activates the state there for the job's duration.
"""

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SweepState:
    total_jobs: int | None  # grid size, when the sweeper can tell in advance
    started_at: float  # time.time() of the sweep start (for the ETA)
    progress_file: str  # one JSON line per finished job, appended by every worker
    uri: str | None = None  # tracking URI, resolved once (absolute); None: tracking disabled
    experiment_id: str | None = None
    parent_run_id: str | None = None
    completed: dict[str, float | None] = field(default_factory=dict)  # config hash -> final val loss (resume)
    rerun_all: bool = False


_current: SweepState | None = None


def activate(state: SweepState | None) -> None:
    global _current
    _current = state


def current() -> SweepState | None:
    """The sweep the running job belongs to, or None for a single run."""
    return _current


def replace(state: SweepState, **changes) -> SweepState:
    return dataclasses.replace(state, **changes)
