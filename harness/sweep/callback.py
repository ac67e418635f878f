"""The Hydra callback that turns a multirun into one MLflow parent run with a child run per job.

Configured in conf/config.yaml under `hydra.callbacks.sweep`. `on_multirun_start` runs once in the launching process
before any job. In this order: it refuses what cannot run (the launcher's options, a sweep list without values),
takes the sweep's lock (harness.tracking.locks: a second launch of the same sweep refuses here, whatever its
launcher, before anything trains), then creates the database, the experiment and the parent run (or finds the
parent of the same sweep, to resume it), because processes that create a SQLite store or an experiment at the same
time race (one crashes in MLflow's migrations, or its runs land in the Default experiment). What the jobs need is
this launch's own state (harness.sweep.state): a file named by a fresh launch id in the sweep directory, whose path
Hydra hands to every job it composes (an override appended to the sweep's `hydra.overrides.hydra`), so two
launches sharing a sweep directory never mix their jobs; an in-process launcher reads `SweepCallback.state`.

Its one parameter, `rerun`, is the launcher's business, not a job's, so it is not in the job config:
`hydra.callbacks.sweep.rerun=all` starts a fresh parent run with every job; the default `failed` resumes.
"""

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from harness import failures, shutdown
from harness.errors import ConfigError, StoreError
from harness.sweep import grid, progress
from harness.sweep.state import Launch, SweepState
from harness.tracking import record, schema

RERUN = ("failed", "all")
log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def __init__(self, rerun: str = "failed") -> None:
        self.rerun = rerun
        self.state: SweepState | None = None
        self.launch: Launch | None = None
        self.late: DictConfig | None = (
            None  # the config of a sweep whose parent run the launcher opens (open_late)
        )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _one_line_errors():
            if self.rerun not in RERUN:
                raise ConfigError("hydra.callbacks.sweep.rerun", self.rerun, "'failed' or 'all'")
            launcher = _check_launcher(config)
            _refuse_an_empty_grid(config)
            _claim(config)  # before anything is decided or trained: one launch of a sweep at a time
            self.launch = _new_launch(config)
            if getattr(launcher, "opens_sweep_late", False) and _starts_afresh(config, self.rerun == "all"):
                # Nothing to resume: the launcher starts training first and opens the parent run meanwhile (the
                # MLflow import and store set-up take seconds on one core while the other would wait).
                self.late = config
                self.state = start_sweep(config, self.launch, open_parent=False)
                return
            self.state = start_sweep(config, self.launch, rerun_all=self.rerun == "all")
        shutdown.sweep_opened(self.state)  # harness.shutdown ends the parent KILLED on SIGINT/SIGTERM

    def open_late(self) -> SweepState | None:
        """The parent run of a sweep on_multirun_start left to the launcher (no-op otherwise): the same run, the same
        one-line errors and exit codes, called before any job's run is created."""
        if self.late is not None:
            config, self.late = self.late, None
            with _one_line_errors():
                self.state = _with_parent(config, self.state, rerun_all=self.rerun == "all")
                _save(self.state, self.launch)
                if self.state.completed:  # a launch before this one's lock completed points of this grid
                    log.warning(
                        "%d grid points were completed by another launch meanwhile", len(self.state.completed)
                    )
            shutdown.sweep_opened(self.state)
        return self.state

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Hydra's basic launcher and sweeper keep every job's JobReturn until the sweep ends, each with deep copies
        # of the job's config and of the whole hydra config; nothing reads them after the job (sweepers read
        # return_value), so a long sweep need not hold them all.
        job_return.cfg = job_return.hydra_cfg = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        shutdown.sweep_closed()
        if self.state is not None:
            # The re-run commands repeat each job's overrides: a tracking URI's credentials are redacted.
            print(record.redact(end_sweep(self.state)), file=sys.stderr, flush=True)
            self.state = None


@contextlib.contextmanager
def _one_line_errors():
    """A sweep that cannot set up its runs ends here in one line: exit 2 for a config error, else 1."""
    try:
        yield
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except Exception as exc:  # noqa: BLE001 - Hydra would only warn; a sweep without its parent run must not start
        said = failures.describe(exc)
        if said is None:
            said = f"could not set up the sweep's MLflow runs: {type(exc).__name__}: {exc}"
        print(f"error: {record.redact(said)}", file=sys.stderr)
        raise SystemExit(failures.exit_code(exc)) from exc


def _check_launcher(config: DictConfig) -> type | None:
    """The launcher's own range checks (a `check_options` of its class), before the parent run exists: Hydra builds
    the launcher only after this callback ran. Returns the launcher's class (None if it cannot be imported)."""
    from hydra.utils import get_class

    node = config.hydra.launcher
    try:
        launcher = get_class(str(node._target_))
    except Exception:  # noqa: BLE001 - a launcher that cannot be imported fails in Hydra's own words later
        return None
    check = getattr(launcher, "check_options", None)
    if check is not None:
        check(**{k: v for k, v in node.items() if k != "_target_"})
    return launcher


