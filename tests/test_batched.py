"""Batched trials (harness.batched): the same computation as each job run alone, recorded the same way."""

import random

import numpy as np
import pytest
import torch
from memory_tracker import MemoryTracker

from harness.batched.engine import train_group
from harness.batched.spec import ScheduleSpec, TrialSpec, group_key
from harness.data import make_loader
from harness.loop import LoopSettings, train
from harness.optim import create_scheduler, get_optimizer_info
from harness.optim.schedulers import get_schedule_info
from harness.tasks import create_task

_SPLITS = {}

HPARAMS = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "momentum": {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "nesterov": {"momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0, "nesterov": True},
    "adam": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
    "adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False},
    "adagrad": {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
}


def make_spec(
    task_name, optimizer, lr, seed, batch_size=32, total_steps=12, eval_every=5, shuffle=True, **kw
):
    task = create_task(task_name)
    if task_name not in _SPLITS:
        _SPLITS[task_name] = task.make_data()
    splits = _SPLITS[task_name]
    size = splits.train[0].shape[0]
    batch_size = min(batch_size, size)
    hparams = {**HPARAMS[optimizer], **kw.pop("hparams", {})}
    return TrialSpec(
        task=task,
        splits=splits,
        optimizer=optimizer,
        lr=lr,
        hparams=hparams,
        seed=seed,
        batch_size=batch_size,
        shuffle=shuffle,
        total_steps=total_steps,
        steps_per_epoch=-(-size // batch_size),
        eval_every=eval_every,
        **kw,
    )


def run_alone(spec: TrialSpec):
    """The single-run path, as harness.job builds it: seeded model, registry optimizer, DataLoader, harness.loop."""
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    model = spec.task.make_model()
    optimizer = get_optimizer_info(spec.optimizer).create(model.parameters(), spec.lr, spec.hparams)
    s = spec.scheduler
    schedule_params = {k: getattr(s, k) for k in get_schedule_info(s.name).defaults()}
    scheduler = create_scheduler(optimizer, s.name, spec.total_steps, schedule_params)
    loader = make_loader(spec.splits.train, spec.batch_size, spec.shuffle, spec.seed)
    settings = LoopSettings(
        total_steps=spec.total_steps,
        eval_every=spec.eval_every,
        divergence_factor=spec.divergence_factor,
        f_star=spec.task.f_star(spec.splits),
        target=spec.task.target(spec.splits),
        steps_per_epoch=spec.steps_per_epoch,
        batch_size=spec.batch_size,
    )
    tracker = MemoryTracker()
    result = train(spec.task, model, optimizer, loader, spec.splits.val, settings, tracker, scheduler)
    return tracker, result, [p.detach() for p in model.parameters()]


def run_batched(specs, **kw):
    trackers = [MemoryTracker() for _ in specs]
    results = train_group(specs, trackers, **kw)
    return trackers, results


def rel_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) if a.size else 0.0


def run_group(specs, sync_every=256, halving=None):
    """The engine's group directly, to read the trials' final parameters too."""
    from harness.batched.engine import _Group

    trackers = [MemoryTracker() for _ in specs]
    group = _Group(specs, trackers, sync_every, halving)
    results = group.run()
    return trackers, results, [group.params_of(i) for i in range(len(specs))]


PER_STEP = ("train/loss", "train/suboptimality")
COMPARED = (*PER_STEP, "val/loss", "val/accuracy")
EXACT_TASKS = ("quadratic", "rosenbrock", "rastrigin", "linreg_origin", "linreg_1d", "digits_mlp")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
LRS = {"sgd": (0.01, 0.03), "momentum": (0.01, 0.003), "nesterov": (0.01, 0.003), "adam": (0.01, 0.001)}


def _specs(task, optimizer, steps=12, **kw):
    lrs = LRS.get(optimizer, (0.01, 0.001))
    pairs = [(lrs[0], 0), (lrs[1], 1), (lrs[0], 1)]  # trials differ in lr, in seed, and in both
    return [make_spec(task, optimizer, lr, seed, total_steps=steps, **kw) for lr, seed in pairs]


def _assert_same_run(alone, batched, tolerance=0.0):
    (t1, r1, p1), (t2, r2, p2) = alone, batched
    for key in COMPARED:
        assert [s for s, _ in t2.history[key]] == [s for s, _ in t1.history[key]], key
        if tolerance == 0.0:
            assert t2.values(key) == t1.values(key), key
        else:
            assert rel_diff(t2.values(key), t1.values(key)) <= tolerance, key
    assert [s for s, _ in t2.history["grad_norm"]] == [s for s, _ in t1.history["grad_norm"]]
    assert rel_diff(t2.values("grad_norm"), t1.values("grad_norm")) <= 1e-6  # summation order differs
    assert (r2.status, r2.steps, r2.divergence) == (r1.status, r1.steps, r1.divergence)
    assert r2.steps_to_target == r1.steps_to_target
    if p2 is not None:
        for a, b in zip(p2, p1):
            if tolerance == 0.0:
                assert torch.equal(a, b)
            else:
                # Relative to the tensor's scale: Adam turns a 1e-7 difference in a near-zero gradient into a step.
                assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("task", EXACT_TASKS)
def test_bitwise_equal_to_the_single_run(task, optimizer):
    """Every per-step loss, every evaluation and the final parameters equal the job run alone, bit for bit."""
    specs = _specs(task, optimizer, steps=8, eval_every=3)
    trackers, results, params = run_group(specs, sync_every=5)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


@pytest.mark.parametrize(
    ("task", "optimizer"),
    [
        *[
            (t, o)
            for t in ("linreg_10d", "logreg_cancer")
            for o in ("sgd", "momentum", "adam", "rmsprop", "adagrad")
        ],
        ("digits_cnn", "adam"),
        pytest.param("digits_cnn", "sgd", marks=pytest.mark.slow),
    ],
)
def test_within_1e6_where_kernels_differ(task, optimizer):
    """Tiny out=1 layers (gemv vs bmm), BCE's sigmoid, convolutions under vmap: <= 1e-6 relative per step."""
    specs = _specs(task, optimizer, steps=6 if task == "digits_cnn" else 10)
    trackers, results, params = run_group(specs)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]), tolerance=1e-6)


