"""The race (hydra/sweeper=race) against the exhaustive grid it races, side by side.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_race.py demo --orderings 10
    PYTHONPATH=. .venv/bin/python benchmarks/bench_race.py linreg --orderings 10
    PYTHONPATH=. .venv/bin/python benchmarks/bench_race.py demo --orderings 10 --rungs 0.25,0.5

`--rungs`: successive halving in round 1 (hydra.launcher.rungs, `--keep` its share): the replay prunes with the
engine's own rule (harness.batched.halving.survivors) on the exhaustive runs' val/loss at the rungs, per group of the
batched launcher (the configurations that differ only in lr), so a pruned trial costs the steps up to its rung.

1. The exhaustive grid, trained as a user types it (`hydra/sweeper=harness`, the batched launcher), timed.
2. The race as a user types it (`hydra/sweeper=race`, the same grid, the seeds in the order typed), timed; its
   trials' losses are checked against the exhaustive grid's (training is a function of configuration and seed).
3. The race replayed on the exhaustive grid's losses for more orderings of the seeds (harness.sweep.race is pure:
   given the same losses it makes the same decisions a real race would), to show how stable its decision is.
For each: the race's chosen configuration per optimizer must lie in that optimizer's 95 % tie set, and its winner
among the optimizers tied with the exhaustive winner. Tie sets come from harness.report.stats's stratified bootstrap
on the exhaustive runs: an optimizer's tie set is the fewest configurations that together are chosen (lowest mean)
in at least 95 % of the replicates; the winner's, the exhaustive winner and every optimizer whose comparison with it
is not decided (stats.analyse). Trial-steps are the `steps` of the runs (a diverged run counts the steps it took).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.batched.halving import Halving, survivors  # noqa: E402
from harness.report import stats  # noqa: E402
from harness.sweep.race import Race, Settings, race_grid  # noqa: E402
from harness.tracking import schema, stores  # noqa: E402
from harness.tracking.schema import Pruned  # noqa: E402

CASES = {
    "demo": ["+sweep=demo", "seed=range(0,8)"],
    "linreg": [
        "task=linreg_10d",
        "optimizer=sgd,momentum,adam",
        "optimizer.lr_scale=0.01,0.1,0.3,1,3",
        "data.batch_size=8,32",
        "trainer.max_steps=200",
        "seed=range(0,8)",
    ],
}
RACE = ["hydra/sweeper=race", "hydra/launcher=batched"]
EXHAUSTIVE = ["hydra/launcher=batched"]


def sweep(arguments: list[str], uri: str, cwd: Path) -> float:
    """Run `python -m harness.train -m ...` as a user types it; its wall seconds."""
    command = [sys.executable, "-m", "harness.train", "-m", *arguments, f"tracking.uri={uri}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    print("\n".join(line for line in done.stderr.splitlines() if line.startswith("[race]")), flush=True)
    return wall


def trials(uri: str) -> tuple[list[list[str]], pd.DataFrame]:
    """The latest sweep's grid (in order) and one row per child: overrides, loss (None unless completed), steps,
    initial val loss."""
    found = stores.open_store(uri, create=False)
    [experiment] = [found.experiment(name) for name in found.experiment_names() if name != "Default"]
    parent = found.latest_parent(experiment.experiment_id)
    artifacts = parent.info.artifact_uri.removeprefix("file://")
    grid = json.loads((Path(artifacts) / schema.GRID_ARTIFACT).read_text())
    children = found.children(experiment.experiment_id, parent.info.run_id)
    curves = found.histories([c.info.run_id for c in children], [schema.VAL_LOSS])
    val_at = {run_id: dict(zip(rows["step"], rows["value"])) for run_id, rows in curves.groupby("run_id")}
    rows = [
        {
            "overrides": c.data.tags[schema.OVERRIDES],
            "point": " ".join(
                o for o in c.data.tags[schema.OVERRIDES].split() if not o.startswith("tracking.uri=")
            ),
            "outcome": c.data.tags.get(schema.STATUS),
            "task": c.data.tags.get(schema.TASK, ""),
            "loss": c.data.metrics.get(schema.FINAL_VAL_LOSS),
            "steps": c.data.metrics.get(schema.STEPS, 0.0),
            "initial_val_loss": val_at.get(c.info.run_id, {}).get(0, np.nan),
            "val_at": val_at.get(c.info.run_id, {}),
            "total_steps": int(c.data.params.get(schema.RESOLVED_TOTAL_STEPS, 0)),
        }
        for c in children
    ]
    return grid, pd.DataFrame(rows)


def stats_frame(grid, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The exhaustive runs as stats.analyse reads them (a configuration: the race's candidate label)."""
    split = race_grid(grid, "seed", {"task": table["task"].iloc[0], "optimizer": ""})
    by_overrides = table.set_index("overrides")
    rows = []
    for (candidate, seed), overrides in split.jobs.items():
        row = by_overrides.loc[" ".join(overrides)]
        rows.append(
            {
                "task": candidate.task,
                "optimizer": candidate.optimizer,
                "configuration": candidate.label,
                "seed": float(seed),
                "outcome": row["outcome"],
                "final_val_loss": row["loss"] if row["outcome"] == schema.COMPLETED else np.nan,
                "initial_val_loss": row["initial_val_loss"],
                "steps": row["steps"],
                "val_at": row["val_at"],
                "total_steps": row["total_steps"],
            }
        )
    return pd.DataFrame(rows), split


