"""Worker processes that train a batched sweep's groups side by side, one per core.

On CPU a group trains on one torch thread (intra-op threads make small models slower), so a sweep of several groups
would use one core of many. Once every group is planned, the launching process forks N workers: the plans, datasets
and models are inherited, nothing is pickled on the way in. The launcher hands an idle worker a piece (an index
into `pieces`); the worker trains it with harness.batched.engine and streams back each trial's columns as the
engine writes them (every sync_every steps), then the RunResults. Only the launching process touches the MLflow
store: it creates a piece's runs when it hands the piece out and ends them when the results arrive, so the record is
the in-process path's record.

Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group: the launcher decides what stops), die by
SIGTERM (harness.signals forwards it to child processes), and die with the launcher (PR_SET_PDEATHSIG). Fork is
Linux's: elsewhere `available()` is False and groups train in the launching process.
"""

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

_PR_SET_PDEATHSIG = 1


def available() -> bool:
    return sys.platform.startswith("linux")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Columns:
    """A chunk of one trial's record: as Tracker.log_columns takes it."""

    piece: int
    trial: int
    steps: list[int]
    columns: dict[str, list[float]]


@dataclass(frozen=True)
class Done:
    piece: int
    results: list  # harness.loop.RunResult per trial, in order


@dataclass(frozen=True)
class Failed:
    """The piece raised in its worker (error: one line), or its worker died (details: None)."""

    piece: int
    error: str
    details: str | None


class _Relay:
    """The tracker a trial has in a worker: log_columns goes to the launcher; nothing else is called on it."""

    def __init__(self, conn: Connection, piece: int, trial: int):
        self.conn, self.piece, self.trial = conn, piece, trial

    def log_columns(self, steps, columns, timestamps=None) -> None:
        self.conn.send(Columns(self.piece, self.trial, list(steps), dict(columns)))


def _worker(conn: Connection, pieces: Sequence[list], threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # die with the launcher, whatever kills it
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    import torch

    from harness.batched import engine

    torch.set_num_threads(threads)
    while True:
        try:
            piece = conn.recv()
        except EOFError:
            return
        if piece is None:
            return
        specs = pieces[piece]
        trackers = [_Relay(conn, piece, trial) for trial in range(len(specs))]
        try:
            results = engine.train_group(specs, trackers, max_trials=len(specs))
        except Exception as exc:  # noqa: BLE001 - the piece fails, the worker goes on with the next one
            conn.send(Failed(piece, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        else:
            conn.send(Done(piece, results))


class Pool:
    """N forked workers over `pieces` (lists of TrialSpecs); `submit` a piece to an idle worker, `events` to hear.

    Use as a context manager: leaving it stops the workers (at once when leaving on an exception).
    """

    def __init__(self, pieces: Sequence[list], workers: int, threads: int = 1):
        context = multiprocessing.get_context("fork")
        self._idle: list[Connection] = []
        self._busy: dict[Connection, int] = {}  # connection -> the piece it trains
        self._processes: dict[Connection, multiprocessing.process.BaseProcess] = {}
        for _ in range(workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker, args=(child_end, pieces, threads), daemon=True)
            process.start()
            child_end.close()
            self._idle.append(parent_end)
            self._processes[parent_end] = process

    def idle(self) -> int:
        return len(self._idle)

    def busy(self) -> int:
        return len(self._busy)

    def submit(self, piece: int) -> None:
        conn = self._idle.pop()
        self._busy[conn] = piece
        conn.send(piece)

    def events(self, timeout: float | None = None) -> list:
        """What the busy workers sent, waiting up to `timeout` seconds (None: until something arrives)."""
        events = []
        for conn in wait(list(self._busy), timeout):
            try:
                while True:
                    event = conn.recv()
                    events.append(event)
                    if isinstance(event, (Done, Failed)):
                        del self._busy[conn]
                        self._idle.append(conn)
                        break
                    if not conn.poll():
                        break
            except (EOFError, OSError):  # the worker died (OOM killer, a crash in native code)
                piece = self._busy.pop(conn)
                process = self._processes.pop(conn)
                process.join(timeout=5)
                conn.close()
                events.append(Failed(piece, f"worker process died ({_exit_reason(process.exitcode)})", None))
        return events

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for conn, process in self._processes.items():
            if exc_type is None:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            else:
                process.terminate()
        for conn, process in self._processes.items():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
