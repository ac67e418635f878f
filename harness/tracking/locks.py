"""File locks (fcntl.flock) that make the store safe across processes.

- The store lock, `<db>.lock` beside a SQLite database, is held while the database is checked, created or upgraded:
  two processes creating a new store at once otherwise race in MLflow's migrations and can leave it half-built.
- A sweep lock, one per sweep key, is held by the launching process for the whole sweep: a second launch of the same
  sweep sees it and refuses in one line, and a sweep that finds RUNNING runs of its own key while holding the lock
  knows their process is gone (the kernel drops a dead process's locks), so they are stale.
"""

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from harness.errors import StoreError
from harness.tracking import store


@contextlib.contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<db>.lock` (waits for another process creating or upgrading the store)."""
    with open(f"{db}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Held(RuntimeError):
    """The lock is held by another live process; the message names it (pid and host, as that process wrote them)."""


_held: dict[str, int] = {}  # path -> open descriptor, for the life of the process


def hold(path: Path) -> None:
    """Take the exclusive lock on `path` for the rest of this process (idempotent), or raise Held at once.

    The lock file records the holder's pid and host, so that the refusal can say who holds it.
    """
    key = str(path)
    if key in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise Held(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _held[key] = fd


def sweep_lock_path(uri: str, sweep_key: str, project_dir: Path) -> Path:
    """Beside a SQLite store (so every launch into it sees the lock); under the project's mlruns/ for a server."""
    db = store.sqlite_path(uri)
    directory = db.resolve().parent if db is not None else Path(project_dir) / store.DEFAULT_STORE_DIR
    return directory / "locks" / f"sweep-{sweep_key}.lock"


def claim_sweep(uri: str, sweep_key: str, project_dir: Path) -> None:
    """Hold the sweep's lock for the rest of this process, or refuse in one line when the sweep is running.

    Holding it also means that no other process is running this sweep: RUNNING runs found under its parent were
    left by a process that is gone (stale), never by a live one.

    Raises:
        StoreError: the same sweep is running (another process holds its lock).
    """
    path = sweep_lock_path(uri, sweep_key, project_dir)
    try:
        hold(path)
    except Held as held:
        raise StoreError(
            f"this sweep is already running ({held}; lock {path}): wait for it to end or stop it, then run the "
            "command again to resume; starting it twice would train every grid point twice"
        ) from None
