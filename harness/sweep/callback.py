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

What a sweep prints (harness.sweep.output: on stderr and in <sweep dir>/sweep.log): one line when it starts (grid
size, launcher, store, parent run; a batched launcher says it with its groups, `announce`), a throttled progress line
and one line per failure (harness.sweep.progress), and the summary at its end with the sweep's answer and where to
look at it.

Its parameters are the launcher's business, not a job's, so they are not in the job config:
`hydra.callbacks.sweep.rerun=all` starts a fresh parent run with every job (the default `failed` resumes);
`job_lines=true` keeps each job's own lines and the launchers' per-job launch lines on the terminal;
`progress_every_s` is how often at most the progress line is printed.
"""

import contextlib
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from harness import failures, shutdown, signals
from harness.context import ParentRun
from harness.errors import ConfigError, StoreError
from harness.sweep import grid, output, progress
from harness.sweep.state import Launch, SweepState
from harness.tracking import record, schema

RERUN = ("failed", "all")


class SweepCallback(Callback):
    def __init__(
        self, rerun: str = "failed", job_lines: bool = False, progress_every_s: float = 30.0
    ) -> None:
        self.rerun = rerun
        self.job_lines = job_lines
        self.progress_every_s = progress_every_s
        self.state: SweepState | None = None
        self.launch: Launch | None = None
        # The config of a sweep whose parent run the launcher opens (open_late).
        self.late: DictConfig | None = None
        self.continued = False  # the parent run is a former launch's, resumed
        self.opening: _Opening | None = None  # what the start line says, until it is said
        self.experiment: str | None = None  # the sweep's experiment (None: not tracked)
        self.detached: str | None = None  # the line of a sweep whose pieces were left on the cluster

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _one_line_errors(self):
            self._check_options()
            launcher = _check_launcher(config)
            _refuse_an_empty_grid(config)
            _claim(config)  # before anything is decided or trained: one launch of a sweep at a time
            self.launch = _new_launch(config)
            if not self.job_lines:
                output.quiet_launchers()
            self.opening = _Opening.of(config)
            self.experiment = grid.experiment_name(config) if config.tracking.enabled else None
            if getattr(launcher, "opens_sweep_late", False) and _starts_afresh(config, self.rerun == "all"):
                # Nothing to resume: the launcher starts training first and opens the parent run meanwhile (the
                # MLflow import and store set-up take seconds on one core while the other would wait).
                self.late = config
                self.state = start_sweep(config, self.launch, open_parent=False, **self._options())
                return
            self.state, self.continued = _start(config, self.launch, self.rerun == "all", self._options())
        shutdown.sweep_opened(self.state)  # harness.shutdown ends the parent KILLED on SIGINT/SIGTERM
        if not getattr(launcher, "announces_sweep", False):
            self.announce()

    def _check_options(self) -> None:
        if self.rerun not in RERUN:
            raise ConfigError("hydra.callbacks.sweep.rerun", self.rerun, "'failed' or 'all'")
        if not isinstance(self.job_lines, bool):
            raise ConfigError("hydra.callbacks.sweep.job_lines", self.job_lines, "true or false")
        every = self.progress_every_s
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every >= 0:
            raise ConfigError("hydra.callbacks.sweep.progress_every_s", every, "a number of seconds >= 0")

    def _options(self) -> dict[str, Any]:
        return {"job_lines": self.job_lines, "progress_every_s": float(self.progress_every_s)}

    def announce(self, details: str = "") -> None:
        """The sweep's start line, once: grid size, launcher (with `details`: a batched launcher's groups), store,
        parent run. Said here unless the launcher has `announces_sweep` (it then calls this when it knows more)."""
        if self.opening is None or self.state is None:
            return
        opening, self.opening = self.opening, None
        line = opening.line(self.state, self.continued, details)
        output.logger(__name__, progress.sweep_dir(self.state)).info(line)

    def open_late(self) -> SweepState | None:
        """The parent run of a sweep on_multirun_start left to the launcher (no-op otherwise): the same run, the same
        one-line errors and exit codes, called before any job's run is created."""
        if self.late is not None:
            config, self.late = self.late, None
            with _one_line_errors(self):
                self.state, self.continued = _with_parent(config, self.state, rerun_all=self.rerun == "all")
                _save(self.state, self.launch)
                if self.state.completed:  # a launch before this one's lock completed points of this grid
                    output.logger(__name__, progress.sweep_dir(self.state)).warning(
                        f"[sweep] {len(self.state.completed)} grid points were completed by another launch meanwhile"
                    )
            shutdown.sweep_opened(self.state)
        return self.state

    def detach(self, line: str) -> None:
        """The launcher left the pieces on the cluster (hydra.launcher.wait=false): the sweep's end says `line` and
        leaves the parent run RUNNING (harness.sweep.detached)."""
        self.detached = line
        shutdown.sweep_closed()  # from here an interrupt ends nothing: the pieces train on

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Hydra's basic launcher and sweeper keep every job's JobReturn until the sweep ends, each with deep copies
        # of the job's config and of the whole hydra config; nothing reads them after the job (sweepers read
        # return_value), so a long sweep need not hold them all.
        job_return.cfg = job_return.hydra_cfg = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        shutdown.sweep_closed()
        if self.state is not None:
            self.announce()  # a launcher that announces had no job to run: said now
            say = output.logger(__name__, progress.sweep_dir(self.state))
            if self.detached is not None:
                say.info(self.detached)
                self.state = None
                return
            for line in end_sweep(self.state, self.experiment, Path.cwd()):
                say.info(line)  # redacted by the handlers: the re-run commands repeat each job's overrides
            self.state = None


