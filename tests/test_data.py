"""The DataLoader: one indexing call per batch, exact epochs, seeded order, `full` = gradient descent."""

import torch

from harness.data import BatchIndexSampler, make_loader, resolve_batch_size


def test_each_epoch_covers_the_data_once_in_batches_of_the_requested_size():
    x = torch.arange(10.0).unsqueeze(1)
    loader = make_loader((x, x * 2), batch_size=4, shuffle=True, seed=0)
    for _ in range(3):
        batches = list(loader)
        assert [len(b[0]) for b in batches] == [4, 4, 2]
        seen = torch.cat([b[0] for b in batches]).squeeze(1)
        assert sorted(seen.tolist()) == list(range(10))
        assert all(torch.equal(b[1], b[0] * 2) for b in batches)


def test_order_depends_only_on_the_seed():
    x = torch.arange(100.0)
    order = lambda seed: torch.cat([b[0] for b in make_loader((x,), 7, True, seed)])  # noqa: E731
    torch.manual_seed(123)  # the global RNG plays no part
    first = order(5)
    torch.manual_seed(456)
    assert torch.equal(first, order(5))
    assert not torch.equal(first, order(6))


def test_unshuffled_batches_are_in_order_and_views():
    x = torch.arange(6.0)
    batches = [b[0] for b in make_loader((x,), 4, shuffle=False, seed=0)]
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    assert batches[0].data_ptr() == x.data_ptr()  # a slice: no copy


def test_full_batch_is_the_whole_training_set():
    assert resolve_batch_size("full", 1437) == 1437
    assert resolve_batch_size(5000, 1437) == 1437
    assert len(BatchIndexSampler(1437, 1437, shuffle=True)) == 1


def test_batches_are_fetched_with_one_indexing_call():
    from harness.data import InMemoryDataset

    calls = []

    class Counting(InMemoryDataset):
        def __getitem__(self, index):  # per-sample path: must never be used
            calls.append(index)
            return super().__getitem__(index)

    dataset = Counting(torch.arange(64.0))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=BatchIndexSampler(64, 16, True), collate_fn=lambda b: b
    )
    assert sum(len(b[0]) for b in loader) == 64
    assert calls == []


def test_the_sklearn_splits_are_made_once_and_read_back_the_same(tmp_path, monkeypatch):
    import numpy as np

    from harness.tasks import sklearn_data

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    made = sklearn_data._make_digits()
    first = sklearn_data._cached("digits", sklearn_data._make_digits)
    [stored] = (tmp_path / "cache").glob("digits-*.npz")
    calls = []
    again = sklearn_data._cached("digits", lambda: calls.append(1))  # read back: nothing is made
    assert calls == []
    for a, b, c in zip(made, first, again):
        assert a.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)
    assert [len(a) for a in again] == [1437, 360, 1437, 360]
    for damaged in (b"not an npz", stored.read_bytes()[:1000]):  # garbage, or a zip cut short: made again
        stored.write_bytes(damaged)
        assert np.array_equal(sklearn_data._cached("digits", sklearn_data._make_digits)[0], made[0])


def test_an_unwritable_cache_still_gives_the_splits(tmp_path, monkeypatch):
    import numpy as np

    from harness.tasks import sklearn_data

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    arrays = sklearn_data._cached("breast_cancer", sklearn_data._make_cancer)
    assert [len(a) for a in arrays] == [426, 143, 426, 143] and np.isfinite(arrays[0]).all()
