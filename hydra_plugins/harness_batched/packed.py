"""`hydra/launcher=batched_slurm`: the batched launcher's pieces as SLURM jobs, one job per piece (one submitit
batch: an array), each training its trials with the batched engine exactly as the local launcher does.

What runs where: the launching process groups and cuts the jobs as `hydra/launcher=batched` does (no piece is halved
to feed local workers), creates each piece's runs when it submits it, and records what comes back through the
tracking port (harness.sweep.group_run), as it does for its forked workers: a cluster job appends its trials' columns
to a stream file beside submitit's own (read here as they land: the runs' curves grow while the piece trains) and
returns their results; it writes nothing to the store. So the store needs no reach from the nodes, an SQLite file is
safe even with many nodes (one writer: this process), and a piece's records are the local ones bitwise (the same
engine, the same writes). Jobs that cannot batch train in the launching process meanwhile.

A piece stopped on its node keeps what it trained: SIGTERM (`scancel`, a node shutting down), submitit's signal
before a time limit or a preemption (SIGUSR2, sent `signal_delay_s` before the kill) and SIGINT (submitit's local
cancel) stop the engine, which records the steps done so far, and the job returns which signal it was; a job killed
outright (SIGKILL, a node lost) leaves its stream up to the last chunk. Either way its runs end KILLED with those
steps, and the same sweep command trains those points again (submitit's own requeue is not used: a requeued piece
would train its trials a second time into the same runs).

Resources sized from each piece (`piece_resources`; pieces that come out the same share one array, one set of
#SBATCH lines): its trials' torch threads as CPUs, one GPU when its trials train on cuda (gpus_per_piece), memory
from the engine's own estimate (`engine.trial_bytes` of each trial plus the data) plus 1 GiB for the process, and a
time limit from its work (`piece_minutes`) unless hydra.launcher.timeout_min says one for every piece. `cluster:
local` runs the pieces as local processes through submitit instead (no SLURM: what the tests without a cluster use).

Ctrl-C (or SIGTERM) in the launching process cancels the pieces' jobs (scancel) and ends their runs KILLED.
"""

import dataclasses
import math
import os
import pickle
import signal
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra_plugins.harness_batched.launcher import BatchedLauncher

PROCESS_GB = 1.0  # a piece's process beyond its tensors: Python, torch, MLflow-free imports

# A piece's time limit, when hydra.launcher.timeout_min is null: its floating-point work at rates any node sustains on
# this harness's small models (far below peak: tiny matmuls are dispatch-bound), the group's per-step dispatch, then
# three times that plus the process start, never under LEAST_MIN. Too long a limit only delays the start (backfill);
# too short kills the piece, so every figure errs long.
CPU_FLOPS_PER_THREAD = 1e9
GPU_FLOPS = 1e11
STEP_DISPATCH_S = 2e-3  # one group step's Python and kernel launches, whatever K
TRIAL_STEP_S = 1e-4  # each trial's share of a step's dispatch
TIME_MARGIN = 3
START_MIN = 5  # the job's start on its node: Python, torch, the task's data
LEAST_MIN = 10


