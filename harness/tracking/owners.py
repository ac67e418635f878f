"""Who owns a RUNNING run: this process's job runs, how each ended, and runs whose owner is gone (stale).

A run is RUNNING from its creation until its end is written, and only the process that created it writes that end.
When the process dies first (SIGKILL, the OOM killer, a full disk that refused even the end's few pages), nothing
else would ever end the run. So the process owns each job run it creates by an exclusive file lock (fcntl.flock) on
`<run id>.<boot id>.lock` in the store's run-lock folder (`run_locks`), from just after the run is created until its
end is written; the kernel drops the lock when the process dies, however it dies.

The rule that makes a run stale (`end_stale`: the next job into the store ends it KILLED, with the reason as its
error tag): its lock file is in the folder, names this machine's running kernel (Linux's boot id), nobody holds the
lock, and the run is still RUNNING once we hold the lock ourselves. Only that proves the owner dead: flock is only
sure to be shared by the processes of one kernel (an NFS mount may keep locks local to each client), so a lock file
written on another machine or before a reboot proves nothing and its run is left as it is (the next job on that
machine ends it); a run without a lock file (created by another MLflow client, an older harness, a batched group:
their sweep's lock covers them) is never touched. The lock file appears under its name already locked (made under
a temporary name, then renamed), so that no reader can take it in the moment between its creation and its lock.

The boot id is part of the name, not the content: on a disk that is full the file can still be made (an empty file
needs no data block), and that is when it matters most.
"""

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.tracking import schema, store
from harness.tracking.port import Store

SUFFIX = ".lock"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _kernel() -> str | None:
    """This machine's running kernel (a new id at every boot); None where the system does not say (no proof)."""
    try:
        return BOOT_ID.read_text().strip().replace("-", "") or None
    except OSError:
        return None


KERNEL = _kernel()


def run_locks(found: Store, project_dir: Path) -> Path:
    """The folder of a store's run locks: beside a SQLite file (every process that writes the file sees it), else
    under the project's mlruns/, one folder per server (named by a digest of its redacted URI)."""
    db = store.sqlite_path(found.uri)
    if db is not None:
        return db.parent / "locks" / f"{db.stem}-runs"
    digest = hashlib.sha256(found.location.encode()).hexdigest()[:16]
    return Path(project_dir) / store.DEFAULT_STORE_DIR / "locks" / f"server-{digest}-runs"


@dataclass
class Owned:
    """A run this process created: where its lock is, and how it ended (None: not ended, RUNNING in the store)."""

    run_id: str
    found: Store
    lock: Path | None = None  # None: the lock could not be made (the run is then never proven stale)
    fd: int | None = None
    status: str | None = None


_owned: dict[str, Owned] = {}
_latest: Owned | None = None  # the latest run this process created (what an interrupt's line talks about)


def own(found: Store, run_id: str, project_dir: Path) -> None:
    """Hold the lock of the run just created, for as long as it is this process's (until `ended`).

    A lock that cannot be made (a read-only folder, no boot id) leaves the run without one: it runs and ends as
    before, but no other command can ever prove it stale.
    """
    global _latest
    owned = Owned(run_id, found)
    _owned[run_id] = _latest = owned
    if KERNEL is None:
        return
    folder = run_locks(found, project_dir)
    lock = folder / f"{run_id}.{KERNEL}{SUFFIX}"
    building = folder / f".{run_id}.{os.getpid()}.tmp"
    fd = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(building, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(building, lock)  # it appears locked
    except OSError:
        with contextlib.suppress(OSError):
            building.unlink()
        if fd is not None:
            os.close(fd)
        return
    owned.lock, owned.fd = lock, fd
    # Who holds it, for the stale run's error tag (a full disk may refuse these bytes: the name is what counts).
    with contextlib.suppress(OSError):
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)


def ended(run_id: str | None, status: str) -> None:
    """The run's end (`status`) is written: its lock is let go and its file removed."""
    owned = _owned.get(run_id or "")
    if owned is None:
        return
    owned.status = status
    _let_go(owned)


def _let_go(owned: Owned) -> None:
    if owned.fd is None:
        return
    with contextlib.suppress(OSError):
        owned.lock.unlink()  # while the lock is held: whoever opens the file after this finds none
    os.close(owned.fd)
    owned.fd = None


def latest() -> Owned | None:
    """The latest run this process created (its status None while not ended), or None: no run was created."""
    return _latest


def unended() -> list[Owned]:
    """This process's runs whose end was not written (still RUNNING in the store, as far as this process knows)."""
    return [o for o in _owned.values() if o.status is None]


def end_unended(status: str, reason: str) -> None:
    """End this process's runs that were not ended (a signal came before the job could end them, or their end was
    refused): `status`, `reason` as the error. A store that still refuses leaves them to `end_stale`."""
    tags = {schema.STATUS: status.lower(), schema.ERROR: reason}  # killed, failed: as the job's own end
    for owned in unended():
        try:
            owned.found.end_run(owned.run_id, status, tags)
        except Exception:  # noqa: BLE001 - the store may be what failed; the lock makes a later command end it
            continue
        ended(owned.run_id, status)


def end_stale(found: Store, project_dir: Path) -> list[str]:
    """End KILLED the runs of `found` whose owner is gone (the rule is in the module docstring); their ids.

    Raises:
        Exception: what the store raises when it refuses the write (it would refuse the next run too).
    """
    folder = run_locks(found, project_dir)
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(SUFFIX))
    except OSError:  # no folder: no run of this store was ever owned
        return []
    stale = []
    for name in names:
        run_id, _, kernel = name.removesuffix(SUFFIX).partition(".")
        if kernel != KERNEL or run_id in _owned:
            continue
        with _taken(folder / name) as taken:
            if taken.holder is None:
                continue
            ended_now = _end_if_running(found, run_id, taken.holder)
            taken.remove = ended_now is not None
            if ended_now:
                stale.append(run_id)
    return stale


def _end_if_running(found: Store, run_id: str, holder: str) -> bool | None:
    """True: ended KILLED; False: it had ended (its owner died before removing the lock file); None: not a run of
    this store (another store's file of the same name beside it shares the folder), its lock file is left."""
    run = found.run(run_id)
    if run is None:
        return None
    if run.info.status != schema.RUNNING:
        return False
    reason = f"stale: the process that ran it ({holder}) is gone"
    found.end_run(run_id, schema.KILLED, {schema.STATUS: schema.KILLED_OUTCOME, schema.ERROR: reason})
    return True


@dataclass
class _Taken:
    holder: str | None = None  # what the lock file says of its last holder; None: not taken (held, or gone)
    remove: bool = True  # remove the file at the end of the block


@contextlib.contextmanager
def _taken(lock: Path) -> Iterator[_Taken]:
    """The lock, taken if nobody holds it; its file is removed at the end of the block (unless told otherwise),
    while still held, and left as it is when the block raises."""
    taken = _Taken()
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        yield taken
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not removed by its owner meanwhile
        except OSError:  # held (BlockingIOError), or removed
            same = False
        if not same:
            yield taken
            return
        taken.holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
        yield taken
        if taken.remove:
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(fd)