CONFIG = ["task", "optimizer", "configuration"]


def tie_sets(frame: pd.DataFrame, method: stats.Method) -> tuple[dict, dict]:
    """(task, optimizer) -> its 95 % tie set of configurations; task -> the optimizers tied with the winner."""
    configs, winners = {}, {}
    for task, layout in stats._layouts(frame, stats.run_scores(frame), CONFIG).items():
        rng = stats._generator(method, task)
        replicates = np.concatenate(
            [stats._aggregate(x, "mean") for x in stats._stratified(layout, rng, method.replicates)]
        )
        picks = stats._choose(replicates, layout)
        point = stats._choose(stats._aggregate(layout.packed[None], "mean"), layout)[0]
        for i, name in enumerate(layout.optimizers):
            shares = pd.Series(picks[:, i]).value_counts(normalize=True)
            cumulative = shares.cumsum()
            kept = list(shares.index[: int((cumulative < method.confidence).sum()) + 1]) + [point[i]]
            configs[(task, name)] = set(layout.configs.iloc[kept]["configuration"])
    analysis = stats.analyse(frame, method, CONFIG)
    for task, rows in analysis.comparisons.groupby("task"):
        winners[task] = {rows["better"].iloc[0], *rows.loc[~rows["decided"], "other"]}
    return configs, winners


def replay(split, frame: pd.DataFrame, seeds: list[str], settings: Settings, halving: Halving | None) -> Race:
    """The race on the exhaustive grid's losses, with the seeds in this order (round 1 halved when `halving`)."""
    value = {
        (r.configuration, str(int(r.seed))): (r.final_val_loss if r.outcome == schema.COMPLETED else None)
        for r in frame.itertuples()
    }
    race = Race(split.candidates, seeds, settings)
    while batch := race.next_trials():
        pruned = _halve(batch, frame, halving) if halving is not None and race.round == 0 else {}
        race.record([(c, s, pruned.get((c, s), value[(c.label, s)])) for c, s in batch])
    return race


def _halve(batch, frame: pd.DataFrame, halving: Halving) -> dict:
    """(candidate, seed) -> Pruned for the trials the engine would stop, group by group (candidates that differ only
    in their lr overrides), from the exhaustive runs' val/loss at each rung."""
    rows = {(r.configuration, str(int(r.seed))): r for r in frame.itertuples()}
    groups: dict[tuple, list] = {}
    for c, s in batch:
        groups.setdefault(tuple(o for o in c.key if not o.startswith("optimizer.lr")), []).append((c, s))
    pruned = {}
    for trials in groups.values():
        first = rows[(trials[0][0].label, trials[0][1])]
        evaluations = sorted(first.val_at)
        every = evaluations[1] - evaluations[0] if len(evaluations) > 1 else first.total_steps
        live = list(trials)
        for rung, step in enumerate(halving.steps(first.total_steps, every), start=1):
            live = [
                t for t in live if step in rows[(t[0].label, t[1])].val_at
            ]  # a diverged trial left before
            losses = [rows[(c.label, s)].val_at[step] for c, s in live]
            kept = survivors([c.optimizer for c, _ in live], [c.label for c, _ in live], losses, halving.keep)
            pruned.update({t: Pruned(rung, step) for i, t in enumerate(live) if i not in kept})
            live = [live[i] for i in kept]
    return pruned


