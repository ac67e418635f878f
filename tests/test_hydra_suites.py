"""Hydra's own launcher and sweeper test suites, run against `hydra/launcher=batched` and `hydra/sweeper=harness`.

Hydra ships them in `hydra.test_utils.launcher_common_tests`; its launcher plugins (hydra-joblib-launcher's
tests/test_joblib_launcher.py) run them by subclassing each suite and parametrizing it over the launcher, as here.
Their fixtures (`hydra_sweep_runner`, `hydra_restore_singletons`) come from `hydra.extra.pytest_plugin`, which
hydra-core registers with pytest through its `pytest11` entry point (`hydra_pytest`): nothing to import here, but
running pytest with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 would need `-p hydra.extra.pytest_plugin`.

The suites' task functions are not the harness's, so the batched launcher runs their jobs the basic launcher's way
(BatchedLauncher._launch_basic): what is checked is that the plugins behave as Hydra's launchers and sweepers must
(job dirs, overrides, batches, working dirs, task names), under this project's plugin code and defaults.
"""

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.harness_batched.launcher import BatchedLauncher
from hydra_plugins.harness_batched.sweeper import HarnessBasicSweeper

HARNESS_SWEEPER = "hydra/sweeper=harness"
# The integration suite's task config (its primary config.yaml): Hydra 1.1+ wants `override` for a group that
# Hydra's own defaults already set.
INTEGRATION_TASK_CFG = {
    "defaults": [
        {"override hydra/launcher": "batched"},
        {"override hydra/sweeper": "harness"},
        {"override hydra/hydra_logging": "hydra_debug"},
        {"override hydra/job_logging": "disabled"},
    ]
}


@pytest.fixture(autouse=True)
def _the_suites_hydra_defaults(hydra_restore_singletons):
    """The suites are written for Hydra's defaults without a version_base (a job changes into its output directory,
    where its log file goes). Hydra keeps version_base in a process-wide singleton, and a test that ran
    harness.train in this process left it at 1.3 (no chdir): set it back for these tests (restored afterwards)."""
    from hydra import version

    version.VersionBase.instance().setbase(version.__compat_version__)


def test_the_launcher_and_the_sweeper_are_discovered_as_hydra_plugins():
    assert BatchedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]
    assert HarnessBasicSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


# Each parameter is a fresh list: the suites extend the `overrides` they are given.
@pytest.mark.parametrize(
    "launcher_name, overrides",
    [
        pytest.param("batched", [], id="batched-launcher+basic-sweeper"),
        pytest.param("batched", [HARNESS_SWEEPER], id="batched-launcher+harness-sweeper"),
        pytest.param("basic", [HARNESS_SWEEPER], id="basic-launcher+harness-sweeper"),
    ],
)
class TestBatchedLauncher(LauncherTestSuite):
    """Hydra's launcher suite (hydra/launcher/batched is stored by hydra_plugins/harness_batched/config.py)."""


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [
        pytest.param(
            "batched",
            [HARNESS_SWEEPER, "hydra.sweeper.max_batch_size=2"],
            id="batched-launcher+harness-sweeper",
        ),
        pytest.param(
            "basic", [HARNESS_SWEEPER, "hydra.sweeper.max_batch_size=2"], id="basic-launcher+harness-sweeper"
        ),
        pytest.param("batched", ["hydra.sweeper.max_batch_size=2"], id="batched-launcher+basic-sweeper"),
    ],
)
class TestHarnessSweeperBatches(BatchedSweeperTestSuite):
    """Hydra's batched-sweeper suite: 6 jobs in 3 batches of 2 (the suite expects max_batch_size=2)."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(INTEGRATION_TASK_CFG, ["-m"], id="batched-launcher+harness-sweeper"),
    ],
)
@pytest.mark.slow  # 11 subprocesses, each importing torch when the launcher is built: ~30 s on 2 cores
class TestBatchedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: each test runs a generated @hydra.main app in a subprocess (`python task.py -m`)."""


def test_the_integration_suites_task_config_selects_the_projects_plugins(tmp_path, hydra_restore_singletons):
    # Else TestBatchedLauncherIntegration would pass on Hydra's basic launcher and sweeper.
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(INTEGRATION_TASK_CFG), encoding="utf-8")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.harness_batched.launcher.BatchedLauncher"
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.harness_batched.sweeper.HarnessBasicSweeper"
