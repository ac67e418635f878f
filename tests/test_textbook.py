"""The textbook tasks reproduce their plain loops exactly, step by step, through the real job and MLflow store."""

import pytest
import torch
from conftest import all_runs, compose_config, history

from harness.job import JobContext, run_job


def run(store, tmp_path, *overrides):
    result = run_job(compose_config(*overrides), JobContext(project_dir=tmp_path))
    [run] = [r for r in all_runs(store) if r.info.status == "FINISHED"][-1:]
    return result, run.info.run_id


def plain_gd_linreg_origin(lr: float, steps: int) -> list[float]:
    x, y, w, losses = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0, []
    for _ in range(steps):
        losses.append(sum((w * xi - yi) ** 2 for xi, yi in zip(x, y)) / 3)
        w -= lr * sum(2 * xi * (w * xi - yi) for xi, yi in zip(x, y)) / 3
    return losses


def plain_sgd_linreg_origin(lr: float, epochs: int) -> list[float]:
    x, y, w, losses = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0, []
    for _ in range(epochs):
        for xi, yi in zip(x, y):
            losses.append((w * xi - yi) ** 2)
            w -= lr * 2 * xi * (w * xi - yi)
    return losses


def test_full_batch_gd_on_linreg_origin_matches_the_plain_loop(store, tmp_path):
    _, run_id = run(
        store,
        tmp_path,
        "task=linreg_origin",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "data.batch_size=full",
        "data.shuffle=false",
        "trainer.epochs=30",
    )
    logged = history(store, run_id, "train/loss")
    assert [s for s, _ in logged] == list(range(30))
    assert [v for _, v in logged] == pytest.approx(plain_gd_linreg_origin(0.01, 30), rel=1e-12, abs=1e-15)


def test_per_sample_sgd_on_linreg_origin_matches_the_plain_loop_in_order(store, tmp_path):
    _, run_id = run(
        store,
        tmp_path,
        "task=linreg_origin",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "data.batch_size=1",
        "data.shuffle=false",
        "trainer.epochs=5",
    )
    logged = history(store, run_id, "train/loss")
    assert len(logged) == 15
    assert [v for _, v in logged] == pytest.approx(plain_sgd_linreg_origin(0.01, 5), rel=1e-12, abs=1e-15)
    # epoch is recorded at evaluation points (here every step: 15 steps / 20 evaluations) as updates / 3 per epoch;
    # per train step it follows from resolved.steps_per_epoch.
    assert history(store, run_id, "epoch") == [(k, k / 3) for k in range(16)]
    [r] = [r for r in all_runs(store) if r.info.run_id == run_id]
    per_epoch = int(r.data.params["resolved.steps_per_epoch"])
    assert [s // per_epoch for s, _ in logged] == [e for e in range(5) for _ in range(3)]


def test_sgd_on_the_quadratic_follows_x_t_equal_0_8_to_the_t(store, tmp_path):
    result, run_id = run(
        store, tmp_path, "task=quadratic", "optimizer=sgd", "optimizer.lr=0.1", "trainer.max_steps=25"
    )
    # f(x_t) = |0.8^t [3, 2]|^2 = 13 * 0.64^t; train/loss at step t is taken at x_t.
    logged = history(store, run_id, "train/loss")
    assert [s for s, _ in logged] == list(range(25))
    assert [v for _, v in logged] == pytest.approx([13 * 0.64**t for t in range(25)], rel=1e-12)
    assert history(store, run_id, "train/suboptimality") == logged  # f* = 0
    assert result.final_val["loss"] == pytest.approx(13 * 0.64**25, rel=1e-12)
    assert result.steps == 25


def test_linreg_1d_data_and_optimum_are_the_textbook_ones():
    import numpy as np

    from harness.tasks import create_task

    task = create_task("linreg_1d")
    splits = task.make_data()
    np.random.seed(42)
    x = np.random.rand(100, 1)
    y = 2 * x + 1 + 0.1 * np.random.randn(100, 1)
    assert torch.equal(splits.train[0], torch.tensor(x)) and torch.equal(splits.train[1], torch.tensor(y))
    a = np.hstack([x, np.ones_like(x)])
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    assert task.f_star(splits) == pytest.approx(float(np.mean((a @ coef - y) ** 2)), rel=1e-12)
    assert coef[0, 0] == pytest.approx(2.0, abs=0.1) and coef[1, 0] == pytest.approx(1.0, abs=0.1)


def test_full_batch_gd_on_linreg_1d_matches_the_plain_numpy_loop(store, tmp_path):
    import numpy as np

    from harness.tasks import create_task

    _, run_id = run(
        store,
        tmp_path,
        "task=linreg_1d",
        "optimizer=sgd",
        "optimizer.lr=0.5",
        "data.batch_size=full",
        "trainer.epochs=40",
        "seed=3",
    )
    torch.manual_seed(3)  # the job seeds torch with `seed` before building the model
    model = create_task("linreg_1d").make_model()
    w, b = model.weight.item(), model.bias.item()
    np.random.seed(42)
    x = np.random.rand(100, 1)[:, 0]
    y = 2 * x + 1 + 0.1 * np.random.randn(100, 1)[:, 0]
    losses = []
    for _ in range(40):
        err = w * x + b - y
        losses.append(np.mean(err**2))
        w, b = w - 0.5 * np.mean(2 * err * x), b - 0.5 * np.mean(2 * err)
    assert [v for _, v in history(store, run_id, "train/loss")] == pytest.approx(losses, rel=1e-10)