def test_float64_model_adam_with_amsgrad_and_l2_decay_is_bitwise():
    specs = _specs("linreg_1d", "adam", hparams={"amsgrad": True, "weight_decay": 0.1})
    trackers, results, params = run_group(specs)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


def test_per_trial_hyperparameters_and_a_schedule_are_bitwise():
    """Betas, eps, momentum and weight decay differ per trial; a cosine schedule logs lr per step."""
    cosine = ScheduleSpec("warmup_cosine", warmup=0.2)
    specs = [
        make_spec(
            "digits_mlp", "adamw", 0.003, 0, hparams={"betas": [0.8, 0.99], "eps": 1e-6}, scheduler=cosine
        ),
        make_spec("digits_mlp", "adamw", 0.001, 1, hparams={"weight_decay": 0.1}, scheduler=cosine),
        make_spec("digits_mlp", "adamw", 0.002, 2, scheduler=cosine),
    ]
    trackers, results, params = run_group(specs, sync_every=4)
    for i, spec in enumerate(specs):
        alone = run_alone(spec)
        _assert_same_run(alone, (trackers[i], results[i], params[i]))
        assert trackers[i].values("lr") == alone[0].values("lr")  # lr per step: base lr x multiplier
    sgd = [
        make_spec("linreg_1d", "momentum", 0.05, s, hparams={"momentum": m}) for s, m in ((0, 0.5), (1, 0.9))
    ]
    trackers, results, params = run_group(sgd)
    for i, spec in enumerate(sgd):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


