"""The racing sweeper (hydra/sweeper=race): the pure rounds on constructed tables, and one real race (slow)."""

import math
import os
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness.errors import ConfigError
from harness.sweep.race import (
    ELIMINATED,
    FAILED_TEST,
    SETTLED,
    Candidate,
    Race,
    Settings,
    compare,
    paired_t,
    race_grid,
)
from harness.tracking.schema import Pruned

SEEDS = [str(s) for s in range(8)]


def _candidates(table: dict[tuple[str, str], list]) -> list[Candidate]:
    return [Candidate((f"optimizer={o}", f"lr={lr}"), "quadratic", o) for o, lr in table]


def _run(table: dict[tuple[str, str], list], settings: Settings | None = None) -> tuple[Race, list[list]]:
    """Race the constructed table (optimizer, lr) -> score per seed; returns the race and each round's trials."""
    race = Race(_candidates(table), SEEDS, settings or Settings())
    by_key = dict(zip(race.candidates, table.values()))
    rounds = []
    while trials := race.next_trials():
        rounds.append(trials)
        race.record([(c, s, by_key[c][SEEDS.index(s)]) for c, s in trials])
    return race, rounds


def test_paired_t_is_scipys_one_sided_paired_t():
    a = [1.0, 1.2, 0.9, 1.4]
    b = [1.5, 1.4, 1.6, 1.45]
    expected = scipy_stats.ttest_rel(b, a, alternative="greater").pvalue
    test = paired_t([y - x for x, y in zip(a, b)])
    assert test.seeds == 4
    assert test.p_value == pytest.approx(expected, rel=1e-12)
    assert paired_t([0.5, 0.5]).p_value == 0.0  # the same positive difference on every seed
    assert paired_t([0.0, 0.0]).p_value == 1.0
    assert math.isnan(paired_t([0.3]).p_value)  # one seed: no spread, no test


def test_elimination_exactly_when_the_test_rejects():
    # Differences from the leader on seeds 0, 1: (0.2, 0.21) -> t = 41 (p 0.0077 < 0.05, eliminated);
    # (0.02, 0.2) -> t = 1.22 (p 0.22, kept).
    table = {
        ("sgd", "0.1"): [1.0, 1.1] + [1.0] * 6,
        ("sgd", "1"): [1.2, 1.31] + [1.2] * 6,
        ("sgd", "10"): [1.02, 1.3] + [1.0] * 6,
    }
    race = Race(_candidates(table), SEEDS, Settings())
    by_key = dict(zip(race.candidates, table.values()))
    trials = race.next_trials()
    assert len(trials) == 6  # every configuration at the first 2 seeds
    events = race.record([(c, s, by_key[c][SEEDS.index(s)]) for c, s in trials])
    [event] = events
    assert (event.event, event.candidate.key[1], event.against.key[1]) == (ELIMINATED, "lr=1", "lr=0.1")
    expected = scipy_stats.ttest_rel([1.2, 1.31], [1.0, 1.1], alternative="greater").pvalue
    assert event.test.p_value == pytest.approx(expected, rel=1e-12)
    assert event.test.p_value < 0.05
    kept = compare(race.scores[race.candidates[0]], race.scores[race.candidates[2]])
    assert kept.p_value == pytest.approx(
        scipy_stats.ttest_rel([1.02, 1.3], [1.0, 1.1], alternative="greater").pvalue
    )
    assert kept.p_value > 0.05
    survivors = [(c.key[1], seed) for c, seed in race.next_trials()]
    assert survivors == [("lr=0.1", "2"), ("lr=0.1", "3"), ("lr=10", "2"), ("lr=10", "3")]  # seeds 2 and 3


