"""What a launcher knows about one job beyond its config: never part of the config a user types.

The entry point (harness.train) builds a JobContext from Hydra's runtime state; an in-process launcher builds one
directly. Sweep state travels here (the parent run) and in harness.sweep.state, never through the config.
"""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ParentRun:
    """A sweep's parent run, created by the launching process before any job: where the sweep's jobs record."""

    uri: str  # tracking URI, resolved once (absolute)
    experiment_id: str
    run_id: str


@dataclass(frozen=True)
class JobContext:
    """The launcher's facts about one job."""

    project_dir: Path = field(default_factory=Path.cwd)  # the launch directory: default store and git commit
    overrides: tuple[str, ...] = ()  # the command-line overrides of this job, as typed
    job_index: int | None = None  # position in a sweep (spreads jobs over GPUs)
    parallel_jobs: int = 1  # jobs running at once on this machine (sets the default thread count)
    parent: ParentRun | None = None  # inside a tracked sweep: record as a child of this run