def test_a_diverged_trial_stops_at_its_step_and_the_others_go_on():
    """Quadratic, SGD: lr 1.5 gives x <- -2x, so the loss grows 4x per step and passes 1e4 x initial at step 7."""
    specs = [make_spec("quadratic", "sgd", lr, 0, total_steps=20, eval_every=3) for lr in (0.1, 1.5, 0.2)]
    for sync_every in (1, 4, 256):  # the chunked check: the divergence lands inside, at the end, or mid-chunk
        trackers, results, params = run_group(specs, sync_every=sync_every)
        assert [r.status for r in results] == ["completed", "diverged", "completed"]
        assert results[1].steps == 7 and results[1].divergence.endswith("at step 7 (initial 13)")
        assert [s for s, _ in trackers[1].history["train/loss"]] == list(range(8))
        assert [s for s, _ in trackers[1].history["val/loss"]] == [0, 3, 6]
        assert params[1] is None and results[1].final_val == {}
        for i, spec in enumerate(specs):
            _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


def test_non_finite_validation_loss_ends_a_trial_at_that_evaluation():
    """Rosenbrock from its start with SGD lr 1: the iterate overflows to inf; the loop stops at the evaluation."""
    specs = [make_spec("rosenbrock", "sgd", lr, 0, total_steps=30, eval_every=1) for lr in (1e-3, 1.0)]
    trackers, results, params = run_group(specs, sync_every=7)
    for i, spec in enumerate(specs):
        alone = run_alone(spec)
        assert results[i].status == alone[1].status
        assert results[i].steps == alone[1].steps
        assert [s for s, _ in trackers[i].history["train/loss"]] == [
            s for s, _ in alone[0].history["train/loss"]
        ]
    assert results[1].status == "diverged"


def test_split_by_max_trials_gives_the_same_trials():
    specs = [make_spec("linreg_1d", "adam", 0.01 * (i + 1), i) for i in range(5)]
    whole_trackers, _ = run_batched(specs)
    split_trackers, results = run_batched(specs, max_trials=2)
    assert len(results) == 5
    for a, b in zip(whole_trackers, split_trackers):
        assert a.history["train/loss"] == b.history["train/loss"]


def test_record_names_steps_and_evaluation_points():
    """Per step: train/loss, grad_norm, time/wall_s (+ suboptimality); at eval points: val/*, epoch, samples, lr."""
    spec = make_spec("linreg_1d", "sgd", 0.1, 0, batch_size=32, total_steps=9, eval_every=4)
    (tracker,), (result,) = run_batched([spec])
    steps = lambda key: [s for s, _ in tracker.history[key]]  # noqa: E731
    for key in ("train/loss", "grad_norm", "time/wall_s", "train/suboptimality"):
        assert steps(key) == list(range(9))
    for key in ("val/loss", "epoch", "samples_seen", "lr"):
        assert steps(key) == [0, 4, 8, 9]
    assert tracker.values("epoch") == [0.0, 1.0, 2.0, 2.25]  # 100 samples / 32 = 4 steps per epoch
    assert tracker.values("samples_seen") == [0.0, 128.0, 256.0, 288.0]
    assert tracker.values("lr") == [0.1] * 4
    walls = tracker.values("time/wall_s")
    assert walls == sorted(walls) and result.wall_s >= walls[-1]  # the group clock after the last evaluation
    assert result.final_val["loss"] == tracker.values("val/loss")[-1]
    assert result.best_val_loss == min(tracker.values("val/loss"))


def test_unshuffled_batches_and_full_batch():
    specs = [make_spec("linreg_1d", "sgd", lr, 0, shuffle=False, batch_size=30) for lr in (0.1, 0.2)]
    specs += [make_spec("linreg_1d", "sgd", 0.1, 3, batch_size=100)]
    for spec in specs:
        trackers, results, params = run_group([spec, spec])
        _assert_same_run(run_alone(spec), (trackers[0], results[0], params[0]))


