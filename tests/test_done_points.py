"""The harness sweeper leaves the grid points a continued parent run holds done out of every launch, under any
launcher; its multirun.yaml keeps no credentials."""

import pytest
from conftest import CONF_DIR, all_runs, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.harness_batched.sweeper import _in_grid_order, _save_redacted


def test_a_batch_keeps_one_return_per_job_in_grid_order_with_the_done_points_stored_loss():
    batch = [["seed=0"], ["seed=1"], ["seed=2"], ["seed=3"]]
    done = {("seed=0",): 0.5, ("seed=2",): None}  # None: a diverged point, a failed trial for an HPO sweeper
    launched = [JobReturn(overrides=["seed=1"], status=JobStatus.COMPLETED, _return_value=0.25)]
    launched.append(JobReturn(overrides=["seed=3"], status=JobStatus.COMPLETED, _return_value=0.125))
    returns = _in_grid_order(batch, launched, done, "train")
    assert [r.overrides for r in returns] == batch
    assert [r.return_value for r in returns] == [0.5, 0.25, None, 0.125]
    assert returns[1] is launched[0] and returns[3] is launched[1]
    assert {r.status for r in returns} == {JobStatus.COMPLETED} and returns[0].task_name == "train"


def test_multirun_yaml_is_written_without_the_tracking_uris_password(tmp_path):
    secret = "http://alice:s3cr3t@127.0.0.1:5001"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracking.uri={secret}"], return_hydra_config=True)
    _save_redacted(cfg, tmp_path / "multirun.yaml")
    text = (tmp_path / "multirun.yaml").read_text()
    assert "s3cr3t" not in text and "http://***@127.0.0.1:5001" in text
    saved = OmegaConf.to_container(OmegaConf.load(tmp_path / "multirun.yaml"), resolve=False)
    # Everything else as Hydra writes it (interpolations unresolved): the URI redacted where it was given.
    expected = OmegaConf.to_container(cfg, resolve=False)
    expected["tracking"]["uri"] = "http://***@127.0.0.1:5001"
    expected["hydra"]["overrides"]["task"] = ["tracking.uri=http://***@127.0.0.1:5001"]
    expected["hydra"]["job"]["override_dirname"] = "tracking.uri=http://***@127.0.0.1:5001"
    assert saved == expected


@pytest.mark.slow  # two sweeps in processes of their own
def test_a_relaunch_under_the_basic_launcher_starts_only_the_job_not_done(store, tmp_path):
    grid = ["-m", "task=quadratic", "optimizer.lr=0.1,-1", "trainer.max_steps=10"]  # lr=-1 is refused: failed
    assert run_cli(*grid, "hydra.sweep.dir=first", cwd=tmp_path).returncode == 0
    again = run_cli(*grid, "hydra.sweep.dir=again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[sweep] 1 of 2 grid points already done (not launched): launching the other 1" in again.stderr
    # The basic launcher makes a directory per job it starts, numbered from 0: one, for lr=-1.
    assert sorted(p.name for p in (tmp_path / "again").iterdir() if p.is_dir()) == ["0"]
    assert "optimizer.lr=-1" in OmegaConf.load(tmp_path / "again" / "0" / ".hydra" / "overrides.yaml")
    runs = all_runs(store)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["-1.0", "-1.0", "0.1"]  # refused twice
