"""`hydra/sweeper=harness` (the project's default): Hydra's basic sweeper with a cheaper check of the grid, done grid
points never launched, and its multirun.yaml redacted.

The basic sweeper composes every job's config before launching any (`validate_batch_is_legal`), so a grid of
thousands of points printed nothing until all of them were composed. This one checks the same thing at one
composition per distinct set of config-group choices (see compose.py) and otherwise is the basic sweeper: same grid,
same order, same batches, under any launcher. The compositions are kept for `hydra/launcher=batched`, which then does
not compose them again.

A sweep that continues its parent run knows which grid points are done (the sweep callback's state holds their
config hashes) before anything is launched: they are left out of every batch the launcher gets, so no launcher starts
a process, or a cluster an allocation, only to skip its point. Each left-out point still gets a JobReturn (its stored
loss as return value, as the job would have returned), so a batch's results keep one entry per job in grid order.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.harness_batched.compose import Composer

_composers: dict[int, Composer] = {}  # id(master config) -> its Composer, shared with the batched launcher


def composer_for(config_loader, master_config) -> Composer:
    """The sweep's Composer (one per master config, so the sweeper's compositions serve the launcher)."""
    key = id(master_config)
    if key not in _composers or _composers[key].master is not master_config:
        _composers[key] = Composer(config_loader, master_config)
    return _composers[key]


class HarnessBasicSweeper(BasicSweeper):
    """The basic sweeper, validating each batch at one composition per distinct group choices and launching only
    the grid points not done yet."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        composer_for(self.hydra_context.config_loader, self.config).validate(batch)

    def sweep(self, arguments: list[str]) -> Any:
        """BasicSweeper.sweep, with the done points left out of each launch and multirun.yaml redacted. Returns one
        list of JobReturns per batch, one per job of the batch (launched or done before), in grid order."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _save_redacted(self.config, sweep_dir / "multirun.yaml")
        done = self._done_points()
        returns: list[Sequence[JobReturn]] = []
        launched = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            todo = [job for job in batch if tuple(job) not in done]
            results = self.launcher.launch(todo, initial_job_idx=launched) if todo else []
            for result in results:
                _ = result.return_value  # as the basic sweeper: a failed job's exception is raised here
            launched += len(todo)
            returns.append(_in_grid_order(batch, results, done, str(self.config.hydra.job.name)))
        return returns

    def _done_points(self) -> dict[tuple[str, ...], float | None]:
        """The grid's jobs whose point the continued parent run holds done (overrides -> the job's return value), said
        in one line and written to the progress file as skipped; empty for a sweep that resumes nothing."""
        state = _sweep_state(self.hydra_context)
        if state is None or not state.completed:
            return {}
        from harness.sweep import output, progress
        from harness.sweep.run import objective

        jobs = [tuple(job) for batch in self.overrides for job in batch]
        hashes = _config_hashes(composer_for(self.hydra_context.config_loader, self.config), jobs)
        done = {
            job: objective(state.completed[hashes[job]]) for job in jobs if hashes.get(job) in state.completed
        }
        if done:
            left = len(jobs) - len(done)
            said = f"{len(done)} of {len(jobs)} grid points already done (not launched): launching the other {left}"
            if not left:
                said = f"all {len(jobs)} grid points already done: nothing to launch"
            output.logger(__name__, Path(self.config.hydra.sweep.dir)).info(f"[sweep] {said}")
            progress.report_many(state, [(progress.SKIPPED, list(job), "") for job in done])
        return done


def _sweep_state(hydra_context):
    """The open SweepState of the harness's sweep callback (the one with `open_late`), or None without one."""
    for callback in getattr(hydra_context.callbacks, "callbacks", []):
        if hasattr(callback, "open_late"):
            return callback.state
    return None


def _config_hashes(composer: Composer, jobs: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each job's config hash, from its config as the job will compose it. A job that does not compose is left out:
    it is launched, and fails in Hydra's words as any launcher would make it."""
    from harness.config import config_hash, to_config

    hashes = {}
    for job in jobs:
        try:
            hashes[job] = config_hash(to_config(composer.job_config(job)))
        except Exception:  # noqa: BLE001 - the job is launched and its own composition says what is wrong
            continue
    return hashes


def _in_grid_order(
    batch: Sequence[Sequence[str]], results: Sequence[JobReturn], done: dict, task_name: str
) -> list[JobReturn]:
    """The batch's JobReturns in grid order: the launched jobs' own, and for each done point one made here."""
    launched = iter(results)
    returns = []
    for job in batch:
        if tuple(job) in done:
            returns.append(
                JobReturn(
                    overrides=list(job),
                    task_name=task_name,
                    status=JobStatus.COMPLETED,
                    _return_value=done[tuple(job)],
                )
            )
        else:
            returns.append(next(launched))
    return returns


def _save_redacted(config, path: Path) -> None:
    """Hydra's multirun.yaml (the sweep's whole config) with the credentials of every URI in it replaced: a
    tracking URI typed with its password would otherwise be written there as typed."""
    from harness.tracking.record import redact_config

    OmegaConf.save(OmegaConf.create(redact_config(OmegaConf.to_container(config, resolve=False))), path)
