"""How the harness's commands start and stop: signals handled, user-caused failures in one line, exit codes.

`run(main)` wraps a Hydra main function (the console script and `python -m harness.train` both go through it);
`task(fn)` wraps the Hydra task function, which runs once per job, in the launching process or in a worker.
"""

import functools
import signal
import sys
from collections.abc import Callable
from typing import Any

from harness import failures, shutdown, signals


def task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate the Hydra task function: handle signals in this process (workers too), failures in one line."""
    one_line = failures.one_line(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signals.install()
        return one_line(*args, **kwargs)

    return wrapper


def run(main: Callable[[], Any]) -> None:
    """Run a Hydra main function; on SIGINT/SIGTERM end what is RUNNING, say how to resume, exit 130/143."""
    signals.install()
    signals.on_signal(shutdown.wait_for_workers)
    try:
        main()
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, signals.Interrupted) else signal.SIGINT
        if failures.debug():
            raise
        print(f"\n{shutdown.interrupted(signal.Signals(signum).name)}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
    except failures.Reported as exc:
        shutdown.failed(exc.message)
        raise


def train() -> None:
    """The `harness-train` console script."""
    from harness.train import main

    run(main)
