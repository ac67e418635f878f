"""The Plan is complete: what the job and its record need of the config is resolved once, and nothing below the
plan reads the config; a plan handed to run_job is used as it is."""

import dataclasses
import os
import subprocess
import sys

import pytest
from conftest import compose_config

from harness import job
from harness.config import MAX_THREADS
from harness.context import JobContext
from harness.devices import usable_cores
from harness.errors import ConfigError
from harness.job import run_job
from harness.plan import Plan, make_plan, run_name


def test_the_plan_carries_what_the_config_said_and_no_config():
    cfg = compose_config(
        "task=linreg_1d",
        "optimizer=adam",
        "optimizer.lr_scale=2",
        "data.batch_size=500",  # more than the 100 training samples: the whole set
        "data.shuffle=false",
        "trainer.max_steps=7",
        "trainer.divergence_factor=50",
        "tracking.progress=false",
        "tracking.experiment=planned",
        "seed=3",
        "device=cpu",
    )
    p = make_plan(cfg, JobContext())
    assert "cfg" not in {f.name for f in dataclasses.fields(Plan)}
    assert (p.seed, p.shuffle, p.num_workers, p.divergence_factor) == (3, False, 0, 50.0)
    assert (p.optimizer_name, p.device_spec, p.progress, p.batch_size) == ("adam", "cpu", False, 100)
    assert p.tracking == cfg.tracking and p.tracking.experiment == "planned"
    assert p.config == dataclasses.asdict(cfg)
    # The name uses the batch size resolved (100), as plan.run_name names it from a plan's numbers.
    assert p.run_name == run_name(cfg, "linreg_1d", 100) == "adam lr=0.002 bs=100 seed=3 (linreg_1d)"
    named = make_plan(
        dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name="mine")), JobContext()
    )
    assert named.run_name == "mine"


def test_run_job_trains_a_plan_it_is_handed_without_planning_again(tmp_path, monkeypatch):
    cfg = compose_config("task=quadratic", "trainer.max_steps=5", "tracking.enabled=false")
    planned = make_plan(cfg, JobContext(project_dir=tmp_path))
    again = run_job(cfg, JobContext(project_dir=tmp_path))

    def refused(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr(job, "make_plan", refused)
    result = run_job(cfg, JobContext(project_dir=tmp_path), planned)
    assert (result.status, result.steps, result.final_train_loss) == ("completed", 5, again.final_train_loss)
    with pytest.raises(AssertionError, match="planned again"):
        run_job(cfg, JobContext(project_dir=tmp_path))


RANGES = [
    # (override, the one-line refusal): every integer a user types has a bound that stays safe
    ("threads=100000", "threads=100000 is not allowed: an integer in [1, 1,024] (or null)"),
    ("threads=0", "threads=0 is not allowed: an integer in [1, 1,024] (or null)"),
    (
        "data.num_workers=100000",
        "data.num_workers=100000 is not allowed: an integer in [0, 64] (each is a process)",
    ),
    ("data.num_workers=-1", "data.num_workers=-1 is not allowed: an integer in [0, 64] (each is a process)"),
    (
        "trainer.max_steps=1000000000000000000000",
        "trainer.max_steps=1000000000000000000000 is not allowed: an integer in [1, 1,000,000,000,000] (or null)",
    ),
    (
        "trainer.eval_every=1000000000001",
        "trainer.eval_every=1000000000001 is not allowed: an integer in [1, ",
    ),
    # linreg_1d: 100 training samples, batch 32 -> 4 steps per epoch; 10**12 epochs pass the key's own range
    (
        "trainer.epochs=1000000000000",
        "trainer.epochs=1000000000000 is not allowed: at most 250,000,000,000 epochs of 4 steps (a budget of at "
        "most 1,000,000,000,000 steps)",
    ),
]


@pytest.mark.parametrize("override,message", RANGES, ids=[r[0] for r in RANGES])
def test_integers_out_of_range_are_refused_before_anything_is_built(override, message):
    cfg = compose_config("task=linreg_1d", "tracking.enabled=false", override)
    with pytest.raises(ConfigError) as refused:
        make_plan(cfg, JobContext())
    assert str(refused.value).startswith(message)


@pytest.mark.slow  # a process of its own, importing torch
def test_the_largest_thread_count_allowed_starts_and_computes():
    # In a process of its own: a thread pool is per process, and this one's stays as the test suite set it.
    code = (
        f"import torch; torch.set_num_threads({MAX_THREADS}); a = torch.ones(256, 256);"
        "print(torch.get_num_threads(), float((a @ a).sum()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(MAX_THREADS), str(256.0**3)]
    highest = make_plan(compose_config("task=quadratic", f"threads={MAX_THREADS}"), JobContext())
    assert highest.threads == MAX_THREADS


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_usable_cores_are_the_cpus_allotted_not_the_machines():
    # A SLURM task, taskset or a container's cpuset allots fewer CPUs than the node has; the default thread count and
    # the batched launcher's worker count follow the allotment (harness.devices.usable_cores).
    allotted = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allotted)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, allotted)
    assert usable_cores() == len(allotted)
