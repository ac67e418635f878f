"""A DataLoader over in-memory tensors that fetches each batch with one indexing call.

PyTorch's default `DataLoader(TensorDataset)` indexes one sample at a time and collates them, which on small data
costs more than the training step (see shared/FACTS.md). Here the batch sampler yields one index object per batch (a
slice in order, or a slice of a `randperm`), the dataset's `__getitems__` applies it to every tensor at once, and
collation is the identity.
"""

import math
import multiprocessing
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

Index = Tensor | slice


class InMemoryDataset(Dataset):
    """Tensors sharing their first dimension, already on the training device."""

    def __init__(self, *tensors: Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, index: Index) -> tuple[Tensor, ...]:
        # One gather per tensor for the whole batch; a slice gives views, no copy at all.
        return tuple(t[index] for t in self.tensors)


class BatchIndexSampler(Sampler[Index]):
    """Yields whole batches as one index object: slices in dataset order, or slices of a seeded randperm."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        self.size, self.batch_size, self.shuffle, self.generator = size, batch_size, shuffle, generator

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[Index]:
        if self.shuffle and self.size > 1:
            order = torch.randperm(self.size, generator=self.generator)
            for start in range(0, self.size, self.batch_size):
                yield order[start : start + self.batch_size]
        else:
            for start in range(0, self.size, self.batch_size):
                yield slice(start, min(start + self.batch_size, self.size))


def _as_is(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The dataset already returns batched tensors (module-level so worker processes can pickle it)."""
    return batch


def resolve_batch_size(batch_size: int | str, size: int) -> int:
    """`full` means the whole training set: gradient descent."""
    return size if batch_size == "full" else min(int(batch_size), size)


def make_loader(
    tensors: tuple[Tensor, ...], batch_size: int | str, shuffle: bool, seed: int, num_workers: int = 0
) -> DataLoader:
    """A DataLoader whose batch order depends only on `seed` (its own generator, not torch's global RNG)."""
    dataset = InMemoryDataset(*tensors)
    generator = torch.Generator().manual_seed(seed)
    sampler = BatchIndexSampler(
        len(dataset), resolve_batch_size(batch_size, len(dataset)), shuffle, generator
    )
    context = worker_start_method() if num_workers else None
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_as_is,
        num_workers=num_workers,
        multiprocessing_context=context,
    )


def worker_start_method() -> str | None:
    """How DataLoader workers start: Python's default, unless this process changed it to one torch cannot use.

    A joblib (loky) worker's default start method is 'loky', with which every DataLoader worker fails
    ("'Process' object has no attribute 'env'"); an explicit 'fork' (else 'spawn') works there.
    """
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
