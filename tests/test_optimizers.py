"""Every registered optimizer builds from its YAML defaults and trains with finite losses, tracked in MLflow."""

import math

import pytest
import torch
from conftest import CONF_DIR, all_runs, compose_config, history

from harness.config import optimizer_hparams
from harness.errors import ConfigError
from harness.job import JobContext, run_job
from harness.optim import OPTIMIZERS, create_scheduler, validate_hparams

NAMES = sorted(OPTIMIZERS)


def optimizer_overrides(name: str) -> list[str]:
    extra = ["optimizer.target=torch.optim.SGD"] if name == "custom" else []
    if name == "lbfgs":  # without a line search, L-BFGS at lr 1 on mini-batches can blow up (then: diverged)
        extra = ["optimizer.line_search_fn=strong_wolfe"]
    return [f"optimizer={name}", *extra]


def test_every_optimizer_has_a_yaml_and_every_yaml_an_optimizer():
    assert sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_yaml_defaults_are_complete_and_valid(name):
    cfg = compose_config(*optimizer_overrides(name))
    assert cfg.optimizer.name == name
    assert set(optimizer_hparams(cfg)) == set(OPTIMIZERS[name].hparams)
    validate_hparams(name, cfg.optimizer.lr, optimizer_hparams(cfg))


@pytest.mark.parametrize("task", ["quadratic", "digits_mlp"])
@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_logs_finite_losses(name, task, store, tmp_path):
    cfg = compose_config(
        f"task={task}", *optimizer_overrides(name), "trainer.max_steps=6", "trainer.eval_every=3"
    )
    result = run_job(cfg, JobContext(project_dir=tmp_path))
    [run] = all_runs(store)
    assert run.data.tags["harness.status"] == "completed" and run.info.status == "FINISHED"
    losses = history(store, run.info.run_id, "train/loss")
    assert [s for s, _ in losses] == list(range(6))
    assert all(math.isfinite(v) for _, v in losses)
    assert [s for s, _ in history(store, run.info.run_id, "val/loss")] == [0, 3, 6]
    assert math.isfinite(result.final_val["loss"]) and result.steps == 6


def test_nan_parameters_after_the_last_step_end_the_run_as_diverged(tmp_path):
    # L-BFGS at lr 1 without a line search overshoots wildly on mini-batches of the digits MLP.
    cfg = compose_config(
        "task=digits_mlp",
        "optimizer=lbfgs",
        "optimizer.lr=100",
        "trainer.max_steps=6",
        "tracking.enabled=false",
    )
    result = run_job(cfg, JobContext(project_dir=tmp_path))
    assert result.status == "diverged" and result.final_val == {}


def test_lbfgs_reaches_the_quadratic_minimum_in_one_step(tmp_path):
    cfg = compose_config("task=quadratic", "optimizer=lbfgs", "trainer.max_steps=2", "tracking.enabled=false")
    result = run_job(cfg, JobContext(project_dir=tmp_path))
    assert result.final_val["loss"] < 1e-10


def test_muon_puts_matrices_on_muon_and_the_rest_on_adamw():
    from harness.optim.muon import MuonWithAdamW

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = MuonWithAdamW(model.parameters(), 0.02, 0.1, 0.95, True, 5, 1e-3, [0.9, 0.999], 1e-8, 0.0)
    muon, adamw = opt.inner
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [p.ndim for g in muon.param_groups for p in g["params"]] == [2, 2]
    assert [p.ndim for g in adamw.param_groups for p in g["params"]] == [1, 1]
    # A scheduler on the wrapper reaches both inner optimizers.
    sched = create_scheduler(opt, "cosine", total_steps=10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert muon.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert adamw.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "name,key,value,match",
    [
        ("sgd", "lr", -0.1, "optimizer.lr=-0.1"),
        ("sgd", "momentum", 1.5, "optimizer.momentum=1.5"),
        ("adam", "betas", [1.2, 0.9], r"optimizer.betas=\[1.2, 0.9\]"),
        ("adam", "eps", 0.0, "optimizer.eps=0.0"),
        ("rprop", "etas", [1.5, 1.2], "optimizer.etas"),
        ("lbfgs", "line_search_fn", "armijo", "optimizer.line_search_fn='armijo'"),
        ("custom", "target", "collections.OrderedDict", "optimizer.target='collections.OrderedDict'"),
        ("custom", "target", "no.such.Module", "optimizer.target='no.such.Module'"),
    ],
)
def test_out_of_range_hyperparameters_are_refused_naming_the_key(name, key, value, match):
    cfg = compose_config(*optimizer_overrides(name))
    hparams = {**optimizer_hparams(cfg), key: value}
    lr = hparams.pop("lr", cfg.optimizer.lr)
    with pytest.raises(ConfigError, match=match):
        validate_hparams(name, lr, hparams)


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("none", [1.0] * 6),  # no scheduler: lr is recorded at the evaluation points, steps 0-5
        ("cosine", [1.0, 0.9045, 0.6545, 0.3455, 0.0955]),
        ("step", [1.0, 1.0, 0.1, 0.1, 0.01]),
        ("warmup_cosine", [0.5, 1.0, 0.8536, 0.5, 0.1464]),
    ],
)
def test_schedules_follow_their_formulas(schedule, expected, tmp_path):
    from conftest import compose_config as cc

    from harness.tracking import MemoryTracker  # noqa: F401 - the job uses MLflow; read lr from the store

    overrides = [f"scheduler={schedule}", "task=quadratic", "optimizer.lr=0.1", "trainer.max_steps=5"]
    overrides += ["scheduler.step_every=0.4", "scheduler.warmup=0.4"]
    cfg = cc(*overrides, "tracking.enabled=true")
    run_job(cfg, JobContext(project_dir=tmp_path))
    import os

    [run] = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    lrs = [v for _, v in history(os.environ["MLFLOW_TRACKING_URI"], run.info.run_id, "lr")]
    assert lrs == pytest.approx([0.1 * e for e in expected], abs=1e-4)
