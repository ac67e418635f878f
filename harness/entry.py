"""How the harness's commands start and stop: signals handled, user-caused failures in one line, exit codes.

`run(main)` wraps a Hydra main function (the console script and `python -m harness.train` both go through it);
`task(fn)` wraps the Hydra task function, which runs once per job, in the launching process or in a worker.
"""

import atexit
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from harness import failures, shutdown, signals
from harness.redaction import redact


def task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate the Hydra task function: handle signals in this process (workers too), failures in one line."""
    one_line = failures.one_line(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signals.install()
        return one_line(*args, **kwargs)

    return wrapper


def run(main: Callable[[], Any]) -> None:
    """Run a Hydra main function; on SIGINT/SIGTERM end what is RUNNING, say how to resume, exit 130/143.

    Debug mode (harness.failures.debug) adds tracebacks to what is printed; the runs end, and the process exits,
    exactly as without it. Ends the process with exit_now (a bug's traceback is left to the interpreter)."""
    try:
        _run(main)
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


def _run(main: Callable[[], Any]) -> None:
    signals.install()
    signals.on_signal(shutdown.wait_for_workers)
    failures.say_in_entry()  # this process's one-line failures are said here, with what became of the runs
    if not failures.debug():
        os.environ["HARNESS_DEBUG"] = "0"  # the user did not ask for tracebacks (inherited by workers)
    # Without HYDRA_FULL_ERROR, Hydra prints its own errors (a group's options one per line) and exits 1 itself,
    # past the clean-up below: set, every failure reaches us and is said in one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, signals.Interrupted) else signal.SIGINT
        failures.print_traceback(exc)
        print(f"\n{redact(shutdown.interrupted(signal.Signals(signum).name))}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    except failures.Reported as exc:  # said by the job's task function (its traceback too, in debug mode)
        _say(exc.message, exc.code)
        raise
    except Exception as exc:
        message = failures.config_message(exc) or failures.describe(exc)
        if message is None:
            # A bug: its traceback, after the open sweep's parent is ended (never left RUNNING).
            said = shutdown.failed(f"{type(exc).__name__}: {exc}", environment=False)
            if said:
                print(redact(said.removeprefix("; ")), file=sys.stderr, flush=True)
            raise
        failures.print_traceback(exc)
        _say(message, failures.exit_code(exc))
        sys.exit(failures.exit_code(exc))


def _say(message: str, code: object) -> None:
    """The failure's one line, once the open sweep's runs are ended: what failed, what became of the runs, and the
    command that resumes; credentials redacted (an OS error's path, a message quoting a URI)."""
    said = shutdown.failed(message, environment=code == failures.ENVIRONMENT_EXIT)
    print(redact(f"error: {message}{said}"), file=sys.stderr, flush=True)


def exit_now(code: object = 0) -> None:
    """End a command: the atexit handlers (logging's flush, temporary directories, multiprocessing) run, then the
    process exits without tearing down the interpreter. Freeing every module object of torch, MLflow and SQLAlchemy
    one by one takes as long as a small sweep's jobs (BENCHMARKS.md §3); nothing of it reaches a file (SQLite commits
    are durable when they return). `code` as sys.exit takes it: None is 0, a string is printed and exits 1."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # a profiler or debugger writes its results at the interpreter's own exit
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    # As the interpreter's own exit, in its order: threading's exit hooks (they stop executors' manager threads:
    # joblib's loky, concurrent.futures), non-daemon threads joined, then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be said
            pass
    os._exit(code)
