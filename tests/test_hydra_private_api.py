"""The private (or undocumented) Hydra APIs the project's plugins call, each called the way its call site calls it.

hydra-core is pinned `>=1.3.2,<1.4`, yet nothing in Hydra promises these stay as they are: `hydra._internal.*`,
`ConfigLoaderImpl._apply_overrides_to_config`, `hydra.core.utils._save_config`, the helpers of `hydra.core.utils`
and the attributes of Hydra's own objects (`config_loader.repository`, `hydra_context.callbacks.callbacks`). Some
call sites fall back silently when an attribute is missing (compose.py then composes every job; the launcher then
finds no sweep callback), so a Hydra upgrade that changes them must fail here, by name, rather than go slow or
quietly skip work. Each test names its call site in a comment.
"""

import copy
import logging
import os
from datetime import datetime

import pytest
from conftest import CONF_DIR
from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    _save_config,
    configure_log,
    env_override,
    filter_overrides,
    setup_globals,
)
from hydra.errors import ConfigCompositionException, HydraException
from hydra.experimental.callback import Callback
from hydra.types import HydraContext, RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.harness_batched.compose import Composer
from hydra_plugins.harness_batched.config import HarnessSweeperConf
from hydra_plugins.harness_batched.launcher import _sweep_callback


@pytest.fixture
def hydra_loader(hydra_restore_singletons):
    """Hydra's config loader over the project's conf/ and the sweep's master config, as `-m` builds them."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        yield loader, loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)


def job_part(full: DictConfig) -> DictConfig:
    """What compose.py's Composer.task_base keeps of a sweep config: everything but the hydra node."""
    with read_write(full), open_dict(full):
        del full["hydra"]
    return full


def parse(loader, *lines: str):
    return OverridesParser.create(config_loader=loader).parse_overrides(list(lines))


# --- hydra._internal.config_loader_impl.ConfigLoaderImpl ---------------------------------------------------------


def test_the_loader_is_config_loader_impl_with_a_repository_that_knows_the_groups(hydra_loader):
    # compose.py Composer.__init__: `getattr(config_loader, "repository", None).group_exists` (else: every override
    # counts as structural, each job composed alone: right but slow, and silent).
    loader, master = hydra_loader
    assert isinstance(loader, ConfigLoaderImpl)
    assert loader.repository.group_exists("optimizer")
    assert loader.repository.group_exists("task")
    assert loader.repository.group_exists("hydra/launcher")
    assert not loader.repository.group_exists("optimizer.lr")
    assert not loader.repository.group_exists("seed")
    composer = Composer(loader, master)
    assert composer._group_exists == loader.repository.group_exists  # the repository's, not the fallback
    split = composer.split(["optimizer=adam", "optimizer.lr=0.3", "seed=2", "hydra.job.chdir=false"])
    assert split.structural == ("optimizer=adam", "hydra.job.chdir=false")
    assert [o.input_line for o in split.leaf] == ["optimizer.lr=0.3", "seed=2"]


def test_load_sweep_config_gives_the_full_job_config_with_its_hydra_node(hydra_loader):
    # compose.py Composer.full/compose_alone: `loader.load_sweep_config(master, list(overrides))`; task_base then
    # deletes "hydra", launcher._write_job_dir reads `.hydra` from it.
    loader, master = hydra_loader
    full = loader.load_sweep_config(master, ["optimizer=adam", "seed=3"])
    assert full.seed == 3
    assert full.optimizer.name == "adam"
    assert full.hydra.overrides.task == ["optimizer=adam", "seed=3"]
    assert "sweep" in full.hydra and "job" in full.hydra
    assert list(master.hydra.overrides.task) == []  # the master config is left as it was


def test_apply_overrides_to_config_gives_what_hydra_composes(hydra_loader):
    # compose.py Composer.job_config: `ConfigLoaderImpl._apply_overrides_to_config(list(split.leaf), cfg)` on a copy
    # of the composition of the structural overrides gives the config Hydra composes from all of them.
    loader, master = hydra_loader
    leaf = ["optimizer.lr=0.3", "seed=2", "+task.kwargs.hidden=64", "optimizer.betas=[0.8,0.9]"]
    cfg = job_part(loader.load_sweep_config(master, ["optimizer=adam"]))
    result = ConfigLoaderImpl._apply_overrides_to_config(parse(loader, *leaf), cfg)
    assert result is None  # in place
    assert cfg.optimizer.lr == 0.3 and cfg.seed == 2 and cfg.task.kwargs.hidden == 64
    assert list(cfg.optimizer.betas) == [0.8, 0.9]
    expected = job_part(loader.load_sweep_config(master, ["optimizer=adam", *leaf]))
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected)