def test_stops_when_decided():
    # adam's lr=1 beats everything by far on every seed: after round 1 each other configuration is eliminated and
    # sgd is settled; decided at 2 seeds, 8 trials of the 32.
    table = {
        ("sgd", "0.1"): [2.0 + 0.01 * i for i in range(8)],
        ("sgd", "1"): [3.0 + 0.02 * i for i in range(8)],
        ("adam", "0.1"): [1.5 + 0.01 * (i % 3) for i in range(8)],
        ("adam", "1"): [0.5 + 0.01 * (i % 2) for i in range(8)],
    }
    race, rounds = _run(table)
    assert [len(r) for r in rounds] == [8]
    assert race.trials_run() == 8
    [choice] = race.choices()
    assert choice.decided
    assert (choice.winner.optimizer, choice.winner.key[1]) == ("adam", "lr=1")
    assert choice.chosen["sgd"].key[1] == "lr=0.1"
    assert choice.alive == {"sgd": 1, "adam": 1}
    assert [e.event for e in race.events].count(SETTLED) == 1
    assert choice.probability["sgd"] >= 0.95
    assert choice.sentence().startswith("quadratic: adam (optimizer=adam lr=1) beats sgd with probability")


def test_uses_every_seed_when_undecided():
    # Two optimizers that alternate on the seeds: never decided, every seed is spent on both.
    table = {
        ("sgd", "1"): [1.0 + (0.1 if i % 2 else -0.1) for i in range(8)],
        ("adam", "1"): [1.0 + (-0.1 if i % 2 else 0.1) for i in range(8)],
    }
    race, rounds = _run(table)
    assert [len(r) for r in rounds] == [4, 4, 4, 4]  # two seeds each per later round (the default)
    assert race.trials_run() == 16
    one_by_one, rounds = _run(table, Settings(seeds_per_round=1))
    assert [len(r) for r in rounds] == [4, 2, 2, 2, 2, 2, 2] and one_by_one.trials_run() == 16
    [choice] = race.choices()
    assert not choice.decided
    assert "seeds ran out" in choice.sentence()


def test_a_diverged_configuration_never_wins():
    # lr=10 diverges (None) on seed 1 and scores lowest elsewhere: eliminated by failures in round 1.
    table = {
        ("sgd", "0.1"): [1.0, 1.1, 1.0, 1.1, 1.0, 1.1, 1.0, 1.1],
        ("sgd", "10"): [0.1, None, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        ("adam", "1"): [2.0, float("nan"), 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
    }
    race, _ = _run(table)
    [eliminated] = [e for e in race.events if e.event == ELIMINATED]
    assert (eliminated.candidate.key[1], eliminated.test.test, eliminated.test.p_value) == (
        "lr=10",
        FAILED_TEST,
        0.0,
    )
    [choice] = race.choices()
    assert (choice.winner.optimizer, choice.winner.key[1]) == ("sgd", "lr=0.1")
    assert choice.decided  # adam failed where sgd did not: settled by failures
    assert race.scores[race.candidates[1]]["1"] == math.inf


def test_one_optimizer_races_until_one_configuration_is_left():
    table = {
        ("sgd", "0.1"): [1.0, 1.3, 1.1, 1.2, 1.0, 1.1, 1.0, 1.1],
        ("sgd", "1"): [1.1, 1.2, 1.3, 1.4, 1.2, 1.3, 1.2, 1.3],
    }
    race, rounds = _run(table)
    [choice] = race.choices()
    assert choice.decided and choice.alive == {"sgd": 1}
    assert choice.winner.key[1] == "lr=0.1"
    assert len(rounds) > 1  # not separable at 2 seeds (differences 0.1, -0.1)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("first_seeds", 1),
        ("seeds_per_round", 0),
        ("confidence", 1.0),
        ("threshold", 0.2),
        ("first_seeds", 2.5),
    ],
)
def test_settings_refuse_out_of_range_values(key, value):
    with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}="):
        Settings(**{key: value})


