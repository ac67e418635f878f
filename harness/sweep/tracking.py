"""MLflow side of a sweep: open the parent before the jobs, close it after them."""

import json
import sys
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from harness.sweep import grid, parent
from harness.sweep.state import SweepState, replace
from harness.tracking import locks, store

DONE = ("completed", "diverged")  # outcomes a resumed sweep does not run again


def open_parent(config: DictConfig, base: SweepState) -> SweepState:
    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    client = store.client(uri)
    experiment = grid.experiment_name(config)
    experiment_id = store.ensure_experiment(client, experiment)
    key = grid.sweep_key(config, experiment)
    # A second launch of a running sweep refuses here (harness.tracking.locks).
    locks.claim_sweep(uri, key, Path.cwd())
    rerun_all = config.sweep.rerun == "all"
    found = None if rerun_all else parent.find_parent(client, experiment_id, key)
    completed: dict[str, float | None] = {}
    if found is not None:
        parent_run_id = found.info.run_id
        runs = parent.children(client, experiment_id, parent_run_id)
        stale = parent.mark_stale_runs_killed(client, runs)
        parent.reopen(client, parent_run_id)
        latest = parent.latest_per_grid_point(runs)
        completed = {h: o.final_val_loss for h, o in latest.items() if o.status in DONE}
        print(
            f"[sweep] continuing parent run {parent_run_id} in experiment {experiment!r}: "
            f"{len(completed)} grid points already done, {stale} stale run(s) marked KILLED",
            file=sys.stderr,
        )
    else:
        tags = {
            "harness.sweep_key": key,
            "harness.sweep_overrides": " ".join(grid.sweep_arguments(config)),
            "harness.grid_size": str(base.total_jobs) if base.total_jobs is not None else "unknown",
            "harness.launcher": str(config.hydra.launcher.get("_target_", "")),
        }
        parent_run_id = parent.create_parent(client, experiment_id, grid.sweep_name(config), tags)
        jobs = grid.expand_grid(config)
        if jobs is not None:
            client.log_text(parent_run_id, json.dumps(jobs, indent=1), "sweep_grid.json")
        print(f"[sweep] parent run {parent_run_id} in experiment {experiment!r} ({uri})", file=sys.stderr)
    return replace(
        base,
        uri=uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        completed=completed,
        rerun_all=rerun_all,
    )


def close_parent(state: SweepState) -> str:
    client = store.client(state.uri)
    outcomes = parent.finish(client, state.experiment_id, state.parent_run_id)
    counts = Counter(o.status for o in outcomes)
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("completed", "diverged", "failed", "killed") if counts[s]
    )
    return f"[sweep] parent run {state.parent_run_id}: {len(outcomes)} grid points: {summary or 'none'}"
