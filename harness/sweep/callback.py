"""The Hydra callback that turns a multirun into one MLflow parent run with a child run per job.

Configured in conf/config.yaml under `hydra.callbacks`. `on_multirun_start` runs once in the launching process before
any job: it creates the database, the experiment and the parent run (or finds the parent of the same sweep, to resume
it), so that workers never race to create them (FACTS.md). Hydra pickles this object to joblib/submitit workers;
`on_job_start` runs in the job's own process and hands the state to the job.
"""

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from harness import shutdown
from harness.sweep import grid, progress
from harness.sweep import state as sweep_state
from harness.sweep.state import SweepState

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.state: SweepState | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.state = start_sweep(config)
        except Exception as exc:  # noqa: BLE001 - Hydra would only warn; a sweep without its parent run must not start
            print(
                f"error: could not set up the sweep's MLflow runs: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            raise SystemExit(1) from exc
        shutdown.sweep_opened(self.state)  # harness.shutdown ends the parent KILLED on SIGINT/SIGTERM

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_state.activate(self.state)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        sweep_state.activate(None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        shutdown.sweep_closed()
        if self.state is not None:
            print(end_sweep(self.state), file=sys.stderr, flush=True)
            self.state = None


def start_sweep(config: DictConfig) -> SweepState:
    """Create (or continue) the sweep's parent run; returns what every job needs to know."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    progress_file = sweep_dir / "harness_progress.jsonl"
    progress_file.write_text("")
    base = SweepState(
        total_jobs=grid.grid_size(config), started_at=time.time(), progress_file=str(progress_file)
    )
    if not config.tracking.enabled:
        return base
    from harness.sweep import tracking

    return tracking.open_parent(config, base)


def end_sweep(state: SweepState) -> str:
    """End the parent run and describe the outcome, with the command to re-run each failure."""
    entries = progress.read(state.progress_file)
    lines = [progress.progress_line(state, entries).replace("[sweep]", "[sweep] finished:")]
    if state.parent_run_id is not None:
        from harness.sweep import tracking

        try:
            lines.append(tracking.close_parent(state))
        except Exception as exc:  # noqa: BLE001 - the tracking server may be gone; the summary still matters
            lines.append(
                f"[sweep] could not end the parent run {state.parent_run_id} ({type(exc).__name__}); run the same "
                "sweep command again once the tracking server is back: it completes the grid"
            )
    failed = [e for e in entries if e["status"] == "failed"]
    for entry in failed:
        overrides = " ".join(o for o in entry["overrides"] if not o.startswith(("hydra", "sweep.")))
        lines.append(f"  failed: {entry['error']}\n    re-run it alone: python -m harness.train {overrides}")
    if failed:
        lines.append("  or run the same sweep command again: it skips the grid points already done")
    return "\n".join(lines)


__all__ = ["SweepCallback"]
