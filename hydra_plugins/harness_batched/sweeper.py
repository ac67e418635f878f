"""`hydra/sweeper=harness` (the project's default): Hydra's basic sweeper with a cheaper check of the grid.

The basic sweeper composes every job's config before launching any (`validate_batch_is_legal`), so a grid of
thousands of points printed nothing until all of them were composed. This one checks the same thing at one
composition per distinct set of config-group choices (see compose.py) and otherwise is the basic sweeper: same grid,
same order, same batches, under any launcher. The compositions are kept for `hydra/launcher=batched`, which then does not compose them again.
"""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from hydra_plugins.harness_batched.compose import Composer

_composers: dict[int, Composer] = {}  # id(master config) -> its Composer, shared with the batched launcher


def composer_for(config_loader, master_config) -> Composer:
    """The sweep's Composer (one per master config, so the sweeper's compositions serve the launcher)."""
    key = id(master_config)
    if key not in _composers or _composers[key].master is not master_config:
        _composers[key] = Composer(config_loader, master_config)
    return _composers[key]


class HarnessBasicSweeper(BasicSweeper):
    """The basic sweeper, validating each batch at one composition per distinct group choices."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        composer_for(self.hydra_context.config_loader, self.config).validate(batch)