class BatchedSlurmLauncher(BatchedLauncher):
    """The batched launcher, its pieces trained as cluster jobs."""

    def __init__(
        self,
        cluster: str = "slurm",
        partition: str | None = None,
        gpus_per_piece: int | None = None,
        mem_gb: float | None = None,
        timeout_min: int | None = None,
        array_parallelism: int = 8,
        submitit_folder: str = ".submitit/%j",
        additional_parameters: dict | None = None,
        wait: bool = True,
        **batched,
    ) -> None:
        super().__init__(**batched)

        self.check_cluster(cluster, partition, gpus_per_piece, mem_gb, timeout_min, array_parallelism, wait)
        options = ClusterOptions(
            cluster,
            partition,
            gpus_per_piece,
            mem_gb,
            None if timeout_min is None else int(timeout_min),
            int(array_parallelism),
            str(submitit_folder),
            dict(additional_parameters or {}),
            wait,
        )
        self.options = dataclasses.replace(self.options, cluster=options)

    @staticmethod
    def check_options(**options) -> None:
        """The batched launcher's range checks, then the cluster's: a SLURM job with the pieces' options that
        `sbatch --test-only` accepts (a bad partition: one line, nothing created)."""
        keys = (
            "cluster",
            "partition",
            "gpus_per_piece",
            "mem_gb",
            "timeout_min",
            "array_parallelism",
            "wait",
        )
        cluster = {k: options.pop(k) for k in keys if k in options}
        for key in ("submitit_folder", "additional_parameters"):
            options.pop(key, None)
        BatchedLauncher.check_options(**options)
        BatchedSlurmLauncher.check_cluster(**cluster)
        if cluster.get("cluster", "slurm") == "slurm":
            from hydra_plugins.harness_batched.slurm import SlurmLauncher

            SlurmLauncher.check_options(
                partition=cluster.get("partition"),
                gpus_per_node=cluster.get("gpus_per_piece") or 0,
                cpus_per_task=1,
                mem_gb=cluster.get("mem_gb") or PROCESS_GB,
                timeout_min=cluster.get("timeout_min") or LEAST_MIN,
                nodes=1,
                tasks_per_node=1,
                submitit_folder="/tmp/harness-check/%j",
            )

    @staticmethod
    def check_cluster(
        cluster="slurm",
        partition=None,
        gpus_per_piece=None,
        mem_gb=None,
        timeout_min=None,
        array_parallelism=8,
        wait=True,
    ) -> None:
        from harness.errors import ConfigError

        if not isinstance(wait, bool):
            raise ConfigError("hydra.launcher.wait", wait, "true, or false (submit the pieces and return)")

        if cluster not in ("slurm", "local"):
            raise ConfigError(
                "hydra.launcher.cluster", cluster, "slurm, or local (submitit's local processes)"
            )
        if timeout_min is not None and (
            isinstance(timeout_min, bool) or not isinstance(timeout_min, int) or timeout_min < 1
        ):
            raise ConfigError(
                "hydra.launcher.timeout_min", timeout_min, "an integer >= 1, or null (sized from each piece)"
            )
        if (
            isinstance(array_parallelism, bool)
            or not isinstance(array_parallelism, int)
            or array_parallelism < 1
        ):
            raise ConfigError("hydra.launcher.array_parallelism", array_parallelism, "an integer >= 1")
        if gpus_per_piece is not None and (not isinstance(gpus_per_piece, int) or gpus_per_piece < 0):
            raise ConfigError("hydra.launcher.gpus_per_piece", gpus_per_piece, "an integer >= 0, or null")
        if mem_gb is not None and not (isinstance(mem_gb, (int, float)) and mem_gb > 0):
            raise ConfigError("hydra.launcher.mem_gb", mem_gb, "a number of GB > 0, or null")


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how the pieces run (hydra.launcher.* of batched_slurm); `pool` makes the pool inprocess drives."""

    cluster: str = "slurm"  # slurm | local
    partition: str | None = None
    gpus_per_piece: int | None = None  # None: 1 when the trials train on cuda, else 0
    mem_gb: float | None = None  # None: sized from each piece
    timeout_min: int | None = None  # None: sized from each piece
    array_parallelism: int = 8
    folder: str = ".submitit/%j"
    additional_parameters: dict = field(default_factory=dict)
    wait: bool = (
        True  # false: the launch submits and returns (harness.sweep.detached collects the pieces later)
    )

    def pool(self, pieces: Sequence[list], threads: int, halving) -> "ClusterPool":
        return ClusterPool.submit(pieces, self, threads, halving)

    def describe(self, pieces: int) -> str:
        if self.cluster == "local":
            return f"as {pieces} local submitit process{'' if pieces == 1 else 'es'}"
        where = f", partition {self.partition}" if self.partition else ""
        return f"as {pieces} SLURM job{'' if pieces == 1 else 's'} (each sized to its piece{where})"


@dataclass(frozen=True)
class Trained:
    """What a piece's job returns (its columns went to its stream): the trials' RunResults, or the signal that
    stopped it."""

    results: list | None
    stopped: str | None = None  # SIGTERM, SIGUSR2, SIGINT


def train_piece(specs: list, threads: int, halving, stream: str) -> Trained:
    """On the node: the piece trained by the batched engine, each trial's log_columns calls appended to `stream`."""
    import submitit
    import torch

    from harness import signals
    from harness.batched import engine

    # Each raises in the engine, which records the steps done so far, then here (submitit's own handlers would
    # requeue the job or ignore the signal). Its preemption signal is USR2 unless SUBMITIT_PREEMPT_SIGNAL says.
    signals.install((signal.SIGINT, signal.SIGTERM, submitit.JobEnvironment._usr_sig()))
    torch.set_num_threads(threads)
    out = Stream(Path(stream))
    recorders = [_Recorder(out, trial) for trial in range(len(specs))]
    try:
        results = engine.train_group(specs, recorders, max_trials=len(specs), halving=halving)
    except signals.Interrupted as exc:
        return Trained(None, signal.Signals(exc.signum).name)
    return Trained(results)