def test_group_keys():
    base = make_spec("quadratic", "adam", 0.1, 0)
    same = [make_spec("quadratic", "adam", 0.3, 5, hparams={"betas": [0.8, 0.9], "eps": 1e-6})]
    assert group_key(base) is not None and group_key(same[0]) == group_key(base)
    assert group_key(make_spec("quadratic", "adam", 0.1, 0, batch_size=1, total_steps=13)) != group_key(base)
    assert group_key(make_spec("quadratic", "adam", 0.1, 0, hparams={"amsgrad": True})) != group_key(base)
    assert group_key(make_spec("quadratic", "adamw", 0.1, 0)) != group_key(base)
    lbfgs = dataclasses_replace(
        base, optimizer="lbfgs", hparams={"max_iter": 5, "history_size": 5, "line_search_fn": None}
    )
    assert group_key(lbfgs) is None


def test_user_tasks_batch_through_the_building_blocks_or_fall_back():
    import user_tasks  # noqa: F401 - registers the user's tasks

    quartic = make_spec("user_quartic", "sgd", 0.01, 0)
    assert group_key(quartic) is not None  # only `objective` is its own: vmap batches it
    trackers, results, params = run_group([quartic])
    _assert_same_run(run_alone(quartic), (trackers[0], results[0], params[0]))
    failing = dataclasses_replace(quartic, task=create_task("user_failing"))
    assert group_key(failing) is None  # its own `loss`: the batched form cannot know what it does


def test_tanh_sigmoid_bias_free_layers_a_short_last_batch_and_eight_trials_are_bitwise():
    """A user's MLP with Tanh, Sigmoid and a bias-free layer; batch 100 leaves a last batch of 37 of the 1,437
    training digits (its buffers are another size); eight trials put every trial's block at another offset."""
    import user_tasks  # noqa: F401 - registers the user's tasks

    specs = [
        make_spec("user_tanh_sigmoid_mlp", "adam", lr, seed, batch_size=100, total_steps=17, eval_every=7)
        for lr, seed in [
            (0.01, 0),
            (0.01, 1),
            (0.01, 2),
            (0.003, 3),
            (0.02, 4),
            (0.005, 5),
            (0.001, 6),
            (0.03, 7),
        ]
    ]
    assert specs[0].steps_per_epoch == 15  # step 14 is the short batch, 15 starts a new shuffle
    trackers, results, params = run_group(specs, sync_every=6)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


