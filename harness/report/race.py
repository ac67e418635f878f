"""What a race (hydra/sweeper=race) spent and decided, read back from its parent run: the rounds' tables that
hydra_plugins/harness_race/record.py wrote (configurations alive per round, eliminations and settlements), its
decision tag, and its children's steps against the whole grid's.

Trial-steps are the runs' `steps` (a diverged run counts the steps it took, a pruned one the steps up to its rung);
the whole grid's are its grid points times their step budget, per optimizer its share of the grid (the grid is a
product over the optimizers, as the basic sweeper expands it).
"""

import json
from dataclasses import dataclass

import pandas as pd

from harness.tracking import artifacts, queries, schema


@dataclass(frozen=True)
class RaceRecord:
    alive: (
        pd.DataFrame
    )  # schema.RACE_ALIVE_COLUMNS: per round, task and optimizer, configurations still racing after it
    events: pd.DataFrame  # schema.RACE_EVENT_COLUMNS: who was eliminated or settled, when, by what
    decision: list[str]  # one sentence per task (the parent's harness.race.decision)
    spent: pd.DataFrame  # per task and optimizer: trials, pruned, trial_steps, grid_trials, grid_steps
    rounds: int
    colours: dict  # optimizer -> colour, as in every figure of the report

    @property
    def headline(self) -> str:
        """`Raced: 161 of 384 trials (42 %), 32 % of the whole grid's step budget, in 7 rounds; 60 pruned at a
        rung.`"""
        trials, grid = int(self.spent["trials"].sum()), int(self.spent["grid_trials"].sum())
        steps, grid_steps = float(self.spent["trial_steps"].sum()), float(self.spent["grid_steps"].sum())
        pruned = int(self.spent["pruned"].sum())
        text = f"Raced: {trials} of {grid} trials ({_share(trials, grid)})"
        text += f", {_share(steps, grid_steps)} of the whole grid's step budget, in {self.rounds} "
        text += "round" if self.rounds == 1 else "rounds"
        return text + (f"; {pruned} pruned at a rung." if pruned else ".")

    def table(self) -> pd.DataFrame:
        """The eliminations and settlements as the report shows them (strings)."""
        frame = self.events.copy()
        frame["p_value"] = [_number(v) for v in frame["p_value"]]
        frame["probability"] = [_number(v) for v in frame["probability"]]
        frame["difference"] = [_number(v) for v in frame["difference"]]
        return frame.astype(str)


def race_record(data, colours: dict) -> RaceRecord | None:
    """The race of a loaded sweep (harness.report.load.SweepData), or None when the sweep was not raced."""
    parent = data.parent
    tags = parent.data.tags
    if schema.RACE_ROUNDS not in tags:
        return None
    uri = data.source.uri
    alive = _table(parent.info.artifact_uri, schema.RACE_ALIVE_ARTIFACT, uri, schema.RACE_ALIVE_COLUMNS)
    events = _table(parent.info.artifact_uri, schema.RACE_ROUNDS_ARTIFACT, uri, schema.RACE_EVENT_COLUMNS)
    return RaceRecord(
        alive=alive,
        events=events,
        decision=[line for line in tags.get(schema.RACE_DECISION, "").splitlines() if line],
        spent=spent(data.runs, queries.number(tags.get(schema.GRID_SIZE), int)),
        rounds=int(queries.number(tags.get(schema.RACE_ROUNDS), int) or 0),
        colours=colours,
    )


def spent(runs: pd.DataFrame, grid_size: int | None) -> pd.DataFrame:
    """Per task and optimizer: trials run, pruned, trial-steps spent; the whole grid's trials and trial-steps.

    Round 1 trains every configuration, so the runs hold each one: the grid is its configurations times the seeds
    (grid size / configurations), each configuration at its own step budget (a batch size changes it)."""
    column = f"metrics.{schema.STEPS}"
    steps = pd.to_numeric(runs[column], errors="coerce").fillna(0.0) if column in runs else 0.0
    overrides = runs.get(f"tags.{schema.OVERRIDES}", pd.Series("", index=runs.index)).fillna("")
    frame = runs.assign(
        _steps=steps,
        _pruned=(runs["outcome"] == schema.PRUNED).astype(int),
        _configuration=[_without_seed(text) for text in overrides],
        _budget=pd.to_numeric(runs["total_steps"], errors="coerce").astype(float),
    )
    configurations = frame.groupby(["task", "optimizer", "_configuration"], observed=True)["_budget"].max()
    seeds = (grid_size or len(runs)) / max(1, len(configurations))
    grid = (configurations * seeds).groupby(["task", "optimizer"], observed=True).agg(["size", "sum"])
    table = (
        frame.groupby(["task", "optimizer"], sort=True, observed=True)
        .agg(trials=("run_id", "size"), pruned=("_pruned", "sum"), trial_steps=("_steps", "sum"))
        .reset_index()
    )
    keys = list(zip(table["task"], table["optimizer"]))
    table["grid_trials"] = [grid.loc[key, "size"] * seeds for key in keys]
    table["grid_steps"] = [grid.loc[key, "sum"] for key in keys]
    return table


def _without_seed(overrides: str) -> str:
    """A run's configuration: its overrides but the seed and the store."""
    return " ".join(o for o in overrides.split() if not o.lstrip("+~").startswith(("seed=", "tracking.")))


def _table(artifact_uri: str, path: str, tracking_uri: str, columns: list[str]) -> pd.DataFrame:
    text = artifacts.read_text(artifact_uri, path, tracking_uri)
    if text is None:
        return pd.DataFrame(columns=columns)
    found = json.loads(text)
    return pd.DataFrame(found["data"], columns=found["columns"])


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "?"


def _number(value) -> str:
    return "" if value is None or value != value else f"{float(value):.3g}"


__all__ = ["RaceRecord", "race_record", "spent"]
