"""The race sweeper's schema and defaults, stored in Hydra's ConfigStore (one dataclass, a comment per field)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RaceSweeperConf:
    _target_: str = "hydra_plugins.harness_race.sweeper.RaceBasicSweeper"
    # As the basic sweeper: the grid, e.g. `optimizer: sgd,adam` (named sweeps in conf/sweep/ set this). The seed
    # list in it is the most seeds a configuration may get, in the order given.
    params: dict[str, str] | None = None
    # Jobs per launch within a round (null: each round is one launch, so the batched launcher batches it whole).
    max_batch_size: int | None = None
    # Seeds every configuration trains in round 1 (at least 2: a paired test needs two).
    first_seeds: int = 2
    # Seeds each configuration still racing gets in each later round.
    seeds_per_round: int = 2
    # Within an optimizer: a configuration is eliminated when the one-sided paired t-test against the optimizer's
    # leader rejects at 1 - confidence.
    confidence: float = 0.95
    # Between optimizers: an optimizer is settled (no more seeds) once the winner's probability of a lower mean
    # loss against it reaches this.
    threshold: float = 0.95
    # The swept key that numbers the seeds.
    seed_key: str = "seed"


ConfigStore.instance().store(group="hydra/sweeper", name="race", node=RaceSweeperConf, provider="harness")
