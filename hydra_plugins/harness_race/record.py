"""What a race records, through the tracking port: each trial's round (a tag on its child run), and on the parent
run the rounds so far (tables in MLflow's log_table format) and the decision (tags).

The tag and artifact names live in harness/tracking/schema.py (dependency-free, so Hydra's import of every module
under `hydra_plugins` at start-up stays cheap).
"""

import json
from collections import Counter
from collections.abc import Sequence

from harness.tracking import schema

ALIVE_COLUMNS = schema.RACE_ALIVE_COLUMNS
DECISION_COLUMNS = [
    "task",
    "optimizer",
    "configuration",
    "winner",
    "alive",
    "seeds",
    "probability",
    "decided",
]


class Recorder:
    """Records a race on its sweep's parent run (nothing when tracking is disabled or no sweep callback runs)."""

    def __init__(self, hydra_context) -> None:
        self.callback = _sweep_callback(hydra_context)
        self.events: list[list] = []
        self.alive: list[list] = []

    def round(self, race, trials: Sequence, batch: Sequence[Sequence[str]], events: Sequence) -> None:
        """After a round (a harness.sweep.race.Race, the round's trials, their jobs' overrides, its events): the
        trials' round tag, the parent's tables and round count."""
        from harness.sweep.race import EVENT_COLUMNS
        from harness.tracking import stores

        self.events += [e.row() for e in events]
        self.alive += _census(race, trials)
        parent = self._parent()
        if parent is None:
            return
        found = stores.open_store(parent.uri)
        _tag_round(found, parent, race.round, batch)
        _log_tables(
            found,
            parent,
            {
                schema.RACE_ROUNDS_ARTIFACT: (EVENT_COLUMNS, self.events),
                schema.RACE_ALIVE_ARTIFACT: (ALIVE_COLUMNS, self.alive),
            },
        )
        found.set_tags(parent.run_id, {schema.RACE_ROUNDS: str(race.round)})

    def finish(self, race) -> None:
        """The decision on the parent (the sweep callback ends the parent afterwards)."""
        from harness.tracking import stores

        parent = self._parent()
        if parent is None:
            return
        found = stores.open_store(parent.uri)
        choices = race.choices()
        _log_tables(
            found, parent, {schema.RACE_DECISION_ARTIFACT: (DECISION_COLUMNS, _decision_rows(choices))}
        )
        found.set_tags(parent.run_id, {schema.RACE_DECISION: "\n".join(c.sentence() for c in choices)})

    def _parent(self):
        state = getattr(self.callback, "state", None)
        return state.parent if state is not None else None


def _census(race, trials: Sequence) -> list[list]:
    """Rows of ALIVE_COLUMNS for this round: configurations alive after it, trials it trained (after round 1, round
    0 first: every configuration, none trained)."""
    trained = Counter((c.task, c.optimizer) for c, _ in trials)
    alive = Counter((c.task, c.optimizer) for c in race.alive)
    everyone = Counter((c.task, c.optimizer) for c in race.candidates)
    start = [[0, task, opt, everyone[(task, opt)], 0] for task, opt in everyone] if race.round == 1 else []
    return start + [
        [race.round, task, opt, alive[(task, opt)], trained[(task, opt)]] for task, opt in everyone
    ]


def _decision_rows(choices) -> list[list]:
    rows = []
    for choice in choices:
        for optimizer, chosen in choice.chosen.items():
            p = choice.probability.get(optimizer)
            rows.append(
                [
                    choice.task,
                    optimizer,
                    chosen.label,
                    optimizer == choice.winner.optimizer,
                    choice.alive[optimizer],
                    choice.seeds[optimizer],
                    p if p is not None and p == p else None,
                    choice.decided,
                ]
            )
    return rows


def _tag_round(found, parent, number: int, batch: Sequence[Sequence[str]]) -> None:
    """Tag the children this round trained (by their overrides) that carry no round yet."""
    from harness.tracking import record as run_record
    from harness.tracking import schema
    from harness.tracking.port import RunUpdate

    wanted = {run_record.redact(" ".join(overrides)) for overrides in batch}
    updates = [
        run.info.run_id
        for run in found.children(parent.experiment_id, parent.run_id)
        if schema.RACE_ROUND not in run.data.tags and run.data.tags.get(schema.OVERRIDES) in wanted
    ]
    found.write([RunUpdate(run_id, tags={schema.RACE_ROUND: str(number)}) for run_id in updates])


def _log_tables(found, parent, tables: dict) -> None:
    """Each table as JSON in log_table's format, listed in the parent's mlflow.loggedArtifacts (the UI's tables)."""
    from harness.tracking import schema

    run = found.run(parent.run_id)
    for path, (columns, rows) in tables.items():
        found.log_text(run.info.artifact_uri, json.dumps({"columns": columns, "data": rows}), path)
    logged = json.loads(run.data.tags.get(schema.LOGGED_ARTIFACTS, "[]"))
    listed = {entry.get("path") for entry in logged}
    logged += [{"path": path, "type": "table"} for path in tables if path not in listed]
    found.set_tags(parent.run_id, {schema.LOGGED_ARTIFACTS: json.dumps(logged)})


def _sweep_callback(hydra_context):
    """The harness sweep callback among Hydra's callbacks (it holds the sweep's state), or None."""
    for callback in getattr(hydra_context.callbacks, "callbacks", []):
        if hasattr(callback, "open_late"):
            return callback
    return None