def test_apply_overrides_to_config_deletes_and_refuses_as_hydra_does(hydra_loader):
    # compose.py Composer.validate: `ConfigLoaderImpl._apply_overrides_to_config([override], target)` must raise
    # Hydra's ConfigCompositionException for a job Hydra would refuse (the job is then composed alone).
    loader, master = hydra_loader
    cfg = job_part(loader.load_sweep_config(master, []))
    ConfigLoaderImpl._apply_overrides_to_config(parse(loader, "+extra=1", "~extra"), cfg)
    assert "extra" not in cfg
    for bad in ("seed=oops", "no_such_key=1", "+seed=1", "~no_such_key", "optimizer@other=adam"):
        with pytest.raises(ConfigCompositionException):
            ConfigLoaderImpl._apply_overrides_to_config(parse(loader, bad), job_part(copy.deepcopy(master)))


def test_override_objects_expose_what_the_composer_reads(hydra_loader):
    # compose.py Composer._is_structural / _plain_assignments / validate: key_or_group, package, is_add,
    # is_delete, is_force_add, value(), input_line of hydra.core.override_parser.types.Override.
    loader, _ = hydra_loader
    group, leaf, add, force, delete, packaged, listed = parse(
        loader, "optimizer=adam", "optimizer.lr=0.1", "+a=1", "++b=2", "~c", "task@x=quadratic", "l=[1,2]"
    )
    assert (group.key_or_group, group.package, group.value()) == ("optimizer", None, "adam")
    assert (leaf.key_or_group, leaf.value(), leaf.input_line) == ("optimizer.lr", 0.1, "optimizer.lr=0.1")
    assert add.is_add() and not add.is_force_add() and not add.is_delete()
    assert force.is_force_add() and not force.is_add()
    assert delete.is_delete() and delete.key_or_group == "c"
    assert packaged.package == "x" and packaged.key_or_group == "task"
    assert listed.value() == [1, 2]


# --- hydra.core.utils --------------------------------------------------------------------------------------------


def test_save_config_writes_the_yaml_hydra_writes_creating_the_directories(tmp_path):
    # launcher.py BatchedLauncher._write_job_dir: `_save_config(cfg, "config.yaml", out)` (and hydra.yaml,
    # overrides.yaml from `OmegaConf.create(list(overrides))`) into <sweep dir>/<subdir>/.hydra, not yet existing.
    out = tmp_path / "sweep" / "3" / ".hydra"
    cfg = OmegaConf.create({"seed": 2, "optimizer": {"name": "adam", "lr": 0.3}})
    _save_config(cfg, "config.yaml", out)
    _save_config(OmegaConf.create(["optimizer=adam", "seed=2"]), "overrides.yaml", out)
    assert (out / "config.yaml").read_text(encoding="utf-8") == OmegaConf.to_yaml(cfg)
    assert (out / "config.yaml").read_text(
        encoding="utf-8"
    ) == "seed: 2\noptimizer:\n  name: adam\n  lr: 0.3\n"
    assert (out / "overrides.yaml").read_text(encoding="utf-8") == "- optimizer=adam\n- seed=2\n"


def test_job_return_gives_the_value_or_raises_the_failure():
    # launcher.py _Hooks.job_return: JobReturn(overrides=, working_dir=, task_name=, status=, _return_value=);
    # BasicSweeper.sweep reads `r.return_value`, which must raise a failed job's exception.
    done = JobReturn(
        overrides=["seed=1"],
        working_dir="/p",
        task_name="train",
        status=JobStatus.COMPLETED,
        _return_value=0.5,
    )
    assert done.return_value == 0.5 and done.overrides == ["seed=1"] and done.task_name == "train"
    error = ValueError("diverged")
    failed = JobReturn(overrides=["seed=2"], status=JobStatus.FAILED, _return_value=error)
    with pytest.raises(ValueError, match="diverged"):
        failed.return_value  # noqa: B018 - the property raises


def test_filter_overrides_drops_the_hydra_ones():
    # launcher.py _Hooks.on_job_start: the job's log line, `' '.join(filter_overrides(job.overrides))`.
    overrides = ["optimizer=adam", "hydra.job.chdir=false", "seed=1", "hydra/launcher=batched"]
    assert list(filter_overrides(overrides)) == ["optimizer=adam", "seed=1", "hydra/launcher=batched"]


def test_env_override_sets_the_variables_and_restores_them(monkeypatch):
    # launcher.py BatchedLauncher.launch: `with env_override(OmegaConf.to_container(hydra.job.env_set, ...))`.
    monkeypatch.setenv("HARNESS_T_SET", "before")
    monkeypatch.delenv("HARNESS_T_NEW", raising=False)
    with env_override({"HARNESS_T_SET": "inside", "HARNESS_T_NEW": "1"}):
        assert os.environ["HARNESS_T_SET"] == "inside" and os.environ["HARNESS_T_NEW"] == "1"
    assert os.environ["HARNESS_T_SET"] == "before"
    assert "HARNESS_T_NEW" not in os.environ


