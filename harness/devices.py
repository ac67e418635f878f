"""Device names as users type them (cpu, cuda, cuda:N, mps, auto) -> a checked torch.device."""

import os
import re

import torch

from harness.errors import ConfigError

ALLOWED = "cpu, cuda, cuda:N, mps or auto"


def available_devices() -> list[str]:
    """Device names usable on this machine, for error messages."""
    names = ["cpu", "auto"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str, job_index: int | None = None) -> torch.device:
    """Resolve and check a device name.

    `auto` prefers CUDA, then MPS, then CPU. With several GPUs, `auto` and bare `cuda` spread the jobs of a
    sweep over them (job number modulo GPU count); `cuda:N` pins one.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device", name, f"MPS is not available here; use one of {available_devices()}")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ConfigError("device", name, ALLOWED)
    if not torch.cuda.is_available():
        raise ConfigError("device", name, f"CUDA is not available here; use one of {available_devices()}")
    count = torch.cuda.device_count()
    if match.group(1) is None:
        return torch.device("cuda", (job_index or 0) % count)
    index = int(match.group(1))
    if index >= count:
        raise ConfigError(
            "device", name, f"this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def device_description(device: torch.device) -> str:
    """Human-readable device name for the run's tags."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity (what SLURM, taskset or a container's cpuset allot), not the
    machine's count, which on a cluster node is every core of the node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
