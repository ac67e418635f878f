"""Every registered optimizer and schedule: its record's defaults are complete and valid, it trains with finite
losses tracked in MLflow, its ranges refuse bad values; and a user's optimizer is one registry entry."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, all_runs, compose_config, history, mlflow_client, run_cli

from harness.config import optimizer_hparams, register_configs, scheduler_params
from harness.errors import ConfigError
from harness.job import JobContext, run_job
from harness.optim import OPTIMIZERS, SCHEDULERS, create_scheduler, schedulers
from harness.optim.registry import markdown_table

NAMES = sorted(OPTIMIZERS)
PLUGIN_ENV = {
    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    "HARNESS_PLUGINS": "user_optimizers",
}


def optimizer_overrides(name: str) -> list[str]:
    extra = ["optimizer.target=torch.optim.SGD"] if name == "custom" else []
    if name == "lbfgs":  # without a line search, L-BFGS at lr 1 on mini-batches can blow up (then: diverged)
        extra = ["optimizer.line_search_fn=strong_wolfe"]
    return [f"optimizer={name}", *extra]


@pytest.mark.parametrize("name", NAMES)
def test_the_composed_config_is_the_records_defaults_and_they_are_in_range(name):
    cfg = compose_config(
        f"optimizer={name}", *(["optimizer.target=torch.optim.SGD"] if name == "custom" else [])
    )
    info = OPTIMIZERS[name]
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.lr_scale) == (name, info.lr, 1.0)
    expected = info.defaults() | ({"target": "torch.optim.SGD"} if name == "custom" else {})
    assert optimizer_hparams(cfg) == expected
    info.check(info.lr, expected)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_schedule_composes_to_its_records_defaults(name):
    cfg = compose_config(f"scheduler={name}")
    assert cfg.scheduler.name == name and scheduler_params(cfg) == SCHEDULERS[name].defaults()


def test_the_readme_table_is_the_one_the_registry_prints():
    readme = (ROOT / "README.md").read_text()
    printed = subprocess.run(
        [sys.executable, "-m", "harness.optim"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert printed.strip() == f"{markdown_table()}\n\n{schedulers.markdown_table()}"
    assert printed.strip() in readme


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
    "overrides,match",
    [
        (["optimizer.lr=-0.1"], r"optimizer.lr=-0.1 is not allowed: a finite number > 0"),
        (["optimizer.momentum=1.5"], r"optimizer.momentum=1.5 is not allowed: in \[0, 1\)"),
        (
            ["optimizer=adam", "optimizer.betas=[1.2,0.9]"],
            r"optimizer.betas=\[1.2, 0.9\] is not allowed: two",
        ),
        (["optimizer=adam", "optimizer.eps=0"], r"optimizer.eps=0.0 is not allowed: > 0"),
        (["optimizer=rprop", "optimizer.etas=[1.5,1.2]"], "optimizer.etas"),
        (["optimizer=lbfgs", "optimizer.line_search_fn=armijo"], "optimizer.line_search_fn='armijo'"),
        (
            ["scheduler=step", "scheduler.step_every=0"],
            r"scheduler.step_every=0.0 is not allowed: in \(0, 1\]",
        ),
        (["optimizer.name=adam"], "optimizer.name='adam' is not allowed"),  # renaming keeps SGD's keys
        (["optimizer=custom", "optimizer.target=collections.OrderedDict"], "optimizer.target='collections."),
        (["optimizer=custom", "optimizer.target=no.such.Module"], "optimizer.target='no.such.Module'"),
        # The record allows it; torch refuses it when the optimizer is built on the model, before any run exists.
        (["optimizer.nesterov=true"], "rejected by sgd: Nesterov momentum requires a momentum"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_key_and_create_no_run(overrides, match, store, tmp_path):
    cfg = compose_config("task=quadratic", *overrides)
    with pytest.raises(ConfigError, match=match):
        run_job(cfg, JobContext(project_dir=tmp_path))
    assert all_runs(store) == []


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("none", [1.0] * 5),
        ("cosine", [1.0, 0.9045, 0.6545, 0.3455, 0.0955]),
        ("step", [1.0, 1.0, 0.1, 0.1, 0.01]),
        ("warmup_cosine", [0.5, 1.0, 0.8536, 0.5, 0.1464]),
    ],
)
def test_schedules_follow_their_formulas(schedule, expected, store, tmp_path):
    overrides = [f"scheduler={schedule}", "task=quadratic", "optimizer.lr=0.1", "trainer.max_steps=5"]
    overrides += {"step": ["scheduler.step_every=0.4"], "warmup_cosine": ["scheduler.warmup=0.4"]}.get(
        schedule, []
    )
    run_job(compose_config(*overrides), JobContext(project_dir=tmp_path))
    [run] = all_runs(store)
    lrs = [v for _, v in history(store, run.info.run_id, "lr")]
    assert lrs == pytest.approx([0.1 * e for e in expected], abs=1e-4)


@pytest.fixture
def plugin_optimizer(monkeypatch):
    """The user's optimizer registered in this process, as HARNESS_PLUGINS would; removed afterwards."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from harness import plugins

    plugins.load("user_optimizers")
    register_configs()
    yield OPTIMIZERS["signsgd"]
    del OPTIMIZERS["signsgd"]
    sys.modules.pop("user_optimizers")