def judge(race: Race, frame: pd.DataFrame, configs: dict, winners: dict) -> dict:
    """The race's choices against the tie sets, and its share of the exhaustive trial-steps."""
    steps = {(r.configuration, str(int(r.seed))): r.steps for r in frame.itertuples()}
    used = sum(steps[(c.label, s)] for c, scores in race.scores.items() for s in scores)
    used += sum(p.step for stopped in race.pruned.values() for p in stopped.values())
    chosen_ok = all(
        choice.chosen[o].label in configs[(choice.task, o)]
        for choice in race.choices()
        for o in choice.chosen
    )
    winner_ok = all(
        choice.winner.optimizer in winners.get(choice.task, {choice.winner.optimizer})
        for choice in race.choices()
    )
    return {
        "trials": race.trials_run(),
        "rounds": race.round,
        "step_share": used / frame["steps"].sum(),
        "chosen_in_tie_sets": chosen_ok,
        "winner_in_tie_set": winner_ok,
        "decision": "; ".join(f"{c.winner.optimizer} ({c.winner.label})" for c in race.choices()),
        "decided": all(c.decided for c in race.choices()),
        "trials_per_optimizer": dict(
            Counter(c.optimizer for c, scores in race.scores.items() for _ in scores)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument(
        "--orderings", type=int, default=10, help="seed orderings replayed (the first as typed)"
    )
    parser.add_argument("--no-real-race", action="store_true", help="replay only: no race sweep of its own")
    parser.add_argument(
        "--confidence", type=float, default=Settings.confidence, help="hydra.sweeper.confidence"
    )
    parser.add_argument("--threshold", type=float, default=Settings.threshold, help="hydra.sweeper.threshold")
    parser.add_argument(
        "--rungs", default="", help="hydra.launcher.rungs, e.g. 0.25,0.5 (default: no halving)"
    )
    parser.add_argument("--keep", type=float, default=0.5, help="hydra.launcher.keep")
    parser.add_argument(
        "--seeds-per-round", type=int, default=Settings.seeds_per_round, help="hydra.sweeper.seeds_per_round"
    )
    args = parser.parse_args()
    settings = Settings(
        seeds_per_round=args.seeds_per_round, confidence=args.confidence, threshold=args.threshold
    )
    method = stats.Method()
    race_options = [
        f"hydra.sweeper.confidence={args.confidence}",
        f"hydra.sweeper.threshold={args.threshold}",
        f"hydra.sweeper.seeds_per_round={args.seeds_per_round}",
    ]
    halving = Halving(tuple(float(r) for r in args.rungs.split(",")), args.keep) if args.rungs else None
    if halving is not None:
        race_options += [f"hydra.launcher.rungs=[{args.rungs}]", f"hydra.launcher.keep={args.keep}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exhaustive_uri = f"sqlite:///{work}/exhaustive.db"
        exhaustive_s = sweep([*EXHAUSTIVE, *CASES[args.case]], exhaustive_uri, work)
        grid, table = trials(exhaustive_uri)
        frame, split = stats_frame(grid, table)
        configs, winners = tie_sets(frame, method)
        print(
            f"exhaustive: {len(frame)} trials, {frame['steps'].sum():.0f} trial-steps, {exhaustive_s:.1f} s wall"
        )
        print(f"winner tie set: {winners}")
        rng = np.random.default_rng(0)
        orderings = [list(split.seeds)] + [
            list(rng.permutation(split.seeds)) for _ in range(args.orderings - 1)
        ]
        results = [
            judge(replay(split, frame, seeds, settings, halving), frame, configs, winners)
            for seeds in orderings
        ]
        for seeds, result in zip(orderings, results):
            print(f"seeds {','.join(seeds)}: {result}")
        if not args.no_real_race:
            race_uri = f"sqlite:///{work}/race.db"
            race_s = sweep([*RACE, *race_options, *CASES[args.case]], race_uri, work)
            _, raced = trials(race_uri)
            losses, curves = table.set_index("point")["loss"], table.set_index("point")["val_at"]
            # a pruned trial: its val/loss curve is the exhaustive one's up to its rung
            same = all(
                (pd.isna(r.loss) and pd.isna(losses[r.point]))
                or r.loss == losses[r.point]
                or (r.outcome == schema.PRUNED and all(curves[r.point][k] == v for k, v in r.val_at.items()))
                for r in raced.itertuples()
            )
            print(
                f"real race: {len(raced)} trials ({len(raced) / len(frame):.1%}), {raced['steps'].sum():.0f} "
                f"trial-steps ({raced['steps'].sum() / frame['steps'].sum():.1%}), {race_s:.1f} s wall "
                f"({race_s / exhaustive_s:.1%} of the exhaustive grid's); its losses equal the exhaustive "
                f"grid's: {same}; replay of the same ordering: {results[0]['trials']} trials"
            )
        differed = sum(r["decision"] != results[0]["decision"] for r in results)
        print(
            f"over {len(results)} orderings: step share median {np.median([r['step_share'] for r in results]):.1%} "
            f"(max {max(r['step_share'] for r in results):.1%}); chosen in tie sets "
            f"{sum(r['chosen_in_tie_sets'] for r in results)}/{len(results)}; winner in tie set "
            f"{sum(r['winner_in_tie_set'] for r in results)}/{len(results)}; decision differed from the first "
            f"ordering's in {differed}"
        )


if __name__ == "__main__":
    main()
