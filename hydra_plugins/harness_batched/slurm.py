"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher (one array task per job), with what a sweep needs
from its launching process:

- before the sweep's parent run is created or continued (the sweep callback calls `check_options`): SLURM's commands
  are on this machine and `sbatch --test-only` accepts a job with the launcher's options, so a bad partition or a
  request no node can meet is one line and leaves the store as it was;
- before the first submission: a tracking store every writer can share (`check_store`);
- while waiting: the queue, where the cluster has no accounting for submitit to ask (slurm_queue.watch_the_queue);
- when a job ended without its result (cancelled, killed, its store failed): the sweep's other jobs are waited for,
  since they still write to the parent run, then one line names the job, how it ended and its error.
"""

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError, Stopped
from hydra_plugins.harness_batched import slurm_queue

COMMANDS = ("sbatch", "srun", "squeue", "scontrol")
SERVER_HINT = "start a tracking server with make server (scripts/server.sh) and add tracking=server"


class SlurmUnavailable(Stopped):
    """SLURM cannot take or finish the sweep's jobs (no SLURM here, no controller, a job ended without its result):
    one line, exit 1."""


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._store_checked = False

    @staticmethod
    def check_options(**options) -> None:
        """Refuse what SLURM would refuse, before the sweep's runs exist: SLURM missing, or a job with these options
        that `sbatch --test-only` does not accept (a partition that does not exist, more CPUs, memory or GPUs than a
        node has). Nothing is submitted."""
        missing = [name for name in COMMANDS if shutil.which(name) is None]
        if missing:
            names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
            raise SlurmUnavailable(
                f"hydra/launcher=slurm needs a SLURM cluster: {names} {'is' if len(missing) == 1 else 'are'} not "
                "on this machine (hydra/launcher=local_cluster runs the same jobs here)"
            )
        refused = _test_only(_sbatch_script(options))
        if refused is None:
            return
        if "unable to contact slurm controller" in refused.lower():
            raise SlurmUnavailable(f"SLURM's controller does not answer: {refused}; is slurmctld running?")
        raise ConfigError(
            "hydra.launcher",
            _summary(options),
            f"options SLURM accepts here; sbatch --test-only said: {refused} (sinfo lists the partitions and nodes)",
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not self._store_checked:
            check_store(self.config, self.params.get("partition"))
            self._store_checked = True
        slurm_queue.watch_the_queue()
        try:
            return super().launch(job_overrides, initial_job_idx)
        except Exception as exc:
            said = failure_line(exc)
            ids = slurm_queue.job_ids(str(self.params["submitit_folder"]))
            slurm_queue.wait_until_gone(ids, Path(str(self.config.hydra.sweep.dir)))
            if said is None:
                raise
            raise SlurmUnavailable(said) from exc


def _executor_parameters(options: dict) -> tuple[dict, dict]:
    """(AutoExecutor's arguments, its update_parameters) from the launcher's options, as
    BaseSubmititLauncher.launch makes them."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in options.items()
    }
    init = {
        "folder": params.pop("submitit_folder"),
        "slurm_max_num_timeout": params.pop("max_num_timeout", 0),
    }
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    return init, {k if k in base else f"slurm_{k}": v for k, v in params.items()}


def _sbatch_script(options: dict) -> str:
    """The sbatch script submitit would write for one job with these options (its #SBATCH lines), running `true`."""
    import submitit

    init, parameters = _executor_parameters(options)
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    executor.update_parameters(**parameters)
    return executor._executor._make_submission_file_text("true", "check")


def _test_only(script: str) -> str | None:
    """None when `sbatch --test-only` accepts the script (it submits nothing), else what it said, in one line."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="harness-slurm-check-") as file:
        file.write(script)
        file.flush()
        try:
            result = subprocess.run(
                ["sbatch", "--test-only", file.name], capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            return "Unable to contact slurm controller (sbatch --test-only did not answer within 60 s)"
    if result.returncode == 0:
        return None
    lines = [
        line.strip().removeprefix("sbatch: error: ") for line in result.stderr.splitlines() if line.strip()
    ]
    return "; ".join(lines) or f"exit status {result.returncode}"


def _summary(options: dict) -> str:
    keys = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "nodes")
    return " ".join(f"{k}={'null' if options[k] is None else options[k]}" for k in keys if k in options)


def check_store(config: DictConfig, partition: str | None) -> None:
    """A tracking store every writer can share. An SQLite file is refused when writers on more than one machine would
    share it (the partition's nodes and this launching host, which writes the parent run): SQLite's file locking
    does not hold over a network filesystem. With one machine, one line of warning.

    Raises:
        ConfigError: the store is an SQLite file and the jobs could run on another machine than this one.
    """
    if not config.tracking.enabled:
        return
    from harness.sweep import output
    from harness.tracking import record, store

    uri = store.resolve_uri(config.tracking.uri, Path.cwd())
    path = store.sqlite_path(uri)
    if path is None:
        return  # a tracking server: every node writes through it
    nodes = slurm_queue.partition_nodes(partition)
    where = f"partition {partition}" if partition else "the default partition"
    here = socket.gethostname().split(".")[0]
    writers = {n.split(".")[0] for n in nodes or []} | {here}
    if len(writers) > 1:
        raise ConfigError(
            "tracking.uri",
            record.redact(uri),
            f"a tracking server with hydra/launcher=slurm on {where} (nodes {', '.join(nodes)}; this host: {here}): "
            "an SQLite file written from several machines over a network filesystem can lose or corrupt runs "
            f"(its file locking does not hold there); {SERVER_HINT}",
        )
    known = f"{where} is this host ({here}) alone" if nodes else f"the nodes of {where} could not be listed"
    output.logger(__name__, Path(str(config.hydra.sweep.dir))).warning(
        f"[sweep] warning: the tracking store is an SQLite file ({path}): {known}; with writers on several nodes "
        f"(a network filesystem) SQLite is unsafe: on a cluster, {SERVER_HINT}"
    )


_UNCOMPLETED = re.compile(
    r"Job (\S+) \(task: [^)]*\) with path (\S+)\s+has not produced any output \(state: ([^)]*)\)"
)


def failure_line(exc: BaseException) -> str | None:
    """One line for what a SLURM launch raised: a submission sbatch refused, a job that ended without its result (its
    state, the error it printed, its log); None for anything else, a job's own exception included (a bug: its
    traceback is kept)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    links = list(_chain(exc))
    for link in links:
        if isinstance(link, subprocess.CalledProcessError) and Path(str(link.cmd[0])).name == "sbatch":
            said = "; ".join(ln.strip() for ln in (link.stderr or "").splitlines() if ln.strip())
            return f"sbatch refused the sweep's jobs: {said or f'exit status {link.returncode}'}"
    for link in links:
        if isinstance(link, UncompletedJobError) and not isinstance(link, FailedJobError):
            return _uncompleted_line(str(link))
    return None


def _uncompleted_line(text: str) -> str:
    found = _UNCOMPLETED.search(text)
    if found is None:
        return f"a SLURM job ended without its result: {text.splitlines()[0] if text else 'no message'}"
    job, result, state = found.groups()
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("error: ")]
    log = Path(result).with_name(Path(result).name.replace("_result.pkl", "_log.err"))
    said = f": {errors[-1]}" if errors else ""
    state = state.strip()
    ended = "left the queue (cancelled before it started?)" if state == slurm_queue.GONE else f"ended {state}"
    return f"SLURM job {job} {ended} without its result{said} (its log: {log})"


def _chain(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