def test_a_pruned_trial_eliminates_its_configuration_with_the_rung_as_its_test():
    """Round 1 with successive halving: sgd lr=1's trials stopped at rung 1 (step 5); they carry no score, their
    configuration is out (against sgd's leader, no p-value), the trials count as trained, and round 2 gives it no
    seed."""
    table = {
        ("sgd", "0.1"): [1.0, 1.1],
        ("sgd", "1"): [None, None],
        ("sgd", "0.3"): [1.2, 1.5],
        ("adam", "1"): [3, 4],
    }
    race = Race(_candidates(table), SEEDS, Settings())
    by_key = dict(zip(race.candidates, table.values()))
    pruned = race.candidates[1]
    results = [
        (c, s, Pruned(1, 5) if c is pruned else by_key[c][SEEDS.index(s)]) for c, s in race.next_trials()
    ]
    events = race.record(results)
    [out] = [e for e in events if e.candidate is pruned]
    assert (out.event, out.against.label, out.test.test, out.test.seeds) == (
        ELIMINATED,
        "optimizer=sgd lr=0.1",
        "pruned at rung 1 (step 5)",
        2,
    )
    assert math.isnan(out.test.p_value) and out.row()[9] is None  # no p-value (JSON null)
    assert pruned not in race.alive and race.scores[pruned] == {}
    assert race.trials_run() == 8
    assert pruned not in {c for c, _ in race.next_trials()}


def test_the_grid_splits_into_configurations_and_seeds():
    grid = [
        ["task=linreg_10d", f"optimizer={o}", f"optimizer.lr_scale={lr}", f"seed={s}"]
        for o in ("sgd", "adam")
        for lr in ("0.1", "1")
        for s in ("3", "1", "2")
    ]
    split = race_grid(grid, "seed", {"task": "quadratic", "optimizer": "sgd"})
    assert split.seeds == ["3", "1", "2"]  # in the order typed
    assert split.size == 12
    assert [(c.task, c.optimizer, c.label) for c in split.candidates] == [
        ("linreg_10d", "sgd", "optimizer=sgd optimizer.lr_scale=0.1"),
        ("linreg_10d", "sgd", "optimizer=sgd optimizer.lr_scale=1"),
        ("linreg_10d", "adam", "optimizer=adam optimizer.lr_scale=0.1"),
        ("linreg_10d", "adam", "optimizer=adam optimizer.lr_scale=1"),
    ]
    assert split.jobs[(split.candidates[3], "2")] == grid[11]
    with pytest.raises(ConfigError, match=r"seed='4' is not allowed: hydra/sweeper=race needs"):
        race_grid([["optimizer=sgd", "seed=4"]], "seed", {})


RACE = (
    "-m",
    "hydra/sweeper=race",
    "hydra/launcher=batched",
    "task=linreg_10d",
    "optimizer=sgd,adam",
    "optimizer.lr_scale=0.001,0.9,1",
    "seed=range(0,6)",
    "trainer.max_steps=50",
)


def _race_record(uri: str) -> tuple[object, list]:
    """The sweep's parent run and its children, as MLflow's client reads them."""
    from conftest import mlflow_client

    client = mlflow_client(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "linreg_10d"]
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    return parent, [r for r in runs if r is not parent]


