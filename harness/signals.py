"""SIGINT and SIGTERM become an exception in the main thread, so every `finally` and `except` runs.

Python's default SIGTERM action ends the process at once: no `finally`, runs left RUNNING in MLflow forever (SLURM
sends SIGTERM before it kills a job, so this is the cluster's case too). With `install()`, both signals raise
`Interrupted` (a KeyboardInterrupt, so code that handles Ctrl-C handles both): the job ends its run KILLED with its
buffered metrics flushed, and a sweep ends its parent run KILLED with its job counts.

A sweep's launching process forwards the signal to its worker processes (joblib), which end their own runs.

Python runs a handler between any two bytecodes of the main thread, also inside a weakref callback or a `__del__`
(SQLAlchemy's `_collection_gced`, say), where an exception cannot propagate: Python prints "Exception ignored in ..."
and drops it. Such an interrupt is not lost: `install()` also hooks `sys.unraisablehook`, which sends the signal to
the main thread again once the callback is over, and it is raised there, at a point where it propagates.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

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


def install(signums: tuple[int, ...] = HANDLED) -> None:
    """Handle SIGINT and SIGTERM (or `signums`) from now on (main thread only; a no-op elsewhere). Idempotent.

    Raises:
        Interrupted: when a signal arrived before this call (a joblib worker between two jobs): no new job starts.
    """
    global _previous_hook
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in signums:
        signal.signal(signum, _handle)
    if sys.unraisablehook is not _unraisable:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    if received is not None:
        raise Interrupted(received)


def on_signal(hook: Callable[[int], None]) -> None:
    """Run `hook(workers)` in the handler before it raises (once), with the number of job workers signalled:
    e.g. wait for them to end their runs."""
    _before_raise.append(hook)


def _handle(signum: int, frame: FrameType | None) -> None:
    global received, _pending, _lost, _hooks_ran
    if _lost is not None:  # the interrupt raised before was dropped: raise it again
        if _inside_hook(frame):
            _redeliver(_lost)  # still inside the hook that dropped it: once more, after it
            return
        signum, _lost = _lost, None
    elif received is not None:
        return  # already stopping: a second Ctrl-C must not break the clean-up of the first
    else:
        _hooks_ran = False
    received = signum
    if _holding:
        _pending = signum  # raised when the held() block ends
        return
    _stop(signum)


def _stop(signum: int) -> None:
    global _hooks_ran
    if not _hooks_ran:  # once, also when the interrupt has to be raised again
        _hooks_ran = True
        workers = forward(signum)
        for hook in _before_raise:
            hook(workers)
    raise Interrupted(signum)


_hooks_ran = False
_lost: int | None = None  # an interrupt Python dropped (raised in a callback), to be raised again
_previous_hook = sys.unraisablehook
_hook_done = threading.Event()


def _unraisable(unraisable) -> None:
    """sys.unraisablehook: an Interrupted that Python is about to drop is sent again; anything else as before."""
    global _lost
    if not isinstance(unraisable.exc_value, Interrupted):
        _previous_hook(unraisable)
        return
    _lost = unraisable.exc_value.signum
    _redeliver(_lost)


def _redeliver(signum: int) -> None:
    """Send `signum` to the main thread from another thread once this hook has returned: a real signal, so that a
    blocking call the main thread makes next (a sleep, a wait on a pipe) is interrupted too."""
    _hook_done.clear()
    main = threading.main_thread().ident

    def send() -> None:
        _hook_done.wait()
        if signal.getsignal(signum) is _handle:  # never the default action (it would end the process at once)
            signal.pthread_kill(main, signum)

    threading.Thread(target=send, name="harness-redeliver-signal", daemon=True).start()
    _hook_done.set()  # the last thing the hook does


def _inside_hook(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in (_unraisable.__code__, _redeliver.__code__):
            return True
        frame = frame.f_back
    return False


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
