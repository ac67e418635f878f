"""Sweep-level progress shared by all workers: each job appends one JSON line to its launch's progress file.

Entries are redacted (a job's overrides may carry `tracking.uri=...` with credentials): no secret reaches the file.
"""

import json
import sys
import time
from pathlib import Path

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
    """Record one finished job (an outcome, or SKIPPED) and print the sweep's progress line."""
    entry = _entry(status, overrides, error)
    with open(state.progress_file, "a") as f:  # O_APPEND: one short write per job, safe across processes
        f.write(entry + "\n")
    print(progress_line(state, read(state.progress_file)), file=sys.stderr, flush=True)


def report_many(state: SweepState, jobs: list[tuple[str, list[str], str]]) -> None:
    """Record several finished jobs ((status, overrides, error) each) in one write; print one progress line.

    For launchers that finish many jobs at once (a batched group, the done points of a resumed sweep): per job,
    `report` reads the whole file back, which for thousands of jobs costs more than the jobs.
    """
    if not jobs:
        return
    lines = "".join(_entry(s, o, e) + "\n" for s, o, e in jobs)
    with open(state.progress_file, "a") as f:
        f.write(lines)
    print(progress_line(state, read(state.progress_file)), file=sys.stderr, flush=True)


def _entry(status: str, overrides: list[str], error: str) -> str:
    redacted = [record.redact(o) for o in overrides]
    return json.dumps({"status": status, "overrides": redacted, "error": record.redact(error)})


def progress_line(state: SweepState, entries: list[dict]) -> str:
    counts = schema.count_outcomes(e["status"] for e in entries)
    done = counts["total"]
    skipped = counts.get(SKIPPED, 0)
    failed, diverged = counts[schema.FAILED_OUTCOME], counts[schema.DIVERGED]
    elapsed = time.time() - state.started_at
    total = state.total_jobs
    parts = [f"[sweep] {done}/{total if total is not None else '?'} jobs done"]
    if failed or diverged:
        parts.append(f"{failed} failed, {diverged} diverged")
    if skipped:
        parts.append(f"{skipped} already done")
    parts.append(f"{_clock(elapsed)} elapsed")
    ran = done - skipped
    if total is not None and ran and done < total:
        parts.append(f"~{_clock(elapsed / ran * (total - done))} left")
    return " · ".join(parts)