@pytest.mark.slow
def test_a_real_race_decides_in_round_one_and_resumes_with_the_stored_losses(tmp_path):
    """linreg_10d, sgd vs adam at 3 lr scales, 6 seeds: lr_scale 0.001 and 0.9 lose to 1 by far on both seeds of
    round 1, and adam's best loses to sgd's by far: 12 trials of 36, one round. Run again with a threshold no 6 seeds
    reach, the same sweep resumes: round 1's 12 points come back from the store (the same 4 eliminations), and the two
    leaders race on through seeds 2..5, two a round: 8 more trials, rounds 2-3."""
    import json

    from conftest import mlflow_client, run_cli

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    first = run_cli(*RACE, f"tracking.uri={uri}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[race] 12 of 36 trials trained" in first.stderr
    parent, children = _race_record(uri)
    assert len(children) == 12
    assert {c.data.tags["harness.race.round"] for c in children} == {"1"}
    assert parent.data.tags["harness.race.rounds"] == "1"
    assert parent.data.tags["harness.race.decision"].startswith(
        "linreg_10d: sgd (optimizer=sgd optimizer.lr_scale=1) beats adam with probability"
    )
    client = mlflow_client(uri)
    rounds = json.loads(Path(client.download_artifacts(parent.info.run_id, "race/rounds.json")).read_text())
    assert [(r[0], r[2], r[3], r[4]) for r in rounds["data"]] == [
        (1, "sgd", "optimizer=sgd optimizer.lr_scale=0.001", "eliminated"),
        (1, "sgd", "optimizer=sgd optimizer.lr_scale=0.9", "eliminated"),
        (1, "adam", "optimizer=adam optimizer.lr_scale=0.001", "eliminated"),
        (1, "adam", "optimizer=adam optimizer.lr_scale=0.9", "eliminated"),
        (1, "adam", "optimizer=adam optimizer.lr_scale=1", "settled"),
    ]
    assert all(r[9] < 0.05 for r in rounds["data"])  # p-values

    second = run_cli(*RACE, f"tracking.uri={uri}", "hydra.sweeper.threshold=0.9999999", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "12 grid points already done" in second.stderr
    assert "[race] 20 of 36 trials trained" in second.stderr
    parent_again, children = _race_record(uri)
    assert parent_again.info.run_id == parent.info.run_id
    by_round = sorted(c.data.tags["harness.race.round"] for c in children)
    assert by_round == ["1"] * 12 + ["2"] * 4 + ["3"] * 4  # two seeds per leader and round
    assert parent_again.data.tags["harness.race.rounds"] == "3"
    assert "leads (seeds ran out) adam" in parent_again.data.tags["harness.race.decision"]
    later = {c.data.tags["harness.overrides"] for c in children if c.data.tags["harness.race.round"] != "1"}
    assert all("optimizer.lr_scale=1 " in o for o in later)  # only the two leaders raced on
    # In MLflow's log_table format, listed as tables (what MlflowClient.load_table finds the run by).
    logged = json.loads(parent_again.data.tags["mlflow.loggedArtifacts"])
    assert {e["path"] for e in logged if e["type"] == "table"} >= {"race/rounds.json", "race/alive.json"}
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "race/alive.json")).read_text())
    alive = pd.DataFrame(table["data"], columns=table["columns"])
    assert alive[["round", "optimizer", "alive", "trials"]].values.tolist() == [
        [0, "sgd", 3, 0],
        [0, "adam", 3, 0],
        [1, "sgd", 1, 6],
        [1, "adam", 1, 6],
        *[[r, o, 1, 2] for r in range(2, 4) for o in ("sgd", "adam")],
    ]


@pytest.mark.slow
def test_a_race_killed_while_it_trains_resumes_to_the_same_decision(tmp_path):
    """SIGINT while a round trains (children RUNNING): exit 130, nothing left RUNNING. The same command again
    continues the same parent, replays the rounds done from the stored losses, trains what was not done and decides
    as an uninterrupted race does (3,000 steps: 12 trials in round 1, the 4 survivors' third and fourth seeds in
    round 2, then sgd at lr_scale 1 beats adam)."""
    import signal
    import subprocess
    import sys

    from conftest import running_runs, wait_for

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "harness.train", *RACE, "trainer.max_steps=3000", f"tracking.uri={uri}"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: running_runs(uri, children_only=True), what="round 1's runs", proc=proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert running_runs(uri) == []
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing parent run" in again.stderr
    assert "[race] 20 of 36 trials trained" in again.stderr
    parent, children = _race_record(uri)
    done = [c for c in children if c.data.tags.get("harness.status") == "completed"]
    assert sorted(c.data.tags["harness.race.round"] for c in done) == ["1"] * 12 + ["2"] * 8
    assert parent.data.tags["harness.race.rounds"] == "2"
    assert parent.data.tags["harness.race.decision"].startswith(
        "linreg_10d: sgd (optimizer=sgd optimizer.lr_scale=1) beats adam"
    )


