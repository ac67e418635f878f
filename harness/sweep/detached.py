"""A cluster sweep launched with `hydra.launcher.wait=false` (hydra/launcher=batched_slurm): its pieces train after
the launch has returned, and a later process records them.

The launch creates each piece's runs as it submits it and trains here what cannot batch, then `leave`s a record in
the sweep directory (pickled: the cluster pool's jobs by id and its column streams, each piece's jobs with their
overrides redacted, run names and run ids; no credential) and names it on the parent run's `harness.detached` tag.
The parent run stays RUNNING with the counts so far (`harness.jobs.*`).

The same sweep command run again finds the parent (harness.sweep.parent.open_parent) and `collect`s: whatever the
pieces streamed is recorded, and each finished piece ended, through the same GroupRun and pool events as a waiting
launch uses, so the records are the same. While pieces are still out it says how many and stops before launching
anything (`StillOut`, exit 0); once every piece is in, the tag is emptied and the sweep resumes as any other: done
points skipped, the missing ones (a piece killed on its node) launched, the parent run ended.
"""

import dataclasses
import os
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.context import ParentRun
from harness.sweep import progress
from harness.sweep.group_run import GroupRun, record_event
from harness.sweep.state import SweepState
from harness.tracking import queries, record, schema
from harness.tracking.port import Store


class StillOut(Exception):
    """Pieces of the sweep are still on the cluster: the line says how many; nothing is launched."""


@dataclass(frozen=True)
class _Job:
    """What a GroupRun reads of a job once its runs exist (an InProcessJob's number and overrides)."""

    index: int
    overrides: tuple[str, ...]  # redacted


@dataclass(frozen=True)
class _Piece:
    jobs: tuple[_Job, ...]
    names: tuple[str, ...]  # the trials' run names
    runs: tuple[tuple[str, str | None], ...]  # the trials' (run id, artifact URI)


@dataclass
class _Left:
    state: SweepState  # the launch's, its parent's URI redacted (the collecting process has its own)
    pool: object  # the launch's ClusterPool (hydra_plugins/harness_batched/packed.py)
    pieces: dict[int, _Piece]  # those not yet recorded whole


def leave(hooks, pool, running: dict[int, GroupRun]) -> None:
    """Save what a later process needs to record the pieces in `running` (their runs exist), name it on the parent
    run, tag the counts so far, and have the sweep's end say so instead of ending the parent."""
    from harness.tracking import stores

    state = hooks.state
    parent = state.parent
    pieces = {
        index: _Piece(
            tuple(_Job(j.index, tuple(record.redact(o) for o in j.overrides)) for j in run.jobs),
            tuple(run.names),
            tuple(run.runs()),
        )
        for index, run in running.items()
    }
    redacted = dataclasses.replace(parent, uri=record.redact(parent.uri))
    path = progress.sweep_dir(state) / f"harness_detached-{uuid.uuid4().hex}.pkl"
    _save(path, _Left(dataclasses.replace(state, parent=redacted), pool, pieces))
    found = stores.open_store(parent.uri)
    found.set_tags(parent.run_id, {schema.DETACHED: str(path)})
    counts = tag_counts(found, parent)
    hooks.detach(
        f"[sweep] left on the cluster (hydra.launcher.wait=false): {_pieces(len(pieces))} as "
        f"{_jobs_named(pool.job_ids())} · {_done(counts, state)} · parent run {parent.run_id} stays RUNNING · the "
        "same command again shows their progress, records what they trained and ends the sweep once every piece "
        "is in"
    )


def collect(found: Store, parent: ParentRun, tag: str, project_dir: str) -> None:
    """Record what the detached pieces named by `tag` trained so far, and end the pieces that are done.

    Raises:
        StillOut: some pieces are still on the cluster (what they streamed so far is recorded).
    """
    path = Path(tag)
    try:
        left = _load(path)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        # Its record is gone (the sweep directory removed): the resume ends the pieces' runs KILLED as stale.
        found.set_tags(parent.run_id, {schema.DETACHED: ""})
        return
    # Quiet: the still-out line, or the resume's start line, says the counts (a progress line here would count
    # the pieces' jobs in one go, timed from the first launch).
    state = dataclasses.replace(left.state, parent=parent, says_progress=False)
    hooks = _Collecting(state, project_dir)
    running = {
        i: GroupRun.attached(p.jobs, list(p.names), hooks, list(p.runs)) for i, p in left.pieces.items()
    }
    for event in left.pool.events(timeout=0):
        record_event(event, running)
    if not running:
        found.set_tags(parent.run_id, {schema.DETACHED: ""})
        path.unlink(missing_ok=True)
        return
    for run in running.values():
        run.flush()
    left.pieces = {i: p for i, p in left.pieces.items() if i in running}
    _save(path, left)  # with the streams' read positions: the next collection goes on from there
    counts = tag_counts(found, parent)
    waiting = ", ".join(f"{len(pieces)} {state.lower()}" for state, pieces in left.pool.pieces_left().items())
    raise StillOut(
        f"[sweep] still on the cluster: {_pieces(len(running))} ({waiting}) · {_done(counts, left.state)} · parent run "
        f"{parent.run_id} stays RUNNING · run the same command again later"
    )


def tag_counts(found: Store, parent: ParentRun) -> dict[str, int]:
    """The parent's `harness.jobs.*` counts over the latest run per grid point so far, for a parent that stays
    RUNNING (the runs still training count in `total` only, as at a sweep's end). Returns them, `running` too."""
    children = found.children(parent.experiment_id, parent.run_id)
    latest = queries.latest_per_grid_point(children).values()
    counts = schema.count_outcomes(queries.child_outcome(r).outcome for r in latest)
    tags = {schema.job_count_tag(k): str(counts[k]) for k in (*schema.OUTCOMES, "total")}
    found.set_tags(parent.run_id, tags)
    return counts


class _Collecting:
    """The hooks a GroupRun calls, in a process that only records: the launch's state, no Hydra callbacks."""

    def __init__(self, state: SweepState, project_dir: str) -> None:
        self.state, self.project_dir = state, project_dir

    def open_sweep(self) -> None:
        pass

    def on_job_start(self, job) -> None:
        pass

    def on_job_end(self, job, value) -> None:
        pass


def _done(counts: dict[str, int], state: SweepState) -> str:
    done = sum(counts[o] for o in schema.DONE_OUTCOMES)
    total = state.total_jobs if state.total_jobs is not None else counts["total"]
    return f"{done} of {total} grid points done so far"


def _pieces(n: int) -> str:
    return f"{n} piece" if n == 1 else f"{n} pieces"


def _jobs_named(ids: list[str]) -> str:
    """`SLURM array 812 (8 tasks)` (or several arrays: pieces of other sizes go out as their own) for array tasks,
    else the job ids."""
    if not all("_" in i for i in ids):
        return f"job{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
    arrays: dict[str, int] = {}
    for i in ids:
        array = i.partition("_")[0]
        arrays[array] = arrays.get(array, 0) + 1
    named = ", ".join(f"{array} ({n} task{'s' if n > 1 else ''})" for array, n in arrays.items())
    return f"SLURM array{'s' if len(arrays) > 1 else ''} {named}"


def _save(path: Path, left: _Left) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(pickle.dumps(left, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(partial, path)  # whole or not at all


def _load(path: Path) -> _Left:
    return pickle.loads(path.read_bytes())


__all__ = ["StillOut", "collect", "leave", "tag_counts"]