def test_setup_globals_registers_the_resolvers_sweep_dirs_use():
    # launcher.py BatchedLauncher.launch: `setup_globals()` before reading hydra.sweep.dir (`multirun/${now:...}`).
    setup_globals()
    assert OmegaConf.has_resolver("now") and OmegaConf.has_resolver("hydra")
    assert OmegaConf.create({"d": "multirun/${now:%Y}"}).d == f"multirun/{datetime.now():%Y}"


@pytest.fixture
def logging_restored():
    root = logging.getLogger()
    named = logging.getLogger("hydra_plugins.harness_batched")
    saved = root.level, list(root.handlers), named.level
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    named.setLevel(saved[2])


def test_configure_log_applies_the_projects_hydra_logging_and_verbose(hydra_loader, logging_restored):
    # launcher.py BatchedLauncher.launch: `configure_log(config.hydra.hydra_logging, config.hydra.verbose)`, with
    # the project's hydra/hydra_logging=redacted (a filter on the console handler) and `hydra.verbose=<logger>`.
    _, master = hydra_loader
    configure_log(master.hydra.hydra_logging, "hydra_plugins.harness_batched")
    filters = [type(f).__name__ for h in logging.getLogger().handlers for f in h.filters]
    assert "RedactingFilter" in filters
    assert logging.getLogger("hydra_plugins.harness_batched").level == logging.DEBUG


# --- hydra._internal.core_plugins.basic_launcher.BasicLauncher ---------------------------------------------------


def test_basic_launcher_runs_jobs_set_up_as_the_batched_launcher_sets_it_up(hydra_loader, tmp_path):
    # launcher.py BatchedLauncher._launch_basic: `BasicLauncher()`, `.setup(hydra_context=, task_function=,
    # config=)`, `.launch(job_overrides, initial_job_idx)` for a task function other than the harness's.
    loader, _ = hydra_loader
    master = loader.load_configuration(
        "config",
        overrides=[f"hydra.sweep.dir={tmp_path}", "hydra/job_logging=disabled"],
        run_mode=RunMode.MULTIRUN,
    )
    basic = BasicLauncher()
    basic.setup(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks()),
        task_function=lambda cfg: (cfg.seed, cfg.optimizer.name),
        config=master,
    )
    returns = basic.launch([["seed=5"], ["seed=6", "optimizer=adam"]], initial_job_idx=3)
    assert [r.return_value for r in returns] == [(5, master.optimizer.name), (6, "adam")]
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2
    assert [r.hydra_cfg.hydra.job.num for r in returns] == [3, 4]
    assert OmegaConf.load(tmp_path / "4" / ".hydra" / "overrides.yaml") == ["seed=6", "optimizer=adam"]


# --- hydra._internal.core_plugins.basic_sweeper.BasicSweeper ------------------------------------------------------


def test_split_arguments_expands_the_grid_in_the_basic_sweepers_order(hydra_loader):
    # harness/sweep/grid.py expand_grid: `[batch] = BasicSweeper.split_arguments(parsed, max_batch_size=None)`.
    loader, _ = hydra_loader
    parsed = parse(loader, "optimizer=sgd,adam", "seed=0,1", "trainer.max_steps=5")
    [batch] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    assert batch == [
        ["optimizer=sgd", "seed=0", "trainer.max_steps=5"],
        ["optimizer=sgd", "seed=1", "trainer.max_steps=5"],
        ["optimizer=adam", "seed=0", "trainer.max_steps=5"],
        ["optimizer=adam", "seed=1", "trainer.max_steps=5"],
    ]
    assert [len(b) for b in BasicSweeper.split_arguments(parsed, max_batch_size=3)] == [3, 1]
    with pytest.raises(HydraException):
        BasicSweeper.split_arguments(parse(loader, "optimizer.lr=interval(0.1,1)"), max_batch_size=None)


def test_both_sweepers_targets_name_basic_sweeper(hydra_loader):
    # harness/sweep/grid.py expand_grid: `"BasicSweeper" in hydra.sweeper._target_` tells a grid sweeper from
    # optuna's; Hydra's basic sweeper is stored under that class path, the harness sweeper is the default.
    loader, master = hydra_loader
    assert master.hydra.sweeper._target_ == "hydra_plugins.harness_batched.sweeper.HarnessBasicSweeper"
    basic = loader.load_configuration("config", overrides=["hydra/sweeper=basic"], run_mode=RunMode.MULTIRUN)
    assert basic.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert "BasicSweeper" in master.hydra.sweeper._target_