@pytest.mark.slow  # three sweep processes
def test_bad_race_or_halving_options_are_refused_before_any_run(tmp_path):
    """Range errors of hydra.sweeper.* and hydra.launcher.rungs/keep: one line naming the key, exit 2, no parent run
    and no store written (the sweep callback checks both plugins before it creates the parent)."""
    from conftest import run_cli

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for bad, key in (
        ("hydra.sweeper.first_seeds=1", "hydra.sweeper.first_seeds=1"),
        ("hydra.launcher.rungs=[0.5,0.2]", "hydra.launcher.rungs=[0.5, 0.2]"),
        ("hydra.launcher.keep=1.5", "hydra.launcher.keep=1.5"),
    ):
        done = run_cli(
            *RACE, bad, f"tracking.uri={uri}", cwd=tmp_path, env={"MLFLOW_DISABLE_TELEMETRY": "true"}
        )
        assert done.returncode == 2, done.stderr[-2000:]  # a config error
        errors = [line for line in done.stderr.splitlines() if key in line]
        assert len(errors) == 1 and "is not allowed" in errors[0], done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_race_with_successive_halving_prunes_in_round_one_and_resumes(tmp_path):
    """The linreg race with a rung at half the budget, keeping half: per optimizer, of its 3 configurations the one
    with the worst mean val/loss at the rung (read back from the store) stops there on both seeds: 4 runs pruned,
    FINISHED, renamed `[pruned] ...`, tagged with rung and step, their curve exactly up to the rung and no final
    validation metrics; the race records their elimination by the rung. Run again, nothing is launched and the
    decision is the same."""
    import json

    from conftest import mlflow_client, run_cli

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    halving = ("hydra.launcher.rungs=[0.5]", "trainer.eval_every=5")
    first = run_cli(*RACE, *halving, f"tracking.uri={uri}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    parent, children = _race_record(uri)
    client = mlflow_client(uri)
    pruned = [c for c in children if c.data.tags["harness.status"] == "pruned"]
    assert len(pruned) == 4
    for run in pruned:
        assert run.info.status == "FINISHED" and run.info.run_name.startswith("[pruned] ")
        assert (run.data.tags["harness.rung"], run.data.tags["harness.pruned_at"]) == ("1", "25")
        assert run.data.metrics["steps"] == 25 and "final/val/loss" not in run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(25))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [
            0,
            5,
            10,
            15,
            20,
            25,
        ]
    round_one = [c for c in children if c.data.tags["harness.race.round"] == "1"]
    for optimizer in ("sgd", "adam"):
        at_rung = {}
        for run in round_one:
            if run.data.tags["harness.optimizer"] == optimizer:
                [point] = [m for m in client.get_metric_history(run.info.run_id, "val/loss") if m.step == 25]
                at_rung.setdefault(run.data.params["optimizer.lr_scale"], []).append(point.value)
        worst = max(at_rung, key=lambda lr: sum(at_rung[lr]) / 2)
        assert {
            r.data.params["optimizer.lr_scale"]
            for r in pruned
            if r.data.tags["harness.optimizer"] == optimizer
        } == {worst}
    rounds = json.loads(Path(client.download_artifacts(parent.info.run_id, "race/rounds.json")).read_text())
    by_rung = [r for r in rounds["data"] if r[6] == "pruned at rung 1 (step 25)"]
    assert len(by_rung) == 2 and all(r[0] == 1 and r[4] == "eliminated" for r in by_rung)
    decision = parent.data.tags["harness.race.decision"]

    # The report: the race's spend from the children's steps, pruned runs counted but never ranked.
    from harness.report import load
    from harness.report.build import write_report

    report = write_report(load.load(uri, "linreg_10d"), tmp_path / "report", workers=1)
    steps = sum(c.data.metrics["steps"] for c in children)
    share = steps / (36 * 50)
    rounds = int(parent.data.tags["harness.race.rounds"])
    assert report.content.race.headline == (
        f"Raced: {len(children)} of 36 trials ({len(children) / 36:.0%}), {share:.0%} of the whole grid's "
        f"step budget, in {rounds} round{'s' if rounds > 1 else ''}; 4 pruned at a rung."
    )
    assert report.content.race.headline.replace("'", "&#x27;") in report.html.read_text()
    assert (tmp_path / "report" / "figures" / "race.png").stat().st_size > 10_000
    ranked = json.loads(report.ranking_json.read_text())
    assert sum(row[ranked["columns"].index("trials")] for row in ranked["data"]) == len(children) - 4
    assert report.banner is None  # a finished race is no unfinished grid

    again = run_cli(*RACE, *halving, f"tracking.uri={uri}", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to launch" in again.stderr or "already done" in again.stderr
    parent_again, children_again = _race_record(uri)
    assert len(children_again) == len(children)
    assert parent_again.data.tags["harness.race.decision"] == decision
