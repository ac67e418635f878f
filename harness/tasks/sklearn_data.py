"""Classification on scikit-learn's bundled datasets (no downloads): breast cancer and 8x8 digits.

The splits are computed once per scikit-learn version and kept as .npz files in a cache directory
($HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/harness, else ~/.cache/harness): importing scikit-learn to make them costs
more than a small job, and every process of a sweep paid it (BENCHMARKS.md §3). Where the cache cannot be written, the
splits are made in memory as before.
"""

import functools
import os
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from harness.tasks.base import Budget, Splits, Target, Task
from harness.tasks.registry import register_task

SPLIT_SEED = 0  # fixes every split below; never the run's seed


CACHE_VERSION = 1  # bump when a split below changes


def cache_dir() -> Path:
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness"


def _cached(name: str, make: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """`make()` (arrays from scikit-learn), read from the cache when this scikit-learn version made it before."""
    path = (
        cache_dir()
        / f"{name}-v{CACHE_VERSION}-sklearn{metadata.version('scikit-learn')}-seed{SPLIT_SEED}.npz"
    )
    try:
        with np.load(path, allow_pickle=False) as stored:
            return tuple(stored[f"a{i}"] for i in range(len(stored.files)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # not there yet, or damaged: make it
    arrays = make()
    tmp = None
    try:  # written whole, then renamed: a process reading at the same time sees the old file or the new one
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
            np.savez(tmp, **{f"a{i}": a for i, a in enumerate(arrays)})
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
    except OSError:  # a read-only or full disk: no cache, same data
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    return arrays


def _make_digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return tuple(train_test_split(x / 16.0, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y))


@functools.cache
def _digits() -> tuple[np.ndarray, ...]:
    """Pixels / 16 in [0, 1]; a stratified 80/20 split: 1,437 train, 360 validation."""
    return _cached("digits", _make_digits)


def _make_cancer() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=SPLIT_SEED, stratify=y))


def _tensors(x: np.ndarray, y: np.ndarray, y_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=y_dtype)


@register_task
class LogregCancer(Task):
    """Logistic regression on the 569 breast-cancer samples (30 features, standardised on the train split)."""

    name = "logreg_cancer"
    classification = True
    default_budget = Budget(epochs=30)
    criterion = staticmethod(nn.functional.binary_cross_entropy_with_logits)

    def make_data(self) -> Splits:
        x_tr, x_va, y_tr, y_va = _cached("breast_cancer", _make_cancer)
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        norm = lambda a: (a - mean) / std  # noqa: E731 - train statistics only, no leak from validation
        return Splits(
            train=_tensors(norm(x_tr), y_tr[:, None], torch.float32),
            val=_tensors(norm(x_va), y_va[:, None], torch.float32),
        )

    def make_model(self) -> nn.Module:
        return nn.Linear(30, 1)

    def correct(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs > 0).float() == targets

    def target(self, splits: Splits) -> Target:
        return Target("val/accuracy", 0.97, higher_is_better=True)


class Digits(Task):
    """Shared data of the digits tasks."""

    classification = True
    default_budget = Budget(epochs=20)
    criterion = staticmethod(nn.functional.cross_entropy)
    image_shape: tuple[int, ...] = (64,)

    def make_data(self) -> Splits:
        x_tr, x_va, y_tr, y_va = _digits()
        train, val = _tensors(x_tr, y_tr, torch.long), _tensors(x_va, y_va, torch.long)
        return Splits(
            train=(train[0].reshape(-1, *self.image_shape), train[1]),
            val=(val[0].reshape(-1, *self.image_shape), val[1]),
        )

    def target(self, splits: Splits) -> Target:
        return Target("val/accuracy", 0.95, higher_is_better=True)


@register_task
class DigitsMLP(Digits):
    """MLP 64 -> 128 -> 128 -> 10 with ReLU on the 8x8 digits."""

    name = "digits_mlp"

    def make_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
        )


@register_task
class DigitsCNN(Digits):
    """A small CNN on the digits as 1x8x8 images: two 3x3 convolutions, max-pooling, a linear head."""

    name = "digits_cnn"
    image_shape = (1, 8, 8)
    default_budget = Budget(epochs=10)
    batched_form = "vmap"  # convolutions: not bitwise, within 1e-6 relative per step (README)

    def make_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
