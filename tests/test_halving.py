"""Successive halving inside a batched group (harness.batched.halving): the rungs, who stops, and that the trials
that go on train exactly as without halving."""

import math

import pytest
from test_batched import make_spec, run_alone, run_group

from harness.batched.halving import Halving, check, survivors
from harness.errors import ConfigError
from harness.tracking import schema


def test_rungs_are_the_first_evaluation_points_at_or_after_their_fraction():
    assert Halving((0.25, 0.5)).steps(100, 1) == [25, 50]
    assert Halving((0.25, 0.5)).steps(100, 10) == [30, 50]
    assert Halving((0.25, 0.5)).steps(12, 5) == [5, 10]
    assert Halving((0.3, 0.35)).steps(100, 50) == [50]  # both round up to the same point: one rung
    assert Halving((0.9,)).steps(12, 5) == []  # the next point is the end: nothing left to save


def test_survivors_per_optimizer_by_mean_over_seeds():
    optimizers = ["sgd"] * 6 + ["adam"] * 3
    configurations = [1, 1, 2, 2, 3, 3, 4, 5, 6]
    losses = [1.0, 3.0, 2.0, 2.5, 0.5, 9.0, 5.0, math.nan, 4.0]
    # sgd: means 2.0, 2.25, 4.75 -> keep ceil(1.5) = 2: configurations 1 and 2. adam: 5, inf, 4 -> keep 2: 6 and 4.
    assert survivors(optimizers, configurations, losses, 0.5) == [0, 1, 2, 3, 6, 8]
    assert survivors(optimizers, configurations, losses, 0.01) == [0, 1, 8]  # at least one each
    assert survivors(["sgd", "sgd"], [1, 2], [1.0, 1.0], 0.5) == [0]  # a tie keeps the first


@pytest.mark.parametrize(
    "rungs, keep, key",
    [
        ([0.5, 0.25], 0.5, "rungs"),
        ([0.25, 0.25], 0.5, "rungs"),
        ([1.0], 0.5, "rungs"),
        (["half"], 0.5, "rungs"),
        ([0.5], 0, "keep"),
        ([0.5], 1.0, "keep"),
        ([0.5], True, "keep"),
    ],
)
def test_out_of_range_options_are_refused_naming_the_key(rungs, keep, key):
    with pytest.raises(ConfigError, match=f"hydra.launcher.{key}"):
        check(rungs, keep)


def test_pruned_trials_stop_at_their_rung_and_the_rest_train_as_without_halving():
    """4 lrs x 2 seeds of SGD on digits_mlp, 20 steps, rungs at steps 5 and 10 keeping half: 2 configurations stop
    at step 5, 1 at step 10, the last trains on. Who stops follows from the unhalved run's val/loss at the rung
    (mean over the two seeds); every record is the unhalved one, cut at the rung for the pruned; the survivor's is
    the single run's, bitwise."""
    lrs = (0.3, 0.03, 0.1, 0.003)
    specs = [
        make_spec("digits_mlp", "sgd", lr, seed, total_steps=20, eval_every=5)
        for lr in lrs
        for seed in (0, 1)
    ]
    full, full_results, _ = run_group(specs, sync_every=7)
    halved, results, params = run_group(specs, sync_every=7, halving=Halving((0.25, 0.5)))

    def mean_at(step, i):
        return sum(dict(full[j].history["val/loss"])[step] for j in (2 * i, 2 * i + 1)) / 2

    order = sorted(range(4), key=lambda i: mean_at(5, i))
    out_at_5 = set(order[2:])
    out_at_10 = {max(order[:2], key=lambda i: mean_at(10, i))}
    [kept] = set(range(4)) - out_at_5 - out_at_10
    for i in range(4):
        for j in (2 * i, 2 * i + 1):
            rung, stop = (1, 5) if i in out_at_5 else (2, 10) if i in out_at_10 else (None, 20)
            r = results[j]
            assert (r.status, r.steps, r.rung) == (
                (schema.PRUNED, stop, rung) if rung else ("completed", 20, None)
            )
            for key, points in full[j].history.items():
                at_evaluations = (
                    points[-1][0] == 20
                )  # val/*, epoch, samples_seen, lr: up to the rung's evaluation
                want = [(s, v) for s, v in points if s < stop or (s == stop and at_evaluations)]
                if key != schema.WALL_S:
                    assert halved[j].history.get(key, []) == want, (j, key)
            assert (r.final_val == {}) == (rung is not None)
            assert (params[j] is None) == (rung is not None)
    alone = run_alone(specs[2 * kept])
    assert halved[2 * kept].values("train/loss") == alone[0].values("train/loss")
    assert all(a.equal(b) for a, b in zip(params[2 * kept], alone[2]))
    assert [r.final_val for r in results if r.status == "completed"] == [
        full_results[2 * kept].final_val,
        full_results[2 * kept + 1].final_val,
    ]


def test_who_is_pruned_does_not_depend_on_how_many_workers_train_the_group(tmp_path):
    """Halving ranks a whole batched group: 4 lrs x 2 seeds of SGD in one group, rungs at steps 5 and 10 keeping half,
    prune 2 configurations at step 5 and 1 at step 10 whether one worker trains the group or two (a group cut in
    halves to feed two workers would rank 2 lrs per half and keep 2)."""
    from conftest import mlflow_client, run_cli

    grid = (
        "-m",
        "task=digits_mlp",
        "optimizer=sgd",
        "optimizer.lr_scale=0.03,0.3,1,3",
        "seed=0,1",
        "trainer.max_steps=20",
        "trainer.eval_every=5",
        "hydra/launcher=batched",
        "hydra.launcher.rungs=[0.25,0.5]",
    )
    pruned = {}
    for workers in (1, 2):
        uri = f"sqlite:///{tmp_path}/workers{workers}.db"
        done = run_cli(*grid, f"hydra.launcher.workers={workers}", f"tracking.uri={uri}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        client = mlflow_client(uri)
        [experiment] = [e for e in client.search_experiments() if e.name == "digits_mlp"]
        runs = client.search_runs([experiment.experiment_id], "tags.`harness.role` = 'job'")
        pruned[workers] = {
            (r.data.params["optimizer.lr_scale"], r.data.params["seed"]): r.data.tags.get("harness.rung")
            for r in runs
            if r.data.tags["harness.status"] == "pruned"
        }
    # 2 configurations x 2 seeds out at rung 1, 1 configuration at rung 2
    assert sorted(pruned[1].values()) == ["1"] * 4 + ["2"] * 2
    assert pruned[2] == pruned[1]
