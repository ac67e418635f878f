"""What one run leaves in a real MLflow store: params, tags, artifacts, exact metric counts, end states."""

import math
from pathlib import Path

import pytest
import torch
from conftest import all_runs, compose_config, history, mlflow_client

from harness.job import JobContext, run_job
from harness.tracking import schema
from harness.tracking.run_tracker import MAX_BUFFERED_POINTS

# Every step (+ suboptimality when f* is known), and at evaluation points.
STEP_KEYS = [schema.TRAIN_LOSS, schema.GRAD_NORM, schema.WALL_S]
EVAL_KEYS = [schema.VAL_LOSS, schema.EPOCH, schema.SAMPLES_SEEN, schema.LR]


def run(tmp_path, *overrides, **ctx):
    return run_job(compose_config(*overrides), JobContext(project_dir=tmp_path, **ctx))


def test_params_tags_and_config_artifact(store, tmp_path):
    run(
        tmp_path,
        "task=digits_mlp",
        "optimizer=adam",
        "optimizer.lr=0.003",
        "data.batch_size=64",
        "trainer.max_steps=30",
        "seed=7",
        overrides=("optimizer=adam", "optimizer.lr=0.003"),
    )
    [r] = all_runs(store)
    p = r.data.params
    assert p["task.name"] == "digits_mlp" and p["optimizer.name"] == "adam" and p["optimizer.lr"] == "0.003"
    assert p["data.batch_size"] == "64" and p["seed"] == "7" and p["device"] == "auto"
    assert p["optimizer.betas"] == "[0.9, 0.999]" and p["resolved.total_steps"] == "30"
    t = r.data.tags
    assert (
        t["harness.status"] == "completed" and t["harness.overrides"] == "optimizer=adam optimizer.lr=0.003"
    )
    assert t["harness.torch_version"] == torch.__version__ and t["harness.device"] == "cpu"
    assert len(t["harness.config_hash"]) == 16
    assert r.info.run_name == "adam lr=0.003 bs=64 seed=7 (digits_mlp)"
    experiment = mlflow_client(store).get_experiment(r.info.experiment_id)
    assert experiment.name == "digits_mlp"  # default experiment: the task name
    config_file = Path(r.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    assert "lr: 0.003" in config_file.read_text()


def test_every_step_and_evaluation_is_logged_exactly_once(store, tmp_path):
    # 300 steps x 4 per-step keys > MAX_BUFFERED_POINTS: the buffer is sent mid-run and at the end.
    assert 300 * 4 > MAX_BUFFERED_POINTS
    result = run(
        tmp_path, "task=linreg_10d", "optimizer=sgd", "trainer.max_steps=300", "trainer.eval_every=25"
    )
    [r] = all_runs(store)
    for key in [*STEP_KEYS, schema.TRAIN_SUBOPTIMALITY]:
        assert [s for s, _ in history(store, r.info.run_id, key)] == list(range(300)), key
    evaluations = list(range(0, 301, 25))
    for key in EVAL_KEYS:
        assert [s for s, _ in history(store, r.info.run_id, key)] == evaluations, key
    assert r.data.metrics["steps"] == 300
    assert r.data.metrics["final/val_loss"] == pytest.approx(result.final_val["loss"])
    # 800 samples / 32 = 25 steps per epoch.
    assert r.data.params[schema.RESOLVED_STEPS_PER_EPOCH] == "25"
    assert [v for _, v in history(store, r.info.run_id, schema.SAMPLES_SEEN)] == [
        32.0 * k for k in evaluations
    ]
    assert [v for _, v in history(store, r.info.run_id, schema.EPOCH)] == [k / 25 for k in evaluations]
    assert {v for _, v in history(store, r.info.run_id, schema.LR)} == {0.01}
    walls = [v for _, v in history(store, r.info.run_id, schema.WALL_S)]
    assert walls == sorted(walls) and 0 < walls[0] and walls[-1] < r.data.metrics["time/total_s"]


def test_an_evaluation_at_every_step_logs_every_point_exactly_once(store, tmp_path):
    # Every chunk is one step and every step an evaluation point: 300 x 4 step points + 301 x 4 evaluation points,
    # more than MAX_BUFFERED_POINTS, so the buffer is sent mid-run too.
    assert 300 * 4 + 301 * 4 > MAX_BUFFERED_POINTS
    run(tmp_path, "task=quadratic", "optimizer=sgd", "trainer.max_steps=300", "trainer.eval_every=1")
    [r] = all_runs(store)
    for key in [*STEP_KEYS, schema.TRAIN_SUBOPTIMALITY]:
        assert [s for s, _ in history(store, r.info.run_id, key)] == list(range(300)), key
    for key in EVAL_KEYS:
        assert [s for s, _ in history(store, r.info.run_id, key)] == list(range(301)), key
    # The function task's one sample is its epoch.
    assert [v for _, v in history(store, r.info.run_id, schema.EPOCH)] == [float(k) for k in range(301)]


@pytest.mark.parametrize("task,status", [("user_interrupted", "KILLED"), ("user_failing", "FAILED")])
def test_a_run_stopped_mid_run_keeps_every_step_and_evaluation_it_measured(store, tmp_path, task, status):
    # The task raises in the loss of step 4: steps 0-3 were measured, and the evaluations after 0, 2 and 4 updates.
    with pytest.raises(KeyboardInterrupt if status == "KILLED" else RuntimeError):
        run(
            tmp_path,
            "task.module=user_tasks",
            f"task.name={task}",
            "trainer.max_steps=10",
            "trainer.eval_every=2",
        )
    [r] = all_runs(store)
    assert r.info.status == status
    for key in STEP_KEYS:
        assert [s for s, _ in history(store, r.info.run_id, key)] == [0, 1, 2, 3], key
    for key in EVAL_KEYS:
        assert [s for s, _ in history(store, r.info.run_id, key)] == [0, 2, 4], key


def test_time_to_target_is_recorded_when_reached_and_absent_otherwise(store, tmp_path):
    run(tmp_path, "task=quadratic", "optimizer.lr=0.1", "trainer.max_steps=60")
    run(tmp_path, "task=quadratic", "optimizer.lr=0.001", "trainer.max_steps=5")
    fast, slow = sorted(all_runs(store), key=lambda r: r.data.params["optimizer.lr"], reverse=True)
    # 13 * 0.64^t <= 1e-4 first at t = 27.
    assert fast.data.metrics["steps_to_target"] == 27
    assert 0 < fast.data.metrics["time_to_target_s"] < fast.data.metrics["time/total_s"]
    assert "time_to_target_s" not in slow.data.metrics


def test_ctrl_c_ends_the_run_killed_with_the_buffer_flushed(store, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "task.module=user_tasks", "task.name=user_interrupted", "trainer.max_steps=10")
    [r] = all_runs(store)
    assert r.info.status == "KILLED" and r.data.tags["harness.status"] == "killed"
    assert "KeyboardInterrupt" in r.data.tags["harness.error"]
    assert len(history(store, r.info.run_id, "train/loss")) == 4


def test_same_config_and_seed_give_identical_histories(store, tmp_path):
    args = ["task=digits_mlp", "optimizer=momentum", "data.batch_size=16", "trainer.max_steps=60"]
    run(tmp_path, *args, "seed=1")
    run(tmp_path, *args, "seed=1")
    run(tmp_path, *args, "seed=2")
    runs = sorted(all_runs(store), key=lambda r: r.info.start_time)
    curves = [
        [v for _, v in history(store, r.info.run_id, key)] for r in runs for key in ("train/loss", "val/loss")
    ]
    assert curves[0] == curves[2] and curves[1] == curves[3]  # seed 1 twice: bit-identical
    assert curves[0] != curves[4]  # seed 2 differs
    assert all(math.isfinite(v) for v in curves[0])


def test_tracking_disabled_writes_nothing(store, tmp_path):
    result = run(tmp_path, "task=quadratic", "tracking.enabled=false", "trainer.max_steps=3")
    assert result.steps == 3
    assert not Path(store.removeprefix("sqlite:///")).exists()
