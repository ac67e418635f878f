"""Compose once per distinct set of config-group choices; derive each job's config from that by its leaf overrides.

Hydra composes every job from scratch (search path, defaults list, merges, schema checks) although in a grid
most jobs differ from each other only in leaf values (`optimizer.lr=0.1`, `seed=2`). A job's overrides split into
*structural* ones, which change what is composed (`optimizer=adam`, `+sweep=demo`, `task@x=...`, `hydra.*`), and
*leaf* ones. Hydra applies leaf overrides after merging the defaults list, in the order given, with
`ConfigLoaderImpl._apply_overrides_to_config`; applying them, with that same function, to a copy of the config
composed from the structural overrides alone gives the same config (typed nodes reject wrong types the same way).
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, open_dict, read_write


@dataclass(frozen=True)
class SplitOverrides:
    structural: tuple[str, ...]  # composed: one composition per distinct tuple
    leaf: tuple[Override, ...]  # applied to a copy of that composition


class Composer:
    """Composes the configs of one sweep's jobs, caching one composition per distinct structural overrides."""

    def __init__(self, config_loader, master_config: DictConfig):
        self.loader, self.master = config_loader, master_config
        self.parser = OverridesParser.create(config_loader=config_loader)
        self._parsed: dict[str, Override] = {}
        self._full: dict[tuple[str, ...], DictConfig] = {}
        self._task: dict[tuple[str, ...], DictConfig] = {}
        # structural overrides -> (the copy the last job's config was, the keys its leaf overrides assigned)
        self._scratch: dict[tuple[str, ...], tuple[DictConfig, tuple[str, ...] | None]] = {}
        repository = getattr(config_loader, "repository", None)
        # Without a repository to ask (another Hydra version) every override counts as structural: each job is then
        # composed on its own, as Hydra does, which is slow but right.
        self._group_exists = repository.group_exists if repository is not None else (lambda _: True)
        self._groups: dict[str, bool] = {}

    def parse(self, line: str) -> Override:
        if line not in self._parsed:
            [self._parsed[line]] = self.parser.parse_overrides([line])
        return self._parsed[line]

    def split(self, overrides: Sequence[str]) -> SplitOverrides:
        structural, leaf = [], []
        for line in overrides:
            override = self.parse(line)
            (structural.append(line) if self._is_structural(override) else leaf.append(override))
        return SplitOverrides(tuple(structural), tuple(leaf))

    def _is_structural(self, override: Override) -> bool:
        key = override.key_or_group
        if override.package is not None or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            return True
        if key not in self._groups:
            self._groups[key] = bool(self._group_exists(key))
        return self._groups[key]

    def full(self, structural: tuple[str, ...]) -> DictConfig:
        """The complete config (hydra node included) composed from the structural overrides; cached."""
        if structural not in self._full:
            self._full[structural] = self.loader.load_sweep_config(self.master, list(structural))
        return self._full[structural]

    def task_base(self, structural: tuple[str, ...]) -> DictConfig:
        """The job's part of `full(structural)`: what the task function receives, before leaf overrides."""
        if structural not in self._task:
            task = copy.deepcopy(self.full(structural))
            with read_write(task), open_dict(task):
                del task["hydra"]
            self._task[structural] = task
        return self._task[structural]

    def job_config(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config (no hydra node), as Hydra would compose it. Raises Hydra's composition errors.

        Valid until the next call: jobs that assign plain values to the same keys as the job before them (a grid's
        jobs do) share one copy of their composition, each assignment overwriting the last; a copy of the whole
        config per job was most of deriving a grid's configs (BENCHMARKS.md §3)."""
        split = self.split(overrides)
        keys = _plain_assignments(split.leaf)
        scratch = self._scratch.pop(split.structural, None) if keys is not None else None
        if scratch is None or scratch[1] != keys:
            scratch = (copy.deepcopy(self.task_base(split.structural)), keys)
        cfg = scratch[0]
        ConfigLoaderImpl._apply_overrides_to_config(list(split.leaf), cfg)
        if (
            keys is not None
        ):  # kept only once the job's values are in: a refused value leaves no half-made copy
            self._scratch[split.structural] = scratch
        return cfg

    def compose_alone(self, overrides: Sequence[str]) -> DictConfig:
        """Hydra's own composition of one job (hydra node included): for jobs derivation cannot handle."""
        return self.loader.load_sweep_config(self.master, list(overrides))

    def validate(self, batch: Sequence[Sequence[str]]) -> None:
        """What the basic sweeper's `validate_batch_is_legal` checks, at one composition per distinct structural
        overrides plus one leaf application per distinct leaf override. Raises Hydra's own error for the first
        job that cannot be composed (by composing that job as Hydra does)."""
        checked: set[tuple[tuple[str, ...], str]] = set()
        scratch: dict[
            tuple[str, ...], DictConfig
        ] = {}  # one copy per composition: plain assignments overwrite
        for overrides in batch:
            split = self.split(overrides)
            try:
                base = self.task_base(split.structural)
                for override in split.leaf:
                    if (split.structural, override.input_line) in checked:
                        continue
                    if override.is_add() or override.is_delete() or override.is_force_add():
                        target = copy.deepcopy(base)  # these change the structure: each on a fresh copy
                    else:
                        if split.structural not in scratch:
                            scratch[split.structural] = copy.deepcopy(base)
                        target = scratch[split.structural]
                    ConfigLoaderImpl._apply_overrides_to_config([override], target)
                    checked.add((split.structural, override.input_line))
            except Exception:  # noqa: BLE001 - Hydra's own composition decides, and words the error
                self.compose_alone(overrides)  # composes: the launcher will compose this job alone too


def _plain_assignments(leaf: Sequence[Override]) -> tuple[str, ...] | None:
    """The keys the leaf overrides assign, when each assigns one plain value (a number, a string, a bool, null) to an
    existing key; None otherwise (an addition, a deletion, a list or a dict, which merges into what is there)."""
    keys = []
    for override in leaf:
        if override.is_add() or override.is_delete() or override.is_force_add():
            return None
        value = override.value()
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return None
        keys.append(override.key_or_group)
    return tuple(keys)