def test_the_harness_sweeper_is_built_from_its_conf_as_the_basic_sweeper():
    # sweeper.py HarnessBasicSweeper(BasicSweeper): Hydra instantiates it with config.py's HarnessSweeperConf fields,
    # which BasicSweeper.__init__ must accept and keep (max_batch_size, params). The class is resolved from its
    # target as Hydra resolves it: Hydra's plugin scan re-executes the plugin modules (and BasicSweeper's), so a
    # class imported before a scan is not the one `super(BasicSweeper, self)` inside BasicSweeper expects.
    Plugins.instance()
    sweeper_class = get_class(HarnessSweeperConf._target_)
    assert issubclass(sweeper_class, get_class("hydra._internal.core_plugins.basic_sweeper.BasicSweeper"))
    fields = {k: v for k, v in vars(HarnessSweeperConf()).items() if k != "_target_"}
    sweeper = sweeper_class(**{**fields, "max_batch_size": 2, "params": {"seed": "0,1"}})
    assert sweeper.max_batch_size == 2 and sweeper.params == {"seed": "0,1"}
    assert sweeper.hydra_context is None and sweeper.config is None  # set by BasicSweeper.setup


def test_the_basic_sweeper_validates_each_batch_before_launching_it(hydra_sweep_runner, tmp_path):
    # sweeper.py HarnessBasicSweeper.validate_batch_is_legal: BasicSweeper.sweep must call it on each batch before
    # `launcher.launch`, after setup stored `self.hydra_context` (its config_loader) and `self.config`.
    ran = []
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: ran.append(cfg.foo),
        config_path="configs",
        config_name="compose.yaml",
        overrides=["hydra/sweeper=harness", "hydra/launcher=batched", "group1=file1,no_such_option"],
        temp_dir=tmp_path,
    )
    with pytest.raises(HydraException, match="no_such_option"):
        with sweep:
            pass
    assert ran == []  # refused before the first job ran


# --- hydra._internal.callbacks.Callbacks (hydra_context.callbacks) -----------------------------------------------

CALLS: list[tuple] = []


class LateCallback(Callback):
    """A callback with `open_late`, as the harness sweep callback has (instantiated by Hydra from its target)."""

    late = None

    def open_late(self):
        CALLS.append(("open_late",))

    def announce(self, details=""):  # the sweep's start line, said by the launcher once it knows its groups
        CALLS.append(("announce", details))

    def on_job_start(self, config, *, task_function, **kwargs):
        CALLS.append(("on_job_start", config.get("seed"), task_function))

    def on_job_end(self, config, job_return, **kwargs):
        CALLS.append(("on_job_end", job_return.return_value))


def test_callbacks_keeps_the_instantiated_callbacks_and_forwards_job_events():
    # launcher.py _sweep_callback: `getattr(hydra_context.callbacks, "callbacks", [])`; _Hooks: `callbacks.on_job_start
    # (config=, task_function=)` and `callbacks.on_job_end(config=, job_return=)`.
    CALLS.clear()
    target = f"{__name__}.{LateCallback.__name__}"
    callbacks = Callbacks(OmegaConf.create({"hydra": {"callbacks": {"late": {"_target_": target}}}}))
    [callback] = callbacks.callbacks
    assert type(callback).__name__ == "LateCallback"
    assert _sweep_callback(HydraContext(config_loader=None, callbacks=callbacks)) is callback
    callbacks.on_job_start(config=OmegaConf.create({"seed": 4}), task_function=print)
    callbacks.on_job_end(
        config=OmegaConf.create({"seed": 4}),
        job_return=JobReturn(status=JobStatus.COMPLETED, _return_value=7),
    )
    assert CALLS == [("on_job_start", 4, print), ("on_job_end", 7)]


def test_a_multirun_hands_the_batched_launcher_its_configured_callbacks(hydra_sweep_runner, tmp_path):
    # launcher.py BatchedLauncher.launch: the HydraContext Hydra passes to setup carries the configured callbacks,
    # found by _sweep_callback (the harness's sweep callback opens its parent run there, `open_late`).
    CALLS.clear()
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: cfg.foo,
        config_path="configs",
        config_name="compose.yaml",
        overrides=[
            "hydra/launcher=batched",
            f"+hydra.callbacks.late._target_={__name__}.{LateCallback.__name__}",
            "group1=file1,file2",
        ],
        temp_dir=tmp_path,
    )
    with sweep:
        assert [r.return_value for r in sweep.returns[0]] == [10, 20]
    assert CALLS[0] == ("open_late",)
    assert [c[0] for c in CALLS].count("on_job_end") == 2