def _starts_afresh(config: DictConfig, rerun_all: bool) -> bool:
    """True when the sweep will certainly get a new parent run and resume nothing, known without MLflow: tracking
    to a SQLite file in a writable directory, and rerun=all, or no file yet, or no run of the file tagged with this
    sweep's key. Anything else (a server, an unreadable file) is False: the parent run is then opened first."""
    if not config.tracking.enabled:
        return False
    from harness.tracking import store

    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    path = store.sqlite_path(uri)
    if path is None or not os.access(path.parent if path.parent.exists() else Path.cwd(), os.W_OK):
        return False
    if rerun_all or not path.exists():
        return True
    from harness.tracking import stores

    try:  # read-only, by SQL alone: no MLflow import for the answer
        found_store = stores.open_store(str(uri), read_only=True, adapter="sqlite")
    except StoreError:
        return False
    if found_store is None:
        return False
    experiment = grid.experiment_name(config)
    found = found_store.experiment(experiment)
    return (
        found is None
        or found_store.find_parent(found.experiment_id, grid.sweep_key(config, experiment)) is None
    )


def start_sweep(
    config: DictConfig, launch: Launch, rerun_all: bool = False, open_parent: bool = True
) -> SweepState:
    """Create (or continue) the sweep's parent run and leave what every job needs in this launch's files (without
    the parent when `open_parent` is False: the launcher calls SweepCallback.open_late)."""
    _write(launch.progress_file, "")
    state = SweepState(
        total_jobs=grid.grid_size(config), started_at=time.time(), progress_file=str(launch.progress_file)
    )
    if open_parent:
        state = _with_parent(config, state, rerun_all)
    _save(state, launch)
    return state


def _refuse_an_empty_grid(config: DictConfig) -> None:
    """A swept key without values (`seed=range(0,0)`) makes a grid of no job: refused before any run exists."""
    jobs = grid.expand_grid(config)
    if jobs is None or jobs:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(grid.sweep_arguments(config)):
        if override.is_discrete_sweep() and not list(override.sweep_string_iterator()):
            typed = override.input_line.partition("=")[2] if override.input_line else ""
            raise ConfigError(
                override.get_key_element(), typed, "at least one value: this sweep would run no job"
            )
    raise ConfigError("hydra.sweeper.params", "{}", "at least one grid point: this sweep would run no job")


def _claim(config: DictConfig) -> None:
    """Take the sweep's lock (harness.tracking.locks) from its URI and key alone: no store is opened, no MLflow."""
    if not config.tracking.enabled:
        return
    from harness.tracking import locks, sqlite_store, store

    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    store.check_uri(uri)  # a URI that names no store creates nothing, not even a lock
    db = store.sqlite_path(uri)
    if db is not None and db.parent.is_dir():
        sqlite_store.check_writable(db)
    key = grid.sweep_key(config, grid.experiment_name(config))
    try:
        locks.claim_sweep(uri, key, Path.cwd())
    except OSError as exc:
        where = locks.sweep_lock_path(uri, key, Path.cwd()).parent
        raise StoreError(
            f"cannot create the sweep's lock in {where} ({failures.describe(exc) or exc}): make that directory "
            "writable, or choose another tracking.uri",
            record.redact(uri),
        ) from exc


def _new_launch(config: DictConfig) -> Launch:
    """This launch's files, in Hydra's sweep directory, and their path handed to every job Hydra composes."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(sweep_dir, exc) from exc
    launch = Launch.new(sweep_dir)
    # Basic, joblib and submitit launchers compose each job from the master config's hydra.overrides.hydra.
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.overrides.hydra.append(launch.job_override())
    return launch


def _save(state: SweepState, launch: Launch) -> None:
    try:
        state.save(launch.state_file)
    except OSError as exc:
        raise _unwritable(launch.state_file.parent, exc) from exc


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from exc


def _unwritable(sweep_dir: Path, exc: OSError) -> StoreError:
    return StoreError(
        f"cannot write the sweep's state into {sweep_dir} ({failures.describe(exc) or exc}): choose a writable "
        "hydra.sweep.dir, or launch from a writable directory"
    )


def _with_parent(config: DictConfig, state: SweepState, rerun_all: bool) -> SweepState:
    if not config.tracking.enabled:
        return state
    from harness.sweep import parent

    return parent.open_parent(config, state, rerun_all)


def end_sweep(state: SweepState) -> str:
    """End the parent run and describe the outcome, with the command to re-run each failure."""
    entries = progress.read(state.progress_file)
    lines = [progress.progress_line(state, entries).replace("[sweep]", "[sweep] finished:")]
    if state.parent is not None:
        from harness.sweep import parent

        try:
            lines.append(parent.close_parent(state.parent))
        except Exception as exc:  # noqa: BLE001 - the tracking server may be gone; the summary still matters
            lines.append(
                f"[sweep] could not end the parent run {state.parent.run_id} ({type(exc).__name__}); run the same "
                "sweep command again once the tracking server is back: it completes the grid"
            )
    failed = [e for e in entries if e["status"] == schema.FAILED_OUTCOME]
    for entry in failed:
        overrides = " ".join(o for o in entry["overrides"] if not o.startswith("hydra"))
        lines.append(f"  failed: {entry['error']}\n    re-run it alone: python -m harness.train {overrides}")
    if failed:
        lines.append("  or run the same sweep command again: it skips the grid points already done")
    return "\n".join(lines)


__all__ = ["SweepCallback"]
