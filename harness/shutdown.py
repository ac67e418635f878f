"""A process that stops early leaves a consistent store: no run RUNNING, the sweep's parent ended with its counts.

The job itself ends its run KILLED on an interrupt (harness.job). What is left is the sweep's: runs of workers that
were killed before they could end theirs, and the parent run. The launching process ends both here, then says in one
line how to resume.
"""

import shlex
import sys
import time
from pathlib import Path

from harness import failures
from harness.redaction import redact
from harness.sweep.state import SweepState
from harness.tracking import owners, schema

WORKER_GRACE_S = 20.0  # how long a signalled sweep waits for its workers to end their runs themselves

_open: SweepState | None = None


def sweep_opened(state: SweepState | None) -> None:
    """Called in the launching process once the sweep's parent run exists."""
    global _open
    _open = state


def sweep_closed() -> None:
    global _open
    _open = None


def command() -> str:
    """The command line as the user typed it (what resumes the sweep), shell-quoted, its credentials redacted (the
    user types them again: a printed line never holds a secret)."""
    program = "harness-train" if Path(sys.argv[0]).name == "harness-train" else "python -m harness.train"
    return redact(f"{program} {shlex.join(sys.argv[1:])}".strip())


def wait_for_workers(workers: int, timeout: float = WORKER_GRACE_S) -> None:
    """Signal hook: give signalled workers the time to end their runs KILLED (metrics flushed) before the pool is
    torn down. Polls the store until no child of the parent is RUNNING."""
    if not workers or _open is None or _open.parent is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _running_children(_open):
        time.sleep(0.2)


def _running_children(state: SweepState) -> list:
    from harness.tracking import stores

    parent = state.parent
    runs = stores.open_store(parent.uri).children(parent.experiment_id, parent.run_id)
    return [r for r in runs if r.info.status == schema.RUNNING]


def end_sweep(status: str, reason: str) -> str | None:
    """End the open sweep's leftover RUNNING children and its parent run with `status`; a line on the outcome.

    Returns None when no sweep is open in this process.
    """
    state = _open
    if state is None or state.parent is None:
        return None
    sweep_closed()
    reason = redact(reason)  # a bug's message, as raised, goes on the parent's error tag
    from harness.sweep.parent import end_parent
    from harness.tracking import stores

    parent = state.parent
    counts = end_parent(stores.open_store(parent.uri), parent, status, reason)
    done = counts[schema.COMPLETED] + counts[schema.DIVERGED]
    total = state.total_jobs if state.total_jobs is not None else "?"
    return f"sweep parent run {parent.run_id} ended {status} with {done} of {total} grid points done"


def interrupted(signame: str) -> str:
    """The one line printed when a signal stopped the process, after ending what was left RUNNING: the sweep's
    outcome, or what became of this process's run (harness.tracking.owners knows whether one was created and how it
    ended)."""
    reason = f"interrupted ({signame})"
    owners.end_unended(schema.KILLED, reason)  # a run the signal caught before its job could end it
    try:
        sweep = end_sweep(schema.KILLED, reason)
    except Exception as exc:  # noqa: BLE001 - the store may be what failed; the line below must still come out
        sweep = f"could not end the sweep's runs ({failures.describe(exc) or type(exc).__name__})"
    if sweep is not None:
        return f"interrupted by {signame}: {sweep}; resume it (done points are skipped) with: {command()}"
    run = owners.latest()
    if run is None:
        return f"interrupted by {signame}: no run was created, nothing was recorded; run it again with: {command()}"
    if run.status is None:
        return f"interrupted by {signame}: {failures.left_running()}; run it again with: {command()}"
    if run.status == schema.FINISHED:
        return f"interrupted by {signame} after run {run.run_id} had ended FINISHED: nothing was lost"
    return f"interrupted by {signame}: the run ended {run.status}; run it again with: {command()}"


def failed(message: str, environment: bool = True) -> str:
    """After a one-line failure: end the open sweep's runs FAILED if the store lets us. Returns what the failure's
    line goes on to say: what became of the sweep or of a run the store refused to end, and how to resume
    (`environment`: the store or the disk failed, so the same command resumes once that is fixed; a refused config
    value says all there is to say itself)."""
    owners.end_unended(
        schema.FAILED, redact(message)
    )  # once more: a store that refused the end may take it now
    try:
        line = end_sweep(schema.FAILED, message)
    except Exception as exc:  # noqa: BLE001 - the store may be what failed: say so, and how the next command ends them
        why = failures.describe(exc) or type(exc).__name__
        return (
            f"; the sweep's runs could not be ended ({why}): once that is fixed, run the same command again: it ends "
            f"the runs left RUNNING and completes the grid: {command()}"
        )
    if line:
        return f"; {line}; run the same command again once the problem is fixed (done points are skipped): {command()}"
    left = failures.left_running()
    said = f"; {left}" if left else ""
    return f"{said}; run it again once the problem is fixed: {command()}" if environment else said
