"""What the launching process asks SLURM's controller: a partition's nodes, this sweep's jobs in the queue, and how a
job ended when accounting (`sacct`) cannot say.

submitit learns how a job ended from `sacct` alone. A cluster without accounting answers it with an error, and a task
that ended without writing its result file (cancelled before it started, killed) then looks pending for ever: the
launching process would wait for ever. There `squeue` is asked instead (`QueueWatcher`).
"""

import getpass
import re
import subprocess
import time
from pathlib import Path

POLL_S = 2.0  # how often a waiting launcher asks squeue (each call is one RPC to slurmctld)
GONE = "GONE"  # the state of a job squeue no longer lists (ended MinJobAge ago, or cancelled while pending)


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def accounting_answers() -> bool:
    """True when `sacct` works on this cluster (SLURM's accounting storage is enabled)."""
    try:
        return _run("sacct", "--noheader", "-X", "-j", "1").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def queue_watcher(delay_s: int = 60):
    """submitit's SLURM job watcher, reading `squeue` (every state, one line per array task) instead of `sacct`. A job
    the queue no longer lists has ended (GONE): submitit then reads its result, or says it left none. (Defined on
    first use: Hydra imports every plugin module at start-up, and submitit is not needed before a SLURM launch.)"""
    from submitit.slurm import slurm

    class QueueWatcher(slurm.SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            user = f"--user={getpass.getuser()}"
            return ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", user]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            listed = dict(line.strip().split("|", 1) for line in text.splitlines() if "|" in line)
            info = {job: {"JobID": job, "State": state.split()[0]} for job, state in listed.items()}
            arrays = {job.split("_", 1)[0] for job in listed}
            for job in self._registered - self._finished:
                if job not in listed and job not in arrays:
                    info[job] = {"JobID": job, "State": GONE}
            return info

    return QueueWatcher(delay_s=delay_s)


def watch_the_queue() -> None:
    """Have submitit ask squeue when this cluster has no accounting (once per process; nothing changes where sacct
    answers)."""
    from submitit.slurm import slurm

    if getattr(slurm.SlurmJob.watcher, "reads_squeue", False) or accounting_answers():
        return
    watcher = queue_watcher()
    watcher.reads_squeue = True
    slurm.SlurmJob.watcher = watcher


def job_ids(submitit_folder: str) -> set[str]:
    """The SLURM job ids (an array's own id for its tasks) submitit made folders for under `submitit_folder`
    (`.../.submitit/%j`)."""
    root = Path(submitit_folder.split("%j", 1)[0])
    if not root.is_dir():
        return set()
    return {m.group(1) for p in root.iterdir() if (m := re.fullmatch(r"(\d+)(_\d+)?", p.name))}


def queued(ids: set[str]) -> list[str]:
    """Those of `ids` still pending or running (squeue's default states), one entry per job or array task."""
    if not ids:
        return []
    try:
        result = _run("squeue", "--noheader", "--array", "--format=%F %i", f"--user={getpass.getuser()}")
    except (OSError, subprocess.TimeoutExpired):
        return []  # no squeue, or no controller: nothing can be waited for
    if result.returncode != 0:
        return []
    return [line.split()[1] for line in result.stdout.splitlines() if line.split() and line.split()[0] in ids]


def wait_until_gone(ids: set[str], sweep_dir: Path | None = None) -> None:
    """Wait for the jobs in `ids` to leave the queue (they write to the sweep's parent run until they do); one line
    in the sweep's output (`sweep_dir`: its log) while there are any."""
    left = queued(ids)
    if left:
        from harness.sweep import output

        output.logger(__name__, sweep_dir).info(
            f"[sweep] waiting for the sweep's {len(left)} SLURM job(s) still queued or running to end "
            f"(scancel {' '.join(sorted(ids))} stops them)"
        )
    while left:
        time.sleep(POLL_S)  # a polling interval: the condition is the queue's
        left = queued(ids)


def partition_nodes(partition: str | None) -> list[str] | None:
    """The node names of `partition` (None: the cluster's default partition); None when scontrol cannot say."""
    try:
        shown = _run("scontrol", "show", "partition", "--oneliner", *([partition] if partition else []))
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in shown.stdout.splitlines() if partition or " Default=YES " in f" {line} "]
    found = re.search(r"(?:^| )Nodes=(\S+)", lines[0]) if shown.returncode == 0 and lines else None
    if found is None:
        return None
    names = _run("scontrol", "show", "hostnames", found.group(1))
    return names.stdout.split() if names.returncode == 0 else None