class _Recorder:
    """A trial's tracker on the node: what the engine logs goes to the piece's stream."""

    def __init__(self, stream: "Stream", trial: int) -> None:
        self.stream, self.trial = stream, trial

    def log_columns(self, steps, columns, timestamps=None) -> None:
        from harness import signals

        with signals.held():  # a signal now is raised once the record is whole in the file
            self.stream.append((self.trial, list(steps), dict(columns)))


_LENGTH = struct.Struct("<Q")


class Stream:
    """A piece's log_columns calls in a file on the filesystem the cluster shares with this machine (submitit's
    folder): appended on the node, one length-prefixed pickle per call, each opened and closed (what NFS needs for
    another host to see it); read here from where the last read stopped, whole records only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def append(self, record: tuple) -> None:
        data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        with open(self.path, "ab") as file:
            file.write(_LENGTH.pack(len(data)) + data)

    def read_new(self) -> list[tuple]:
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:  # the piece has not logged yet
            return []
        records, at = [], 0
        while at + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            if at + _LENGTH.size + size > len(data):
                break  # still being written: read on the next look
            records.append(pickle.loads(data[at + _LENGTH.size : at + _LENGTH.size + size]))
            at += _LENGTH.size + size
        self._offset += at
        return records


class ClusterPool:
    """The pieces as submitit jobs, with harness.sweep.workers.Pool's events: Assigned for each piece when submitted,
    then per piece its trials' Columns and Done, or Failed."""

    POLL_S = (
        0.5  # between looks at the jobs' states (on SLURM submitit asks the controller at most every few s)
    )

    def __init__(
        self, jobs: dict, streams: dict[int, "Stream"], assigned: bool = True, limits: dict | None = None
    ) -> None:
        from harness.sweep.workers import Assigned

        self._jobs = dict(jobs)  # piece -> its submitit job, until its events are given
        self._streams = dict(streams)
        self._queued = [Assigned(piece) for piece in self._jobs] if assigned else []
        self._trained: dict[int, int] = {}  # piece -> steps its stream has shown (the most of any trial)
        # piece -> its job's time limit in minutes (said when it is stopped)
        self._limits = dict(limits or {})

    @classmethod
    def submit(cls, pieces: Sequence[list], options: ClusterOptions, threads: int, halving) -> "ClusterPool":
        import submitit

        executor = submitit.AutoExecutor(folder=options.folder, cluster=options.cluster)
        if options.cluster == "slurm":
            from hydra_plugins.harness_batched import slurm_queue

            slurm_queue.watch_the_queue()
        streams_dir = _streams_folder(options.folder)
        streams_dir.mkdir(parents=True, exist_ok=True)
        sweep = uuid.uuid4().hex[:12]
        streams = {i: Stream(streams_dir / f"{sweep}-{i}.columns") for i in range(len(pieces))}
        sized = [_parameters(specs, options, threads) for specs in pieces]
        jobs = {}
        try:
            for indices in arrays(sized):
                executor.update_parameters(**sized[indices[0]])
                with executor.batch():
                    submitted = [
                        executor.submit(train_piece, list(pieces[i]), threads, halving, str(streams[i].path))
                        for i in indices
                    ]
                jobs.update(zip(indices, submitted))
        except BaseException:  # a later submission refused, or Ctrl-C: no piece left out there unrecorded
            _cancel(jobs.values())
            raise
        limits = {i: parameters["timeout_min"] for i, parameters in enumerate(sized)}
        return cls(dict(sorted(jobs.items())), streams, limits=limits)

    # A detached sweep's pool is pickled with it (harness.sweep.detached) and read back by a later process: the
    # jobs by their ids, the streams with what was read of them.
    def __getstate__(self) -> dict:
        jobs = {piece: (_kind(job), str(job.paths.folder), job.job_id) for piece, job in self._jobs.items()}
        return {"jobs": jobs, "streams": self._streams, "trained": self._trained, "limits": self._limits}

    def __setstate__(self, state: dict) -> None:
        self._jobs = {piece: _job(*where) for piece, where in state["jobs"].items()}
        self._streams, self._trained, self._queued = state["streams"], state["trained"], []
        self._limits = state.get("limits", {})
        self._reattached = (
            True  # submitit's local jobs know their state only in the process that started them
        )

    _reattached = False

    def _done(self, job) -> bool:
        return _local_done(job) if self._reattached and _kind(job) == "local" else job.done()

    def pieces_left(self) -> dict[str, list[int]]:
        """The pieces not yet given back, by their job's state (RUNNING, PENDING, ...)."""
        left: dict[str, list[int]] = {}
        for piece, job in self._jobs.items():
            state = "RUNNING" if _kind(job) == "local" else str(job.state)
            left.setdefault(state, []).append(piece)
        return left

    def job_ids(self) -> list[str]:
        return [job.job_id for job in self._jobs.values()]

    def alive(self) -> int:
        return len(self._jobs) or 1  # the pieces train on the cluster: none is ever taken back here

    def take_pending(self) -> list[int]:
        return []

    def events(self, timeout: float | None = None) -> list:
        from harness.sweep.workers import Columns, Done, Failed

        while True:
            found, self._queued = self._queued, []
            for piece, job in list(self._jobs.items()):
                done = self._done(job)  # before reading: once done, its stream is complete
                found += [Columns(piece, *record) for record in self._read(piece)]
                if not done:
                    continue
                del self._jobs[piece]
                try:
                    trained = job.result()
                except Exception as exc:  # noqa: BLE001 - the piece failed on its node: its trials fail, the sweep goes on
                    killed = _ended_from_outside(exc)
                    found.append(Failed(piece, self._kept(piece, _one_line(exc), killed), str(exc), killed))
                else:
                    if trained.stopped is None:
                        found.append(Done(piece, trained.results))
                    else:
                        line = self._kept(
                            piece,
                            f"{_job_name(job)} was stopped by {trained.stopped} on its node "
                            f"(scancel, its time limit{self._limit(piece)} or a preemption)",
                            True,
                        )
                        found.append(Failed(piece, line, line, killed=True))
                self._streams.pop(piece).path.unlink(missing_ok=True)
            if found or timeout is not None or not self._jobs:
                return found
            time.sleep(self.POLL_S)  # a polling interval: the condition is the cluster's

    def _read(self, piece: int) -> list[tuple]:
        records = self._streams[piece].read_new()
        for _, steps, _ in records:
            if steps:
                self._trained[piece] = max(self._trained.get(piece, 0), steps[-1] + 1)
        return records

    def _limit(self, piece: int) -> str:
        minutes = self._limits.get(piece)
        return f" of {minutes} min (hydra.launcher.timeout_min)" if minutes else ""

    def _kept(self, piece: int, line: str, killed: bool) -> str:
        """The failure's line, with what the runs keep of a piece ended from outside."""
        if not killed:
            return line
        steps = self._trained.get(piece, 0)
        return f"{line}; its runs keep the {steps} steps trained" if steps else f"{line}; it trained no step"

    def __enter__(self) -> "ClusterPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leaving on an exception (Ctrl-C, SIGTERM): the pieces still queued or running are cancelled."""
        if exc_type is not None:
            _cancel(self._jobs.values())