def dataclasses_replace(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


def test_memory_per_digits_mlp_adam_trial_under_1_mib():
    from harness.batched.engine import trial_bytes

    assert trial_bytes(make_spec("digits_mlp", "adam", 1e-3, 0)) <= 2**20


def test_not_one_group_is_refused():
    with pytest.raises(ValueError, match="one group key"):
        train_group(
            [make_spec("quadratic", "sgd", 0.1, 0), make_spec("linreg_1d", "sgd", 0.1, 0)],
            [MemoryTracker(), MemoryTracker()],
        )


def test_spec_from_a_composed_config_trains_as_the_job_does():
    """The launcher's path: Config -> harness.plan.Plan -> TrialSpec; its trajectory is the single run's."""
    from conftest import compose_config

    from harness.batched.spec import spec_from_plan
    from harness.context import JobContext
    from harness.plan import make_plan

    cfg = compose_config(
        "task=linreg_1d", "optimizer=adam", "optimizer.lr_scale=2", "trainer.max_steps=7", "seed=3"
    )
    spec = spec_from_plan(make_plan(cfg, JobContext()))
    assert (spec.lr, spec.total_steps, spec.seed, spec.batch_size) == (0.002, 7, 3, 32)
    trackers, results, params = run_group([spec])
    _assert_same_run(run_alone(spec), (trackers[0], results[0], params[0]))


def test_trials_recorded_in_a_real_mlflow_store(store):
    """A group writes each trial to its own MLflow run (SQLite): the single run's points, and its outcome tags."""
    from conftest import history, mlflow_client

    from harness.job_run import record_result
    from harness.tracking import stores
    from harness.tracking.port import NewRun
    from harness.tracking.run_tracker import RunTracker

    found = stores.open_store(store)
    experiment = found.ensure_experiment("batched")
    specs = [make_spec("quadratic", "sgd", lr, 0, total_steps=20, eval_every=3) for lr in (0.1, 1.5)]
    trackers = [RunTracker.start(found, experiment, NewRun(f"lr={s.lr}", {}, {})) for s in specs]
    results = train_group(specs, trackers, sync_every=6)
    for tracker, result in zip(trackers, results):
        record_result(tracker, result, tracker.run_id)
    for spec, tracker in zip(specs, trackers):
        alone, alone_result, _ = run_alone(spec)
        for key in ("train/loss", "val/loss", "train/suboptimality"):
            assert history(store, tracker.run_id, key) == alone.history[key]
        run = mlflow_client(store).get_run(tracker.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["harness.status"] == alone_result.status
        assert run.data.metrics["steps"] == alone_result.steps
    assert [r.status for r in results] == ["completed", "diverged"]


def test_an_interrupted_group_still_records_the_steps_it_made():
    """Ctrl-C in the middle of a chunk: each trial's record has the steps done, then the interruption propagates."""
    from harness.batched.engine import _Group

    specs = [make_spec("quadratic", "adam", lr, 0, total_steps=20, eval_every=4) for lr in (0.1, 0.2)]
    trackers = [MemoryTracker() for _ in specs]
    group = _Group(specs, trackers, sync_every=8)
    losses, calls = group.model.losses, []

    def interrupted(batch):
        if len(calls) == 11:
            raise KeyboardInterrupt
        calls.append(1)
        return losses(batch)

    group.model.losses = interrupted
    with pytest.raises(KeyboardInterrupt):
        group.run()
    for tracker, spec in zip(trackers, specs):
        assert [s for s, _ in tracker.history["train/loss"]] == list(range(11))
        assert [s for s, _ in tracker.history["val/loss"]] == [0, 4, 8]
        assert tracker.values("train/loss") == run_alone(spec)[0].values("train/loss")[:11]


@pytest.mark.parametrize(
    "schedule", [ScheduleSpec("cosine", min_factor=0.1), ScheduleSpec("step", step_every=0.25)]
)
def test_sgd_weight_decay_dampening_and_schedules_are_bitwise(schedule):
    hparams = [
        {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3},
        {"momentum": 0.5, "dampening": 0.0, "weight_decay": 1e-2},
    ]
    specs = [
        make_spec("digits_mlp", "momentum", 0.05, i, hparams=h, scheduler=schedule)
        for i, h in enumerate(hparams)
    ]
    trackers, results, params = run_group(specs, sync_every=5)
    for i, spec in enumerate(specs):
        alone = run_alone(spec)
        _assert_same_run(alone, (trackers[i], results[i], params[i]))
        assert trackers[i].values("lr") == alone[0].values("lr")


def test_the_gpu_layer_path_one_bmm_per_layer_within_1e6(monkeypatch):
    """On CUDA every layer is one bmm (no per-trial BLAS calls); the same code on CPU stays within 1e-6."""
    import harness.batched.models as models

    monkeypatch.setattr(models, "_linear_mode", lambda *_: "bmm")
    specs = _specs("digits_mlp", "adam", steps=10)
    trackers, results, params = run_group(specs, sync_every=3)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]), tolerance=1e-6)


