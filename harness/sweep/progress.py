"""Sweep-level progress shared by all workers: each job appends one JSON line to its launch's progress file, and the
sweep's lines that jobs cause: one per failure, and the progress line.

The progress line is throttled across every process of the sweep: the first job run prints one (the first ETA),
then at most one per `SweepState.progress_every_s` (hydra.callbacks.sweep.progress_every_s), never for the last job
(the summary follows); a marker file beside the progress file holds when the last one was printed.

Entries are redacted (a job's overrides may carry `tracking.uri=...` with credentials): no secret reaches the file.
"""

import json
import os
import time
from pathlib import Path

from harness.sweep import output
from harness.sweep.state import SweepState
from harness.tracking import record, schema

SKIPPED = "skipped"  # a grid point already done in the store (resume); not an outcome, a job not run


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def read(progress_file: str) -> list[dict]:
    path = Path(progress_file)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(state: SweepState, status: str, overrides: list[str], error: str = "") -> None:
    """Record one finished job (an outcome, or SKIPPED); say its failure, and the progress when it is due."""
    report_many(state, [(status, overrides, error)])


def report_many(state: SweepState, jobs: list[tuple[str, list[str], str]]) -> None:
    """Record several finished jobs ((status, overrides, error) each) in one write; say each failure, and the
    progress once when it is due (launchers that finish many jobs at once: a batched group, a resume's done points).
    """
    if not jobs:
        return
    lines = "".join(_entry(s, o, e) + "\n" for s, o, e in jobs)
    with open(state.progress_file, "a") as f:  # O_APPEND: one short write, safe across processes
        f.write(lines)
    say = output.logger(__name__, sweep_dir(state))
    for status, overrides, error in jobs:
        if status in (schema.FAILED_OUTCOME, schema.KILLED_OUTCOME):
            say.error(failure_line(overrides, error, status))
    ran = any(
        status != SKIPPED for status, _, _ in jobs
    )  # a resume's skipped points: the start line said them
    if ran and state.says_progress and _due(state):
        entries = read(state.progress_file)
        if state.total_jobs is None or len(entries) < state.total_jobs:
            say.info(progress_line(state, entries))


def sweep_dir(state: SweepState) -> Path:
    """Hydra's sweep directory, where the launch's files are."""
    return Path(state.progress_file).parent


def failure_line(overrides: list[str], error: str, outcome: str = schema.FAILED_OUTCOME) -> str:
    """`[sweep] failed: <error> · re-run it alone: python -m harness.train <its overrides>`, on one line (`killed:`
    for a job ended from outside, e.g. its cluster job cancelled)."""
    typed = " ".join(o for o in overrides if not o.startswith("hydra"))
    said = " ".join(str(error).split())
    return record.redact(f"[sweep] {outcome}: {said} · re-run it alone: python -m harness.train {typed}")


def _due(state: SweepState) -> bool:
    """True for the sweep's first finished job, then once `progress_every_s` has passed since the last line (in
    whichever process printed it)."""
    marker = Path(state.progress_file).with_suffix(".shown")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        pass
    except OSError:
        return False  # an unwritable sweep directory: no throttle to keep, no progress line
    try:
        if time.time() - marker.stat().st_mtime < state.progress_every_s:
            return False
        os.utime(marker)
    except OSError:
        return False
    return True


def _entry(status: str, overrides: list[str], error: str) -> str:
    redacted = [record.redact(o) for o in overrides]
    return json.dumps({"status": status, "overrides": redacted, "error": record.redact(error)})


def progress_line(state: SweepState, entries: list[dict], final: bool = False) -> str:
    """`[sweep] 12/384 jobs done · 0 failed, 4 diverged · 0:16 elapsed · ~8:29 left`. A race's grid is the most it
    trains: `12/≤384`, and its time left an upper bound; the final line has no time left, and a race's says how
    much of the grid it trained."""
    counts = schema.count_outcomes(e["status"] for e in entries)
    done = counts["total"]
    skipped = counts.get(SKIPPED, 0)
    failed, diverged = counts[schema.FAILED_OUTCOME], counts[schema.DIVERGED]
    elapsed = time.time() - state.started_at
    total = state.total_jobs
    if final and state.raced and total is not None:
        parts = [f"[sweep] {done} jobs done (raced: {done / total:.0%} of the {total}-point grid)"]
    else:
        bound = "≤" if state.raced else ""
        parts = [f"[sweep] {done}/{bound}{total if total is not None else '?'} jobs done"]
    if failed or diverged:
        parts.append(f"{failed} failed, {diverged} diverged")
    if skipped:
        parts.append(f"{skipped} already done")
    parts.append(f"{_clock(elapsed)} elapsed")
    ran = done - skipped
    if total is not None and ran and done < total and not final:
        left = _clock(elapsed / ran * (total - done))
        parts.append(f"at most ~{left} left" if state.raced else f"~{left} left")
    return " · ".join(parts)