def _cancel(jobs) -> None:
    for job in jobs:
        try:
            job.cancel(check=False)
        except Exception:  # noqa: BLE001 - the controller may be gone: the sweep's line says what to do
            pass


def piece_resources(piece: Sequence, threads: int, gpus_per_piece: int | None = None) -> dict:
    """What one piece asks of its node: CPUs (its trials' torch threads), GPUs, memory in whole GB and minutes."""
    from harness.batched import engine

    spec = piece[0]  # a piece's trials share the task's data
    data = sum(t.element_size() * t.nelement() for part in (spec.splits.train, spec.splits.val) for t in part)
    need = (sum(engine.trial_bytes(s) for s in piece) + data) / 2**30 + PROCESS_GB
    gpus = gpus_per_piece
    if gpus is None:
        gpus = 1 if any(str(s.device).startswith("cuda") for s in piece) else 0
    return {
        "cpus": max(1, threads),
        "gpus": gpus,
        "mem_gb": math.ceil(need),
        "minutes": piece_minutes(piece, threads, gpus),
    }


def piece_minutes(piece: Sequence, threads: int, gpus: int) -> int:
    """A time limit for the piece from its work (see CPU_FLOPS_PER_THREAD): each trial's training steps (6 flops per
    parameter and sample: forward, backward, update) and evaluations (2 per parameter and validation sample), at a
    node's sustained rate, plus the group's dispatch per step; three times that, plus the start."""
    from harness.batched.spec import batched_form

    rate = GPU_FLOPS if gpus else CPU_FLOPS_PER_THREAD * max(1, threads)
    flops, trial_steps = 0.0, 0
    for spec in piece:
        form = batched_form(spec.task)
        params = form.param_count() if form is not None else 0
        evaluations = spec.total_steps // max(1, spec.eval_every) + 1
        flops += 6.0 * params * spec.batch_size * spec.total_steps
        flops += 2.0 * params * len(spec.splits.val[0]) * evaluations
        trial_steps += spec.total_steps
    steps = max(spec.total_steps for spec in piece)
    seconds = flops / rate + steps * STEP_DISPATCH_S + trial_steps * TRIAL_STEP_S
    return max(LEAST_MIN, math.ceil(TIME_MARGIN * seconds / 60) + START_MIN)