@contextlib.contextmanager
def _one_line_errors(callback: SweepCallback):
    """A sweep that cannot set up its runs ends here in one line: exit 2 for a config error, else 1. The line goes to
    the sweep's log file too once its directory exists."""
    from harness.sweep.detached import StillOut

    try:
        yield
    except ConfigError as exc:
        _say_error(callback, f"error: {exc}")
        raise SystemExit(2) from exc
    except StillOut as exc:  # a detached sweep's pieces still train: said, nothing launched
        sweep_dir = callback.launch.state_file.parent if callback.launch is not None else None
        output.logger(__name__, sweep_dir).info(f"{exc}: {shutdown.command()}")
        raise SystemExit(0) from None
    except Exception as exc:  # noqa: BLE001 - Hydra would only warn; a sweep without its parent run must not start
        said = failures.describe(exc)
        if said is None:
            said = f"could not set up the sweep's MLflow runs: {type(exc).__name__}: {exc}"
        _say_error(callback, f"error: {record.redact(said)}")
        raise SystemExit(failures.exit_code(exc)) from exc


def _say_error(callback: SweepCallback, line: str) -> None:
    sweep_dir = callback.launch.state_file.parent if callback.launch is not None else None
    output.logger(__name__, sweep_dir).error(line)


def _check_launcher(config: DictConfig) -> type | None:
    """The launcher's and the sweeper's own range checks (a `check_options` of their class), before the parent run
    exists: Hydra builds them only after this callback ran. Returns the launcher's class (None if it cannot be
    imported)."""
    _checked(config.hydra.sweeper)
    _check_detached(config)
    return _checked(config.hydra.launcher)


def _check_detached(config: DictConfig) -> None:
    """hydra.launcher.wait=false (batched_slurm: submit the pieces and return) with what cannot do without waiting."""
    if config.hydra.launcher.get("wait", True) is not False:
        return
    if not config.tracking.enabled:
        raise ConfigError(
            "hydra.launcher.wait",
            False,
            "only true with tracking.enabled=false (no store to collect the pieces into)",
        )
    if config.hydra.sweeper.get("max_batch_size") is not None:
        raise ConfigError(
            "hydra.launcher.wait",
            False,
            "only true with hydra.sweeper.max_batch_size (one launch per batch)",
        )
    if grid.raced(config):
        raise ConfigError(
            "hydra.launcher.wait",
            False,
            "only true with hydra/sweeper=race (each round needs the last one's results)",
        )


def _checked(node: DictConfig) -> type | None:
    from hydra.utils import get_class

    try:
        plugin = get_class(str(node._target_))
    except Exception:  # noqa: BLE001 - a plugin that cannot be imported fails in Hydra's own words later
        return None
    check = getattr(plugin, "check_options", None)
    if check is not None:
        check(**{k: v for k, v in node.items() if k != "_target_"})
    return plugin


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
    config: DictConfig,
    launch: Launch,
    rerun_all: bool = False,
    open_parent: bool = True,
    job_lines: bool = False,
    progress_every_s: float = 30.0,
) -> SweepState:
    """Create (or continue) the sweep's parent run and leave what every job needs in this launch's files (without
    the parent when `open_parent` is False: the launcher calls SweepCallback.open_late)."""
    return _start(
        config, launch, rerun_all, {"job_lines": job_lines, "progress_every_s": progress_every_s}, open_parent
    )[0]


def _start(
    config: DictConfig, launch: Launch, rerun_all: bool, options: dict[str, Any], open_parent: bool = True
) -> tuple[SweepState, bool]:
    """start_sweep, and whether the parent run continues a former launch's."""
    _write(launch.progress_file, "")
    state = SweepState(
        total_jobs=grid.grid_size(config),
        started_at=time.time(),
        progress_file=str(launch.progress_file),
        raced=grid.raced(config),
        **options,
    )
    continued = False
    if open_parent:
        state, continued = _with_parent(config, state, rerun_all)
    _save(state, launch)
    return state, continued


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


