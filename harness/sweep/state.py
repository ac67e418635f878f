"""What a sweep's jobs need to know, decided once in the launching process before any job starts.

Each launch has its own state: the sweep callback writes it as `harness_sweep-<launch id>.json` (its progress file
as `harness_progress-<launch id>.jsonl`) into Hydra's sweep directory and hands its path to the jobs through Hydra
itself (`hydra.job.env_set.HARNESS_SWEEP_STATE`, see `job_override`), so two launches that share a sweep directory
(started in the same second, or given the same `hydra.sweep.dir`) never read each other's. Each job reads it
(harness.train) in whichever process or machine runs it; an in-process launcher passes it to `run_in_sweep` directly.

No secret is written: the file holds the tracking URI redacted, and a job takes the real one from its own config or
environment (`load`), after checking that it is the sweep's.
"""

import dataclasses
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.context import ParentRun
from harness.errors import StoreError
from harness.tracking import record, schema

ENV = "HARNESS_SWEEP_STATE"  # the path of this launch's state file, in each job's environment


@dataclass(frozen=True)
class SweepState:
    total_jobs: int | None  # grid size, when the sweeper can tell in advance
    started_at: float  # time.time() of the sweep start (for the ETA)
    progress_file: str  # one JSON line per finished job, appended by every worker
    parent: ParentRun | None = None  # None: tracking disabled
    # config hash -> final val loss, or a pruned run's schema.Pruned (resume)
    completed: dict[str, "float | schema.Pruned | None"] = field(default_factory=dict)
    # hydra.callbacks.sweep.*: each job's own lines on the terminal too; at most one progress line this often
    job_lines: bool = False
    progress_every_s: float = 30.0
    raced: bool = False  # hydra/sweeper=race: total_jobs is the most it trains, not the plan
    says_progress: bool = True  # false: no progress lines (a process collecting a detached sweep's pieces)

    def save(self, path: Path) -> None:
        """Write the state to `path` whole (a job never reads half a file), the tracking URI redacted."""
        values = dataclasses.asdict(self)
        if self.parent is not None:
            values["parent"]["uri"] = record.redact(self.parent.uri)
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.write_text(json.dumps(values))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class Launch:
    """The files of one launch of a sweep, named by a fresh id: no other launch writes or reads them."""

    state_file: Path
    progress_file: Path

    @classmethod
    def new(cls, sweep_dir: Path) -> "Launch":
        launch_id = uuid.uuid4().hex
        return cls(
            sweep_dir / f"harness_sweep-{launch_id}.json", sweep_dir / f"harness_progress-{launch_id}.jsonl"
        )

    def job_override(self) -> str:
        """The Hydra override that sets ENV in every job's environment (Hydra's launchers compose each job from the
        sweep's `hydra.overrides.hydra`). Quoted, so that no character of the path is read as Hydra's syntax."""
        return f"++hydra.job.env_set.{ENV}={quoted(str(self.state_file))}"


def quoted(text: str) -> str:
    """`text` as a quoted value of a Hydra override that OmegaConf reads back as `text`: Hydra's grammar takes a
    backslash literally except before a quote or at the end, OmegaConf reads `${` as an interpolation unless escaped.
    """
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    return f"'{text}'"


def load(path: str | os.PathLike, uri: str) -> SweepState:
    """The state of the launch whose file is `path` (a job's ENV). `uri`: the tracking URI the job resolved from its
    own config and environment, which carries the credentials the file does not.

    Raises:
        StoreError: the file is gone, or the sweep records to another store than the job would.
    """
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(
            f"this job's sweep state {path} cannot be read ({type(exc).__name__}: {exc}); run the sweep again "
            "from its launching command"
        ) from exc
    parent = values.pop("parent")
    # asdict wrote a pruned point's schema.Pruned as a dict
    completed = values.get("completed", {})
    values["completed"] = {k: schema.Pruned(**v) if isinstance(v, dict) else v for k, v in completed.items()}
    if parent:
        parent["uri"] = _real_uri(parent["uri"], uri)
    return SweepState(**values, parent=ParentRun(**parent) if parent else None)


def _real_uri(saved: str, uri: str) -> str:
    """The sweep's URI with its credentials: the job's own when it is the same store, the saved one when it has
    none to hide."""
    if record.redact(uri) == saved:
        return uri
    if record.REDACTED not in saved:  # nothing was redacted: the saved URI is the whole URI
        return saved
    raise StoreError(
        f"this job's tracking URI ({record.redact(uri)}) is not its sweep's ({saved}): set tracking.uri or "
        "MLFLOW_TRACKING_URI the same for the launching command and every job"
    )
