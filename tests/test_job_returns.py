"""A long sweep does not hold every job's configs: Hydra's basic launcher and sweeper keep each job's JobReturn
until the sweep ends, each with deep copies of the job's config and of the hydra config."""

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from harness.sweep.callback import SweepCallback


def test_the_sweep_callback_drops_a_finished_jobs_configs_and_keeps_its_result():
    config = OmegaConf.create({"seed": 1, "hydra": {"job": {"name": "train"}}})
    ret = JobReturn(
        overrides=["seed=1"], cfg=config, hydra_cfg=config, status=JobStatus.COMPLETED, _return_value=0.5
    )
    SweepCallback().on_job_end(config, ret)
    assert (ret.cfg, ret.hydra_cfg) == (None, None)
    assert (ret.return_value, ret.overrides, ret.status) == (0.5, ["seed=1"], JobStatus.COMPLETED)
