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
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

_PR_SET_PDEATHSIG = 1


def available() -> bool:
    return sys.platform.startswith("linux")


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
    """The piece raised in its worker (error: one line), or its worker died (details: None); `killed`: it was ended
    from outside (a cluster job cancelled, timed out or preempted), not by its own error."""

    piece: int
    error: str
    details: str | None
    killed: bool = False


class _Relay:
    """The tracker a trial has in a worker: log_columns goes to the launcher; nothing else is called on it."""

    def __init__(self, conn: Connection, piece: int, trial: int):
        self.conn, self.piece, self.trial = conn, piece, trial

    def log_columns(self, steps, columns, timestamps=None) -> None:
        self.conn.send(Columns(self.piece, self.trial, list(steps), dict(columns)))


def _worker(conn: Connection, pieces: Sequence[list], threads: int, halving=None) -> None:
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
            results = engine.train_group(specs, trackers, max_trials=len(specs), halving=halving)
        except Exception as exc:  # noqa: BLE001 - the piece fails, the worker goes on with the next one
            conn.send(Failed(piece, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        else:
            conn.send(Done(piece, results))


@dataclass(frozen=True)
class Assigned:
    """A worker was handed the piece: it trains it now (queued before any of the piece's Columns)."""

    piece: int


class Pool:
    """N forked workers that train `pieces` (lists of TrialSpecs) in the given order; `events` says what happened.

    A reader thread receives the workers' messages as they arrive and hands a worker its next piece the moment it
    reports the last one done. Both used to wait for this process's main thread: a worker's `send` blocks once its
    pipe holds 64 KiB, and the next piece waited until the main thread had recorded the last one; while that thread
    imported MLflow or wrote a group's rows, the workers sat idle for seconds. Use as a context manager: leaving it
    stops the workers (at once when leaving on an exception).
    """

    def __init__(
        self, pieces: Sequence[list], workers: int, threads: int = 1, order: Sequence[int] = (), halving=None
    ):
        context = multiprocessing.get_context("fork")
        self._pending = list(order)  # pieces not handed out yet, next first
        self._lock = threading.Lock()  # over _pending and _alive: the reader hands out, take_pending takes
        self._processes: dict[Connection, multiprocessing.process.BaseProcess] = {}
        self._inbox: queue.SimpleQueue = (
            queue.SimpleQueue()
        )  # (connection, message); (None, _GONE) per dead pipe
        for _ in range(workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker, args=(child_end, pieces, threads, halving), daemon=True)
            process.start()
            child_end.close()
            self._processes[parent_end] = process
        self._alive = len(self._processes)
        # connection -> the piece it trains (the reader thread's alone once started)
        self._training = {conn: self._hand_out(conn) for conn in self._processes}
        # Started after the forks: a thread running at fork time would leave its locks held in the children.
        self._reader = threading.Thread(target=self._read, name="harness-workers", daemon=True)
        self._reader.start()

    def alive(self) -> int:
        """Workers still running (a worker that died is not replaced)."""
        with self._lock:
            return self._alive

    def take_pending(self) -> list[int]:
        """The pieces no worker was handed (call when none is alive: they train elsewhere)."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def events(self, timeout: float | None = None) -> list:
        """What happened, in order (Assigned, Columns, Done, Failed), waiting up to `timeout` seconds for the first
        (None: until something happens). A worker that died yields Failed for the piece it trained."""
        try:
            items = [self._inbox.get(timeout=timeout) if timeout != 0 else self._inbox.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return [message for _, message in items if message is not _GONE]

    def _hand_out(self, conn: Connection) -> int | None:
        """Give the worker the next pending piece (queued as Assigned first); returns it (None: nothing left)."""
        with self._lock:
            piece = self._pending.pop(0) if self._pending else None
        if piece is not None:
            self._inbox.put((conn, Assigned(piece)))
            try:
                conn.send(piece)
            except OSError:  # it died meanwhile: its pipe's end says so to the reader, which fails the piece
                pass
        return piece

    def _read(self) -> None:
        """Every message of every worker until each pipe closes; a worker that reports a piece done gets the next."""
        training = self._training
        open_ = list(self._processes)
        while open_:
            for conn in wait(open_):
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # stopped, or died (the OOM killer, a crash in native code)
                    open_.remove(conn)
                    with self._lock:
                        self._alive -= 1
                    if training[conn] is not None:
                        process = self._processes[conn]
                        process.join(timeout=5)
                        reason = f"worker process died ({_exit_reason(process.exitcode)})"
                        self._inbox.put((conn, Failed(training[conn], reason, None)))
                    self._inbox.put((None, _GONE))  # wakes events(): the main thread checks alive()
                    continue
                self._inbox.put((conn, message))
                if isinstance(message, (Done, Failed)):
                    training[conn] = self._hand_out(conn)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for conn, process in self._processes.items():
            if exc_type is None:
                try:
                    conn.send(None)
                except OSError:
                    pass
            else:
                process.terminate()
        for process in self._processes.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        self._reader.join(timeout=5)  # every pipe is at its end now: the reader returns
        for conn in self._processes:
            conn.close()


_GONE = object()  # queued when a worker's pipe closes


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
