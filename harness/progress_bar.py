"""A tqdm progress bar for one run: shown on a terminal, silent in logs, pipes and CI."""

import sys

from tqdm import tqdm

from harness.loop import Progress


class TqdmProgress(Progress):
    def __init__(self, total: int, description: str):
        self.bar = tqdm(
            total=total, desc=description, unit="step", leave=False, mininterval=0.25, file=sys.stderr
        )
        self._shown = 0

    def update(self, steps: int, loss: float) -> None:
        # tqdm rate-limits its own redraws; the postfix is only formatted when it would redraw.
        if self.bar.n + (steps - self._shown) >= self.bar.last_print_n + self.bar.miniters:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.bar.update(steps - self._shown)
        self._shown = steps

    def close(self) -> None:
        self.bar.close()


def progress_for(enabled: bool, total: int, description: str) -> Progress:
    """A bar only when asked for and stderr is a terminal."""
    if enabled and sys.stderr.isatty():
        return TqdmProgress(total, description)
    return Progress()
