"""Sweep-level progress shared by all workers: each job appends one JSON line to a file in the sweep directory."""

import json
import sys
import time
from collections import Counter
from pathlib import Path

from harness.sweep.state import SweepState


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
    """Record one finished job and print the sweep's progress line."""
    entry = json.dumps({"status": status, "overrides": overrides, "error": error})
    with open(state.progress_file, "a") as f:  # O_APPEND: one short write per job, safe across processes
        f.write(entry + "\n")
    print(progress_line(state, read(state.progress_file)), file=sys.stderr, flush=True)


def progress_line(state: SweepState, entries: list[dict]) -> str:
    counts = Counter(e["status"] for e in entries)
    done, ran = len(entries), len(entries) - counts["skipped"]
    elapsed = time.time() - state.started_at
    total = state.total_jobs
    parts = [f"[sweep] {done}/{total if total is not None else '?'} jobs done"]
    if counts["failed"] or counts["diverged"]:
        parts.append(f"{counts['failed']} failed, {counts['diverged']} diverged")
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} already done")
    parts.append(f"{_clock(elapsed)} elapsed")
    if total is not None and ran and done < total:
        parts.append(f"~{_clock(elapsed / ran * (total - done))} left")
    return " · ".join(parts)
