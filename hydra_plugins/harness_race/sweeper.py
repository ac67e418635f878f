"""`hydra/sweeper=race`: the grid a user types, raced over its seeds instead of trained whole.

The grid is the basic sweeper's (same expansion, same order); its seed list is the most seeds a configuration may
get. Each round of harness.sweep.race is one launch of the configured launcher (the batched launcher trains a round
as batched groups), inside the one multirun, so every trial is an ordinary child run of the sweep's one parent run.
After each round the trials are tagged with their round and the parent gets the rounds so far (record.py). A race
killed and run again replays its rounds: the grid points the continued parent holds done are not launched (the
harness sweeper's `_done_points`) and their final validation loss comes from the store, so the same eliminations
are made again and the race goes on where it was. multirun.yaml is written redacted, as the harness sweeper writes it.

Named `...BasicSweeper`: harness.sweep.grid recognises a grid it can expand (the parent's grid size, params and grid
artifact; the refusal of an empty grid) by that name in `hydra.sweeper._target_`, and this is that grid.
"""

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from hydra_plugins.harness_batched.sweeper import HarnessBasicSweeper, _in_grid_order, _save_redacted

log = logging.getLogger(__name__)


class RaceBasicSweeper(HarnessBasicSweeper):
    """The basic sweeper's grid, launched round by round as harness.sweep.race decides."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        first_seeds: int = 2,
        seeds_per_round: int = 2,
        confidence: float = 0.95,
        threshold: float = 0.95,
        seed_key: str = "seed",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        from harness.sweep.race import Settings

        self.settings = Settings(first_seeds, seeds_per_round, confidence, threshold)
        self.seed_key = seed_key

    @staticmethod
    def check_options(first_seeds=2, seeds_per_round=2, confidence=0.95, threshold=0.95, **_) -> None:
        """Range checks of hydra.sweeper.*; the sweep callback calls this before it creates the parent run."""
        from harness.sweep.race import Settings

        Settings(first_seeds, seeds_per_round, confidence, threshold)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from harness.sweep.race import Race, race_grid
        from hydra_plugins.harness_race.record import Recorder

        points = self._grid(arguments)
        grid = race_grid(points, self.seed_key, self._defaults())
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _save_redacted(self.config, sweep_dir / "multirun.yaml")
        self.overrides = [points]  # what the harness sweeper's done points are looked up in
        done = self._done_points()
        race = Race(grid.candidates, grid.seeds, self.settings)
        recorder = Recorder(self.hydra_context)
        returns, index = [], 0
        while trials := race.next_trials():
            batch = [grid.jobs[trial] for trial in trials]
            # Points a continued parent holds done are not launched: their stored loss is their return value.
            todo = [job for job in batch if tuple(job) not in done]
            results = self._launch(todo, index)
            index += len(todo)
            values = [r.return_value for r in results]  # as the basic sweeper: a job that raised, raises here
            results = _in_grid_order(batch, results, done, str(self.config.hydra.job.name))
            returns.extend(results)
            events = race.record((c, s, r.return_value) for (c, s), r in zip(trials, results))
            log.info(
                f"Race round {race.round}: {len(batch)} trials ({len(values)} launched), {len(events)} decisions"
            )
            recorder.round(race, trials, batch, events)
            if race.round == 1:
                self._halving_off()
        for choice in race.choices():
            print(f"[race] {choice.sentence()}", file=sys.stderr, flush=True)
        print(f"[race] {race.trials_run()} of {grid.size} trials trained", file=sys.stderr, flush=True)
        recorder.finish(race)
        return [returns]

    def _halving_off(self) -> None:
        """Successive halving (the batched launcher's rungs) applies to round 1 only (harness.sweep.race)."""
        options = getattr(self.launcher, "options", None)
        if getattr(options, "halving", None) is not None:
            self.launcher.options = dataclasses.replace(options, halving=None)

    def _grid(self, arguments: list[str]) -> list[list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        # As the basic sweeper: its params, then the command line.
        params = [f"{k}={v}" for k, v in self.params.items()]
        overrides = parser.parse_overrides(params + list(arguments))
        [grid] = self.split_arguments(overrides, max_batch_size=None)
        return grid

    def _defaults(self) -> dict[str, str]:
        """The task and optimizer of a grid point that does not choose them: the composed config's."""
        return {
            key: str(OmegaConf.select(self.config, f"{key}.name", default=""))
            for key in ("task", "optimizer")
        }

    def _launch(self, batch: list[list[str]], index: int) -> list[JobReturn]:
        """A round: one launch (max_batch_size: launches of at most that many jobs)."""
        size = self.max_batch_size or max(len(batch), 1)
        results = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            self.validate_batch_is_legal(chunk)
            results.extend(self.launcher.launch(chunk, initial_job_idx=index + start))
        return results
