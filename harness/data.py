"""A DataLoader over in-memory tensors that fetches many batches with one indexing call.

PyTorch's default `DataLoader(TensorDataset)` indexes one sample at a time and collates them, which on small data
costs more than the training step. Here the batch sampler yields one index object per *fetch* (a slice in order, or
a slice of a seeded `randperm`) covering up to `FETCH_SAMPLES` samples of one epoch, the dataset's `__getitems__`
applies it to every tensor at once, collation is the identity, and `Batches` splits each fetch into views of
`batch_size` rows.

Why fetch several batches per DataLoader call: each `DataLoader.__next__` pays a profiler `record_function`, the
fetcher and a generator hop, a cost of the order of the whole per-step budget of a small model (see BENCHMARKS.md).
Fetching an epoch's worth at once keeps the DataLoader as the one data path (workers, pinning and samplers behave as
usual) and leaves a view per step. The batches are the same values, in the same order, drawn with the same
generator calls as one fetch per batch.
"""

import math
import multiprocessing
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

Index = Tensor | slice
FETCH_SAMPLES = (
    4096  # samples per DataLoader fetch (at least one batch): bounds the copy a shuffled fetch makes
)


class InMemoryDataset(Dataset):
    """Tensors sharing their first dimension, already on the training device."""

    def __init__(self, *tensors: Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, index: Index) -> tuple[Tensor, ...]:
        # One gather per tensor for the whole fetch; a slice gives views, no copy at all.
        return tuple(t[index] for t in self.tensors)


class BatchIndexSampler(Sampler[Index]):
    """Yields one index object per fetch of `batches_per_fetch` batches (never across an epoch's end).

    In order: slices of the dataset. Shuffled: slices of one seeded randperm per epoch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
        batches_per_fetch: int = 1,
    ):
        self.size, self.batch_size, self.shuffle, self.generator = size, batch_size, shuffle, generator
        self.fetch = batch_size * max(1, batches_per_fetch)

    def __len__(self) -> int:
        return math.ceil(self.size / self.fetch)

    def __iter__(self) -> Iterator[Index]:
        if self.shuffle and self.size > 1:
            order = torch.randperm(self.size, generator=self.generator)
            for start in range(0, self.size, self.fetch):
                yield order[start : start + self.fetch]
        else:
            for start in range(0, self.size, self.fetch):
                yield slice(start, min(start + self.fetch, self.size))


class Batches:
    """The batches of one epoch, per iteration: each DataLoader fetch split into `batch_size`-row views."""

    def __init__(self, loader: DataLoader, batch_size: int):
        self.loader, self.batch_size = loader, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.loader.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        for fetched in self.loader:
            # torch.split makes every view in one call; zip hands them out with no per-step Python slicing.
            yield from zip(*(t.split(self.batch_size) for t in fetched))


def _as_is(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The dataset already returns batched tensors (module-level so worker processes can pickle it)."""
    return batch


def resolve_batch_size(batch_size: int | str, size: int) -> int:
    """`full` means the whole training set: gradient descent."""
    return size if batch_size == "full" else min(int(batch_size), size)


def make_loader(
    tensors: tuple[Tensor, ...],
    batch_size: int | str,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    fetch_samples: int = FETCH_SAMPLES,
) -> Batches:
    """Batches through a DataLoader whose order depends only on `seed` (its own generator, not torch's global RNG).

    `fetch_samples` bounds the samples per DataLoader fetch (rounded down to whole batches, at least one).
    """
    dataset = InMemoryDataset(*tensors)
    generator = torch.Generator().manual_seed(seed)
    size = resolve_batch_size(batch_size, len(dataset))
    sampler = BatchIndexSampler(len(dataset), size, shuffle, generator, max(1, fetch_samples // size))
    context = worker_start_method() if num_workers else None
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=_as_is,
        num_workers=num_workers,
        multiprocessing_context=context,
    )
    return Batches(loader, size)


def worker_start_method() -> str | None:
    """How DataLoader workers start: Python's default, unless this process changed it to one torch cannot use.

    A joblib (loky) worker's default start method is 'loky', with which every DataLoader worker fails
    ("'Process' object has no attribute 'env'"); an explicit 'fork' (else 'spawn') works there.
    """
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