def _with_parent(config: DictConfig, state: SweepState, rerun_all: bool) -> tuple[SweepState, bool]:
    if not config.tracking.enabled:
        return state, False
    from harness.sweep import parent

    # A signal while the parent run is being created waits until harness.shutdown knows it: it then ends KILLED,
    # never left RUNNING by an interrupt that came between its creation and sweep_opened.
    with signals.held():
        opened, continued = parent.open_parent(config, state, rerun_all)
        shutdown.sweep_opened(opened)
    return opened, continued


@dataclass(frozen=True)
class _Opening:
    """What the start line says besides the parent run: how many jobs, which launcher, which store."""

    jobs: str
    launcher: str
    where: str

    @classmethod
    def of(cls, config: DictConfig) -> "_Opening":
        total = grid.grid_size(config)
        jobs = f"{total} jobs" if total is not None else "jobs as the sweeper chooses them"
        node = config.hydra.launcher
        name = str(node.get("_target_", "")).rsplit(".", 1)[-1].removesuffix("Launcher")
        launcher = f"{name.lower() or 'its'} launcher"
        if node.get("n_jobs") is not None:
            launcher += f" (n_jobs={node.n_jobs})"
        if not config.tracking.enabled:
            return cls(jobs, launcher, "not tracked (tracking.enabled=false)")
        from harness.tracking import store

        uri = store.resolve_uri(config.tracking.uri, Path.cwd())
        return cls(jobs, launcher, f"experiment {grid.experiment_name(config)!r} in {record.redact(uri)}")

    def line(self, state: SweepState, continued: bool, details: str = "") -> str:
        """`[sweep] 8 jobs · basic launcher · experiment 'quadratic' in sqlite:///... · parent run 9b52...`"""
        parts = [f"[sweep] {self.jobs}", self.launcher + (f": {details}" if details else ""), self.where]
        if state.parent is not None and continued:
            parts.append(
                f"continuing parent run {state.parent.run_id}: {len(state.completed)} grid points already done"
            )
        elif state.parent is not None:
            parts.append(f"parent run {state.parent.run_id}")
        return " · ".join(parts)


def end_sweep(state: SweepState, experiment: str | None = None, launch_dir: Path | None = None) -> list[str]:
    """End the parent run; the summary's lines: this launch's jobs, the grid's counts (and how to re-run its
    failures), the answer of each task, where to look at it."""
    jobs = progress.progress_line(state, progress.read(state.progress_file), final=True)
    lines = [jobs.replace("[sweep]", "[sweep] finished:")]
    if state.parent is None:
        return lines
    from harness.sweep import parent

    try:
        said = parent.close_parent(state.parent)
    except Exception as exc:  # noqa: BLE001 - the tracking server may be gone; the summary still matters
        return [
            *lines,
            f"[sweep] could not end the parent run {state.parent.run_id} ({type(exc).__name__}); run the same sweep "
            "command again once the tracking server is back: it completes the grid",
        ]
    lines.append(_counts_line(state.parent.run_id, said.headline.counts))
    lines += [f"[sweep] {sentence}" for sentence in said.sentences]
    if experiment is not None:
        lines.append(see_it(state.parent, experiment, launch_dir or Path.cwd()))
    return lines


def _counts_line(run_id: str, counts: dict[str, int]) -> str:
    summary = ", ".join(f"{counts[o]} {o}" for o in schema.OUTCOMES if counts[o])
    line = f"[sweep] parent run {run_id}: {counts['total']} grid points: {summary or 'none'}"
    lost = counts[schema.FAILED_OUTCOME] + counts[schema.KILLED_OUTCOME]
    if lost:
        line += (
            f" · the same sweep command runs the {lost} without a result again (each failure above says how to "
            "re-run it alone) and skips the grid points already done"
        )
    return line


def see_it(parent: ParentRun, experiment: str, launch_dir: Path) -> str:
    """Where to look at the sweep, in commands that exist where the user is: the MLflow UI (`make ui` only for the
    project's store with a Makefile that has a `ui` target in the launch directory, the run's page on a server) and
    the report (`harness-report` as it can be run from here), credentials redacted."""
    from harness.tracking import store

    uri = parent.uri
    ui = record.where_to_see(uri, parent.experiment_id, parent.run_id, launch_dir)
    report = _report_command(launch_dir)
    if report is None:
        return record.redact(f"[sweep] see it: {ui}")
    report += f" --experiment {shlex.quote(experiment)}"
    if uri != store.resolve_uri(None, launch_dir):  # the report would look elsewhere by default
        report += f" --tracking-uri {shlex.quote(uri)}"
    return record.redact(f"[sweep] see it: {ui} · the report: {report}")


def _report_command(launch_dir: Path) -> str | None:
    """`harness-report` where it is on PATH, else the one installed beside this Python (a virtualenv not activated),
    else the repository's script in the launch directory, else None."""
    if shutil.which("harness-report"):
        return "harness-report"
    beside = Path(sys.executable).parent / "harness-report"
    if beside.exists():
        return shlex.quote(str(beside))
    if (launch_dir / "scripts" / "report.py").exists():
        return "python scripts/report.py"
    return None


__all__ = ["SweepCallback"]
