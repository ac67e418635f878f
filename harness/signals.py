"""SIGINT and SIGTERM become an exception in the main thread, so every `finally` and `except` runs.

Python's default SIGTERM action ends the process at once: no `finally`, runs left RUNNING in MLflow forever (SLURM
sends SIGTERM before it kills a job, so this is the cluster's case too). With `install()`, both signals raise
`Interrupted` (a KeyboardInterrupt, so code that handles Ctrl-C handles both): the job ends its run KILLED with its
buffered metrics flushed, and a sweep ends its parent run KILLED with its job counts.

A sweep's launching process forwards the signal to its worker processes (joblib), which end their own runs.
"""

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


received: int | None = None  # the first signal this process received
_before_raise: list[Callable[[int], None]] = []


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (main thread only; a no-op elsewhere). Idempotent.

    Raises:
        Interrupted: when a signal arrived before this call (a joblib worker between two jobs): no new job starts.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _handle)
    if received is not None:
        raise Interrupted(received)


def on_signal(hook: Callable[[int], None]) -> None:
    """Run `hook(workers)` in the handler before it raises (once), with the number of job workers signalled:
    e.g. wait for them to end their runs."""
    _before_raise.append(hook)


def _handle(signum: int, frame: object) -> None:
    global received, _pending
    if received is not None:
        return  # already stopping: a second Ctrl-C must not break the clean-up of the first
    received = signum
    if _holding:
        _pending = signum  # raised when the held() block ends
        return
    _stop(signum)


def _stop(signum: int) -> None:
    workers = forward(signum)
    for hook in _before_raise:
        hook(workers)
    raise Interrupted(signum)


def forward(signum: int) -> int:
    """Send SIGTERM to this process's live child processes; returns how many were job workers (joblib's loky
    processes, which end their runs themselves), not DataLoader workers (which only feed this process's job)."""
    workers = 0
    for child in multiprocessing.active_children():
        if child.pid is None:
            continue
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        workers += type(child).__name__.startswith("Loky")
    return workers


_holding = 0  # depth of held() blocks in the main thread
_pending: int | None = None  # a signal that arrived inside one


@contextlib.contextmanager
def held():
    """SIGINT and SIGTERM wait until the block is done (then they are handled as usual): for a write that must land
    whole or not at all, e.g. a buffer cleared as its rows are committed. (Blocking the signal in this thread would
    not do: the kernel hands a process's signal to any thread that does not block it, an OpenMP one say, and Python
    then runs the handler here all the same.)"""
    global _holding, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if _holding == 0 and _pending is not None:
            signum, _pending = _pending, None
            _stop(signum)
