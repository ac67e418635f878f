"""Per-step values kept in preallocated buffers and handed to a tracker one chunk of steps at a time.

Shared by the training loop (harness.loop) and the batched engine (harness.batched.engine). A chunk is up to `chunk`
consecutive steps. Two kinds of series:

- device series: one tensor `values` of shape (series, *trials, chunk) on the run's device, written by in-device
  copies (`slots(key)[i].copy_(tensor)`): nothing forces a host sync; the chunk crosses to the host in one copy.
- host series: preallocated Python lists (`host[key][i] = float`), for what the host knows anyway (wall-clock time,
  a scheduler's lr) and, on CPU, for every value: there `loss.item()` costs no sync and a list store is cheaper than
  writing a tensor element.

`take(n)` returns the first n steps as columns of Python floats, ready for `Tracker.log_columns`.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from harness.tracking.base import Tracker


class StepBuffer:
    """Preallocated per-step values of one chunk: `device_keys` in a tensor, `host_keys` in Python lists.

    Args:
        device_keys: series written on the device (empty on CPU runs that keep floats).
        host_keys: series written as Python floats.
        chunk: steps per chunk.
        device, dtype: of the device tensor (dtype of the values written: a float64 run keeps float64).
        trials: for batched trials, the number of trials: each device series then holds (trials, chunk) values, and
            `take` gives it as one list of steps per trial.
    """

    def __init__(
        self,
        device_keys: Sequence[str],
        host_keys: Sequence[str],
        chunk: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        trials: int | None = None,
    ):
        self.chunk, self.device_keys, self.host_keys = chunk, tuple(device_keys), tuple(host_keys)
        lead = () if trials is None else (trials,)
        self.values = torch.full(
            (len(self.device_keys), *lead, chunk), float("nan"), device=device, dtype=dtype
        )
        # Views made once: indexing a tensor per step costs more than the copy into it.
        self._slots = {
            key: [self.values[s, ..., i] for i in range(chunk)] for s, key in enumerate(self.device_keys)
        }
        self.host: dict[str, list[float]] = {key: [float("nan")] * chunk for key in self.host_keys}

    def slots(self, key: str) -> list[Tensor]:
        """Per step of the chunk, the view that holds `key` (0-d, or (trials,) for batched trials): write step i
        with `slots(key)[i].copy_(value)`."""
        return self._slots[key]

    def column(self, key: str) -> Tensor:
        """A device series over the whole chunk: shape (*trials, chunk)."""
        return self.values[self.device_keys.index(key)]

    def take(self, n: int, extra: Sequence[Tensor] = ()) -> tuple[dict[str, list], list]:
        """The first n steps as {key: list} (device series as nested lists [trial][step] for batched trials),
        plus `extra` device tensors (divergence marks...) as lists, all in one device-to-host copy."""
        columns: dict[str, list] = {key: values[:n] for key, values in self.host.items()}
        if not self.device_keys and not extra:
            return columns, []
        parts = [self.values[..., :n].reshape(-1)] + [t.reshape(-1).to(self.values.dtype) for t in extra]
        flat = torch.cat(parts).tolist()  # the chunk's one host sync
        size = self.values[0, ..., :n].numel()
        for s, key in enumerate(self.device_keys):
            part = flat[s * size : (s + 1) * size]
            if self.values.dim() == 2:
                columns[key] = part
            else:  # batched trials: one row of n steps per trial
                columns[key] = [part[t * n : (t + 1) * n] for t in range(self.values.shape[1])]
        rest, extras = flat[len(self.device_keys) * size :], []
        for t in extra:
            extras.append(rest[: t.numel()])
            rest = rest[t.numel() :]
        return columns, extras


def first_true(mask: Tensor) -> Tensor:
    """Index of the first True along the last dimension, or its length where there is none; on mask's device."""
    n = mask.shape[-1]
    return torch.where(mask.any(-1), mask.to(torch.uint8).argmax(-1), n)


def timestamps_ms(start_ms: float, wall_s: Sequence[float]) -> list[int]:
    """Epoch milliseconds of steps whose wall-clock offsets from a start are `wall_s`."""
    return [int(start_ms + 1000.0 * w) for w in wall_s]


def write_chunk(
    tracker: Tracker,
    first_step: int,
    columns: dict[str, Sequence[float]],
    timestamps: Sequence[int] | None = None,
) -> None:
    """One `log_columns` call for steps first_step, first_step + 1, ... (as many as the columns are long)."""
    n = len(next(iter(columns.values()))) if columns else 0
    if n:
        tracker.log_columns(range(first_step, first_step + n), columns, timestamps)