def test_adam_trials_leave_the_group_and_the_rest_stay_bitwise():
    """Adam at lr 1000 on the quadratic jumps to a loss 1e4 x the initial one; its state leaves the group."""
    import warnings

    specs = [make_spec("quadratic", "adam", lr, 0, total_steps=12, eval_every=2) for lr in (0.1, 1000.0, 0.3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a workspace of the old group size would be resized with a warning
        trackers, results, params = run_group(specs, sync_every=3)
    assert [r.status for r in results] == ["completed", "diverged", "completed"]
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


@pytest.mark.parametrize("task", ["linreg_1d", "digits_mlp"])
def test_rmsprop_every_branch_with_per_trial_hyperparameters_is_bitwise(task):
    """Momentum, centered and weight decay on, alpha, eps and momentum differing per trial, a cosine schedule."""
    cosine = ScheduleSpec("cosine", min_factor=0.1)
    branches = {"momentum": 0.9, "centered": True, "weight_decay": 1e-2}
    specs = [
        make_spec(
            task, "rmsprop", 0.003, 0, hparams={**branches, "alpha": 0.9, "eps": 1e-6}, scheduler=cosine
        ),
        make_spec(task, "rmsprop", 0.001, 1, hparams={**branches, "momentum": 0.5}, scheduler=cosine),
        make_spec(task, "rmsprop", 0.002, 2, hparams=branches, scheduler=cosine),
    ]
    plain_wd = [  # weight decay without momentum: the decayed gradient's workspace then holds -lr * grad
        make_spec(task, "rmsprop", lr, i, hparams={"weight_decay": 1e-2, "alpha": alpha})
        for i, (lr, alpha) in enumerate(((0.003, 0.9), (0.001, 0.99)))
    ]
    for group in (specs, plain_wd):
        trackers, results, params = run_group(group, sync_every=4)
        for i, spec in enumerate(group):
            alone = run_alone(spec)
            _assert_same_run(alone, (trackers[i], results[i], params[i]))
            assert trackers[i].values("lr") == alone[0].values("lr")


def test_rmsprop_and_adagrad_trials_leave_the_group_and_the_rest_stay_bitwise():
    """lr 1000 on the quadratic: the first step is about 10 x lr per coordinate, a loss 1e4 x the initial one."""
    import warnings

    branches = {"momentum": 0.9, "centered": True, "weight_decay": 0.01}
    for optimizer, hparams in (("rmsprop", branches), ("rmsprop", {}), ("adagrad", {"weight_decay": 0.01})):
        specs = [
            make_spec("quadratic", optimizer, lr, 0, total_steps=12, eval_every=2, hparams=hparams)
            for lr in (0.1, 1000.0, 0.3)
        ]
        with warnings.catch_warnings():
            warnings.simplefilter(
                "error"
            )  # a workspace of the old group size would be resized with a warning
            trackers, results, params = run_group(specs, sync_every=3)
        assert [r.status for r in results] == ["completed", "diverged", "completed"], optimizer
        for i, spec in enumerate(specs):
            _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


@pytest.mark.parametrize("task", ["linreg_1d", "digits_mlp"])
def test_adagrad_lr_decay_weight_decay_and_initial_sum_per_trial_are_bitwise(task):
    hparams = [
        {"lr_decay": 0.01, "weight_decay": 1e-2, "initial_accumulator_value": 0.1, "eps": 1e-8},
        {"lr_decay": 0.0, "weight_decay": 1e-3, "initial_accumulator_value": 0.0},
        {"lr_decay": 0.1, "weight_decay": 1e-2, "initial_accumulator_value": 1.0},
    ]
    specs = [make_spec(task, "adagrad", 0.05, i, hparams=h) for i, h in enumerate(hparams)]
    trackers, results, params = run_group(specs, sync_every=5)
    for i, spec in enumerate(specs):
        _assert_same_run(run_alone(spec), (trackers[i], results[i], params[i]))


def test_rmsprop_and_adagrad_group_keys():
    base = make_spec("quadratic", "rmsprop", 0.01, 0)
    assert group_key(make_spec("quadratic", "rmsprop", 0.1, 3, hparams={"alpha": 0.9})) == group_key(base)
    for branch in ({"momentum": 0.9}, {"centered": True}, {"weight_decay": 0.1}):
        assert group_key(make_spec("quadratic", "rmsprop", 0.01, 0, hparams=branch)) != group_key(base)
    adagrad = make_spec("quadratic", "adagrad", 0.01, 0)
    assert group_key(adagrad) not in (None, group_key(base))
    assert group_key(make_spec("quadratic", "adagrad", 0.1, 1, hparams={"lr_decay": 0.1})) == group_key(
        adagrad
    )


def test_worker_pool_trains_on_while_the_launcher_is_busy():
    """One worker, two pieces, a main thread that does not listen for 2 s: the worker's streamed columns (far over a
    pipe's 64 KiB) do not block it, and it is handed the second piece without the main thread. Then every event is
    there, in order: Assigned before a piece's columns, one Done per piece, every step of every trial."""
    import time

    from harness.sweep import workers

    steps = 3000  # 2 trials x 3000 steps x 3 columns of floats, pickled: ~150 KiB per piece
    pieces = [
        [make_spec("quadratic", "sgd", lr, 0, total_steps=steps, eval_every=steps) for lr in (0.01, 0.02)]
    ]
    pieces.append(
        [make_spec("quadratic", "adam", lr, 1, total_steps=steps, eval_every=steps) for lr in (0.01, 0.02)]
    )
    with workers.Pool(pieces, 1, order=[0, 1]) as pool:
        time.sleep(
            2.0
        )  # the launcher is busy (it used to be: the worker then sat in send, or waited for piece 1)
        events = pool.events(timeout=0)
        while sum(isinstance(e, workers.Done) for e in events) < 2:
            more = pool.events(timeout=30)
            assert more, "the worker stopped sending"
            events += more
        assert pool.alive() == 1
    kinds = [(type(e).__name__, e.piece) for e in events if not isinstance(e, workers.Columns)]
    assert kinds == [("Assigned", 0), ("Done", 0), ("Assigned", 1), ("Done", 1)]
    for piece in (0, 1):
        first = next(i for i, e in enumerate(events) if isinstance(e, workers.Assigned) and e.piece == piece)
        columns = [
            (i, e) for i, e in enumerate(events) if isinstance(e, workers.Columns) and e.piece == piece
        ]
        assert all(i > first for i, _ in columns)
        for trial in (0, 1):
            logged = [
                s for _, e in columns if e.trial == trial and "train/loss" in e.columns for s in e.steps
            ]
            assert logged == list(range(steps))


@pytest.mark.parametrize("batch", [32, 4])  # 4: trial blocks 32 bytes apart, copied to aligned ones
def test_one_output_layer_gradients_are_the_single_runs_autograd(batch):
    """Linear(1, 1): the weight gradient sums over the batch, and ATen's bmm loop (plain multiply-then-add) differs
    from MKL's GEMM where it fuses multiply-adds (AVX2/AVX-512); the batched backward calls the single run's mm."""
    from harness.batched.models import stacked_net_form

    task = create_task("linreg_1d")
    seeds = [0, 1, 2]
    model = stacked_net_form(task).build(task, seeds, torch.device("cpu"))
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        x = torch.rand(len(seeds), batch, 1, dtype=torch.float64, generator=generator)
        y = torch.randn(len(seeds), batch, 1, dtype=torch.float64, generator=generator)
        losses, _ = model.losses_and_grads((x, y))
        for k, seed in enumerate(seeds):
            torch.manual_seed(seed)
            single = task.make_model()
            loss = torch.nn.functional.mse_loss(single(x[k].clone()), y[k].clone())
            loss.backward()
            assert losses[k].item() == loss.item()
            assert torch.equal(model.grads[0][k], single.weight.grad)
            assert torch.equal(model.grads[1][k], single.bias.grad)
