"""The training loop itself, on real tasks, optimizers and DataLoaders: the chunked device-value path (forced on CPU)
against the host path, divergence cut exactly at its step, evaluation-point series, the flat gradient buffer."""

import math

import pytest
import torch
from memory_tracker import MemoryTracker
from torch import nn

from harness.data import make_loader
from harness.loop import DIVERGED, Gradients, LoopSettings, train
from harness.tasks import create_task
from harness.tracking import schema
from harness.tracking.columns import StepBuffer, first_true


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as the job sets for these tasks (more makes tiny models far slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(task_name, optimizer="sgd", lr=0.1, steps=40, batch_size=32, scheduler=None, **settings):
    task = create_task(task_name)
    splits = task.make_data()
    torch.manual_seed(0)
    model = task.make_model()
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    opt = make(model.parameters(), lr=lr)
    sched = (
        None if scheduler is None else torch.optim.lr_scheduler.StepLR(opt, step_size=scheduler, gamma=0.5)
    )
    loader = make_loader(splits.train, batch_size, shuffle=True, seed=0)
    options = dict(eval_every=10, steps_per_epoch=len(loader), batch_size=batch_size)
    options.update(f_star=task.f_star(splits), target=task.target(splits))
    options.update(settings)
    tracker = MemoryTracker()
    result = train(
        task, model, opt, loader, splits.val, LoopSettings(total_steps=steps, **options), tracker, sched
    )
    return result, tracker, model


def steps_of(tracker, key):
    return [s for s, _ in tracker.history[key]]


@pytest.mark.parametrize("chunk", [7, 256])
def test_device_values_path_records_what_the_host_path_records(chunk):
    host, host_tracker, host_model = run("digits_mlp", "adam", 1e-3, steps=50, chunk_steps=chunk)
    dev, dev_tracker, dev_model = run(
        "digits_mlp", "adam", 1e-3, steps=50, chunk_steps=chunk, device_values=True
    )
    assert host.status == dev.status == "completed" and host.steps == dev.steps == 50
    assert set(host_tracker.history) == set(dev_tracker.history)
    for key in host_tracker.history:
        assert steps_of(host_tracker, key) == steps_of(dev_tracker, key), key
    assert host_tracker.values(schema.TRAIN_LOSS) == dev_tracker.values(schema.TRAIN_LOSS)  # bit-identical
    assert dev_tracker.values(schema.GRAD_NORM) == pytest.approx(
        host_tracker.values(schema.GRAD_NORM), rel=1e-6
    )
    assert all(torch.equal(a, b) for a, b in zip(host_model.parameters(), dev_model.parameters()))
    assert steps_of(host_tracker, schema.TRAIN_LOSS) == list(range(50))
    assert steps_of(host_tracker, schema.VAL_LOSS) == [0, 10, 20, 30, 40, 50]


@pytest.mark.parametrize("device_values", [False, True])
def test_a_run_diverging_mid_chunk_records_exactly_up_to_its_divergence_step(device_values):
    # SGD lr 1.5 on f(x) = |x|^2 from f = 13: x_t = (-2)^t x_0, loss 13 * 4^t; 4^7 > 1e4 first at t = 7.
    result, tracker, _ = run(
        "quadratic", lr=1.5, steps=100, eval_every=5, chunk_steps=16, device_values=device_values
    )
    assert result.status == DIVERGED and result.diverged_at == 7 and result.steps == 7
    assert result.final_train_loss == pytest.approx(13 * 4.0**7)
    assert result.divergence == "loss 2.13e+05 at step 7 (initial 13)"
    for key in (schema.TRAIN_LOSS, schema.GRAD_NORM, schema.WALL_S, schema.TRAIN_SUBOPTIMALITY):
        assert steps_of(tracker, key) == list(range(8)), key
    assert tracker.values(schema.TRAIN_LOSS) == pytest.approx([13 * 4.0**t for t in range(8)], rel=1e-12)
    assert steps_of(tracker, schema.VAL_LOSS) == [0, 5]  # the evaluation at step 10 never happens
    assert max(s for key in tracker.history for s in steps_of(tracker, key)) == 7
    assert result.final_val == {}


def test_the_chunked_path_stops_at_the_same_step_for_a_non_finite_loss():
    # lr 1e6: the loss overflows to inf at once; both paths record steps 0 and 1 and stop at step 1.
    records = []
    for device_values in (False, True):
        result, tracker, _ = run("quadratic", lr=1e6, steps=30, chunk_steps=8, device_values=device_values)
        records.append(
            (result.status, result.diverged_at, {k: steps_of(tracker, k) for k in tracker.history})
        )
    assert records[0] == records[1]
    assert records[0][1] == 1


def test_time_to_target_is_the_same_step_on_both_paths():
    # 13 * 0.64^t <= 1e-4 first at t = 27 (the quadratic's target is train/loss <= f* + 1e-4).
    host, _, _ = run("quadratic", lr=0.1, steps=60, chunk_steps=10)
    dev, _, _ = run("quadratic", lr=0.1, steps=60, chunk_steps=10, device_values=True)
    assert host.steps_to_target == dev.steps_to_target == 27
    assert 0 < dev.time_to_target_s < dev.wall_s


def test_evaluation_points_carry_epoch_samples_and_lr_and_a_scheduler_makes_lr_per_step():
    # digits: 1,437 training samples / 100 = 15 steps per epoch.
    _, tracker, _ = run("digits_mlp", steps=40, batch_size=100, eval_every=15)
    evaluations = [0, 15, 30, 40]
    assert tracker.history[schema.EPOCH] == [(k, k / 15) for k in evaluations]
    assert tracker.history[schema.SAMPLES_SEEN] == [(k, 100.0 * k) for k in evaluations]
    assert tracker.history[schema.LR] == [(k, 0.1) for k in evaluations]
    _, tracker, _ = run("digits_mlp", steps=40, batch_size=100, eval_every=15, scheduler=10)
    assert tracker.history[schema.LR] == [(t, 0.1 * 0.5 ** (t // 10)) for t in range(40)]
    assert steps_of(tracker, schema.EPOCH) == evaluations


def test_an_interrupted_chunk_still_records_its_finished_steps():
    from user_tasks import InterruptedTask  # raises KeyboardInterrupt in its 5th loss call

    for device_values in (False, True):
        task, tracker = InterruptedTask(), MemoryTracker()
        model = task.make_model()
        loader = make_loader(task.make_data().train, 1, False, 0)
        settings = LoopSettings(total_steps=10, eval_every=100, device_values=device_values)
        with pytest.raises(KeyboardInterrupt):
            train(task, model, torch.optim.SGD(model.parameters(), lr=0.1), loader, (), settings, tracker)
        assert steps_of(tracker, schema.TRAIN_LOSS) == [0, 1, 2, 3]
        assert steps_of(tracker, schema.WALL_S) == [0, 1, 2, 3]


def test_flat_gradients_give_the_global_norm_and_leave_unused_parameters_alone():
    torch.manual_seed(0)
    used, unused = nn.Linear(3, 2), nn.Linear(3, 2)
    params = [*used.parameters(), *unused.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    grads = Gradients(params, optimizer)
    before = [p.detach().clone() for p in unused.parameters()]
    for _ in range(3):
        grads.zero()
        used(torch.ones(4, 3)).square().sum().backward()
        grads.after_backward()
        expected = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in used.parameters()]))
        assert math.sqrt(grads.sq_norm().item()) == pytest.approx(expected.item(), rel=1e-6)
        optimizer.step()
    assert grads.flat is None  # an unused parameter: no flat buffer, grads stay None there
    assert all(p.grad is None for p in unused.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, unused.parameters()))

    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = Gradients(list(model.parameters()), optimizer)
    for _ in range(3):
        grads.zero()
        model(torch.ones(4, 3)).square().sum().backward()
        grads.after_backward()
        expected = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        assert math.sqrt(grads.sq_norm().item()) == pytest.approx(expected.item(), rel=1e-6)
        assert grads.flat is not None and all(p.grad is v for p, v in zip(model.parameters(), grads.views))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # an optimizer that drops the grads: they are bound again
        assert all(p.grad is None for p in model.parameters())


def test_step_buffer_takes_a_chunk_in_one_copy_with_trials():
    buffer = StepBuffer(["loss"], ["wall"], chunk=4, trials=2, dtype=torch.float64)
    for i in range(3):
        buffer.slots("loss")[i].copy_(torch.tensor([i, 10.0 + i]))
        buffer.host["wall"][i] = 0.5 * i
    mark = first_true(buffer.column("loss")[:, :3] > 10.5)
    columns, [marks] = buffer.take(3, extra=[mark])
    assert columns == {"wall": [0.0, 0.5, 1.0], "loss": [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]}
    assert marks == [3.0, 1.0]  # trial 0 never; trial 1 from step 1
    assert buffer.take(0)[0] == {"wall": [], "loss": [[], []]}  # a chunk interrupted before its first step