# SignSGD at lr 0.5 on x0^2 + x1^2 from [3, 2]: each coordinate moves by 0.5 towards 0 until it is 0.
SIGN_SGD_LOSSES = [13.0, 8.5, 5.0, 2.5, 1.0]


def test_a_registered_optimizer_is_a_config_option_with_its_defaults_and_ranges(plugin_optimizer, tmp_path):
    cfg = compose_config(
        "task=quadratic", "optimizer=signsgd", "trainer.max_steps=5", "tracking.enabled=false"
    )
    assert (cfg.optimizer.lr, optimizer_hparams(cfg)) == (0.5, {"weight_decay": 0.0})
    assert run_job(cfg, JobContext(project_dir=tmp_path)).final_train_loss == SIGN_SGD_LOSSES[-1]
    with pytest.raises(ConfigError, match=r"optimizer.weight_decay=-1.0 is not allowed: >= 0"):
        run_job(
            compose_config("optimizer=signsgd", "optimizer.weight_decay=-1"), JobContext(project_dir=tmp_path)
        )
    assert (
        "| `signsgd` | sign of the gradient times lr | 0.5 | `weight_decay`=0.0 (>= 0) |" in markdown_table()
    )


@pytest.mark.slow
def test_a_plugin_optimizer_works_from_the_command_line_in_a_sweep_in_help_and_in_the_report(store, tmp_path):
    # One registry entry in the user's own module, no other edit anywhere.
    help_text = run_cli("--help", cwd=tmp_path, env=PLUGIN_ENV).stdout
    [options] = [ln for ln in help_text.splitlines() if ln.startswith("optimizer: ")]
    assert "signsgd" in options.split(": ")[1].split(", ")

    bad = run_cli("optimizer=signsgd", "optimizer.weight_decay=-1", cwd=tmp_path, env=PLUGIN_ENV)
    assert bad.returncode == 2 and "error: optimizer.weight_decay=-1.0 is not allowed: >= 0" in bad.stderr
    assert all_runs(store) == []

    single = run_cli(
        "task=quadratic", "optimizer=signsgd", "trainer.max_steps=5", cwd=tmp_path, env=PLUGIN_ENV
    )
    assert single.returncode == 0, single.stderr[-2000:]
    [run] = all_runs(store)
    assert [v for _, v in history(store, run.info.run_id, "train/loss")] == SIGN_SGD_LOSSES

    sweep = ["-m", "task=quadratic", "optimizer=signsgd,sgd", "seed=0,1", "trainer.max_steps=5"]
    proc = run_cli(*sweep, "tracking.experiment=plugin", cwd=tmp_path, env=PLUGIN_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = mlflow_client(store)
    experiment = client.get_experiment_by_name("plugin").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.params["optimizer.name"] for c in children) == ["sgd", "sgd", "signsgd", "signsgd"]
    assert parent.data.tags["harness.jobs.completed"] == "4"

    # The report reads the store only: it needs no plugin to name and rank the new optimizer.
    out = tmp_path / "report"
    report = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report.py"),
            "--experiment",
            "plugin",
            "--out",
            str(out),
            "--no-log",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    summary = (out / "summary.csv").read_text()
    assert "signsgd" in summary and "sgd" in summary
    assert "signsgd" in (out / "report.html").read_text()