def arrays(sized: Sequence[dict]) -> list[list[int]]:
    """The pieces (by index) that go out as one array: those whose job parameters are the same (submitit's batch
    takes one set), in the order they were cut."""
    alike: dict[str, list[int]] = {}
    for i, parameters in enumerate(sized):
        alike.setdefault(repr(sorted(parameters.items())), []).append(i)
    return list(alike.values())


def _parameters(piece: Sequence, options: ClusterOptions, threads: int) -> dict:
    """submitit's parameters for the piece's job."""
    sized = piece_resources(piece, threads, options.gpus_per_piece)
    parameters = {
        "timeout_min": options.timeout_min or sized["minutes"],
        "cpus_per_task": sized["cpus"],
        "mem_gb": options.mem_gb or sized["mem_gb"],
        "gpus_per_node": sized["gpus"],
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if options.cluster == "slurm":
        parameters["slurm_array_parallelism"] = options.array_parallelism
        if options.partition:
            parameters["slurm_partition"] = options.partition
        if options.additional_parameters:
            parameters["slurm_additional_parameters"] = options.additional_parameters
    return parameters


def _kind(job) -> str:
    return "local" if type(job).__name__.startswith("Local") else "slurm"


def _job(kind: str, folder: str, job_id: str):
    """A submitted job, from its id, in another process than the one that submitted it."""
    import submitit

    if kind == "slurm":
        from hydra_plugins.harness_batched import slurm_queue

        slurm_queue.watch_the_queue()
        return submitit.SlurmJob(folder=folder, job_id=job_id)
    return submitit.LocalJob(folder=folder, job_id=job_id)


def _local_done(job) -> bool:
    """A local job another process started: done once its result is written or its controller process is gone."""
    if job.paths.result_pickle.exists():
        return True
    try:
        os.kill(int(job.job_id), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def _streams_folder(folder: str) -> Path:
    """Where the pieces' streams go: beside submitit's job folders (`.submitit/%j` -> `.submitit/streams`), a path
    the nodes reach as this machine does."""
    path = Path(folder)
    while "%" in path.name:
        path = path.parent
    return path.resolve() / "streams"


def _job_name(job) -> str:
    return f"SLURM job {job.job_id}" if type(job).__name__.startswith("Slurm") else f"local job {job.job_id}"


def _ended_from_outside(exc: BaseException) -> bool:
    """The job ended without its result and without an error of its own: cancelled, timed out, preempted."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    return isinstance(exc, UncompletedJobError) and not isinstance(exc, FailedJobError)


def _one_line(exc: BaseException) -> str:
    from hydra_plugins.harness_batched.slurm import failure_line

    said = failure_line(exc)
    if said is not None:
        return said
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


__all__ = [
    "BatchedSlurmLauncher",
    "ClusterOptions",
    "ClusterPool",
    "Stream",
    "Trained",
    "arrays",
    "piece_minutes",
    "piece_resources",
    "train_piece",
]
