"""RunGroup (batched trials' runs written together on SQLite) stores what MlflowTracker stores, on a real store."""

from pathlib import Path

import pytest
from conftest import mlflow_client

from harness.tracking import FAILED, FINISHED, schema, store
from harness.tracking.group import NewRun, RunGroup
from harness.tracking.mlflow_tracker import MlflowTracker


def dataset_inputs(k: int) -> list:
    """Two trials share a dataset, the third has its own (a new `datasets` row), as record.dataset_input makes them."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    digest = "d0" if k < 2 else "d1"
    dataset = Dataset("digits", digest, "code", '{"task": "digits"}', profile='{"rows": 3}')
    return [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]


TAGS = {"mlflow.user": "someone", schema.TASK: "quadratic", schema.STATUS: schema.RUNNING_OUTCOME}
PARAMS = {"optimizer.lr": 0.1, "seed": 3, "trainer.epochs": None, "task.kwargs": "{}"}


def write(tracker, k: int, status: str) -> None:
    """The calls a trial's run receives: columns of steps (in two chunks), final metrics, tags, the end."""
    tracker.log_columns(
        [0, 1, 2], {"train/loss": [3.0 + k, 2.0, float("nan")], "grad_norm": [1.0, 0.5, 0.25]}
    )
    tracker.log_columns([3, 4], {"train/loss": [1.0, float("inf")], "grad_norm": [0.1, 0.0]})
    tracker.log_metrics({"val/loss": 0.5, "epoch": 1.0}, step=4)
    tracker.log_metrics({"final/val_loss": 0.5 + k, "steps": 5.0}, step=5)
    tracker.set_tags(
        {schema.STATUS: "completed" if status == FINISHED else "failed", schema.ERROR: "x" * 6000}
    )
    tracker.close(status)


def snapshot(uri: str, run_id: str) -> dict:
    client = mlflow_client(uri)
    run = client.get_run(run_id)
    histories = {
        key: sorted((m.step, repr(m.value)) for m in client.get_metric_history(run_id, key))  # NaN == NaN
        for key in run.data.metrics
    }
    config = Path(client.download_artifacts(run_id, schema.CONFIG_ARTIFACT)).read_text()
    info = run.info
    return {
        "info": (info.status, info.run_name, info.user_id, info.lifecycle_stage, info.experiment_id),
        "artifact_uri": info.artifact_uri.replace(run_id, "<id>"),
        "ended": info.end_time is not None and info.end_time >= info.start_time,
        "tags": {k: v for k, v in run.data.tags.items()},
        "params": run.data.params,
        "latest": {k: repr(v) for k, v in run.data.metrics.items()},
        "histories": histories,
        "config": config,
        "inputs": [
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source, d.dataset.profile,
             [(t.key, t.value) for t in d.tags])
            for d in run.inputs.dataset_inputs
        ],
    }  # fmt: skip


@pytest.mark.parametrize("status", [FINISHED, FAILED])
def test_a_group_stores_what_one_tracker_per_run_stores(tmp_path, status):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.client(uri)
    experiment = store.ensure_experiment(client, "group")
    parent = client.create_run(experiment).info.run_id
    names = [f"adam lr=0.1 seed={k}" for k in range(3)]

    one_by_one = []
    for k, name in enumerate(names):
        tags = {**TAGS, "k": str(k)}
        tracker = MlflowTracker.start(client, experiment, name, tags, parent_run_id=parent)
        tracker.log_params(PARAMS)
        tracker.log_text(f"config {k}\n", schema.CONFIG_ARTIFACT)
        tracker.log_inputs(dataset_inputs(k))
        write(tracker, k, status)
        one_by_one.append(tracker.run_id)

    group = RunGroup.open(uri, experiment)
    assert group is not None  # a SQLite store of the MLflow version it was written for
    runs = [
        NewRun(
            name,
            {**TAGS, "k": str(k), schema.PARENT_RUN_ID: parent},
            PARAMS,
            {schema.CONFIG_ARTIFACT: f"config {k}\n"},
            dataset_inputs(k),
        )
        for k, name in enumerate(names)
    ]
    trackers = group.create(runs)
    for k, tracker in enumerate(trackers):
        write(tracker, k, status)
    group.flush()

    for a, b in zip(one_by_one, [t.run_id for t in trackers]):
        assert snapshot(uri, a) == snapshot(uri, b)
    assert len(snapshot(uri, one_by_one[0])["histories"]["train/loss"]) == 5
    assert snapshot(uri, trackers[2].run_id)["inputs"][0][1] == "d1"
    import sqlite3

    with sqlite3.connect(
        tmp_path / "mlflow.db"
    ) as db:  # one dataset row per (name, digest) in the experiment
        assert db.execute("SELECT digest, COUNT(*) FROM datasets GROUP BY digest").fetchall() == [
            ("d0", 1),
            ("d1", 1),
        ]


def test_points_written_in_several_flushes_keep_the_latest_values_right(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.client(uri)
    experiment = store.ensure_experiment(client, "group")
    group = RunGroup.open(uri, experiment)
    [tracker] = group.create([NewRun("r", dict(TAGS), PARAMS)])
    tracker.log_columns([0, 1], {"train/loss": [5.0, 4.0]})
    group.flush()
    tracker.log_columns([2], {"train/loss": [3.0]})
    tracker.log_metrics({"train/loss": 9.0}, step=1)  # an older step: not the latest
    tracker.close(FINISHED)
    group.flush()
    run = mlflow_client(uri).get_run(tracker.run_id)
    assert run.data.metrics["train/loss"] == 3.0 and run.info.status == FINISHED
    history = mlflow_client(uri).get_metric_history(tracker.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 5.0), (1, 4.0), (1, 9.0), (2, 3.0)]


def test_other_stores_get_no_group(tmp_path):
    assert RunGroup.open("http://127.0.0.1:9", "0") is None
    assert (
        RunGroup.open(f"sqlite:///{tmp_path / 'none.db'}", "0") is None
        and not (tmp_path / "none.db").exists()
    )


def test_the_schema_revision_is_the_installed_mlflows_head(tmp_path):
    """RunGroup writes only stores at the revision it was written for: the head of this MLflow's migrations."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from harness.tracking.group import MLFLOW_SCHEMA_REVISION

    heads = ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_heads()
    assert heads == [MLFLOW_SCHEMA_REVISION]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = store.ensure_experiment(store.client(uri), "group")
    assert RunGroup.open(uri, experiment) is not None
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    assert RunGroup.open(uri, experiment) is None


def test_a_parent_ended_with_sqlite_reads_as_one_ended_through_mlflow(tmp_path):
    """harness.sweep.parent: `_finish_direct` (sqlite3) and `finish` (MlflowClient) end a parent with the same counts,
    headline, tags and status; grid points run twice count once (the later run)."""
    from harness.context import ParentRun
    from harness.sweep import parent as parent_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.client(uri)
    experiment = store.ensure_experiment(client, "close")
    children = [  # (config hash, MLflow status, harness.status, final/val_loss, optimizer)
        ("a", FINISHED, "completed", 0.5, "sgd"),
        ("b", FINISHED, "completed", 0.25, "adam"),
        ("c", FINISHED, "diverged", float("nan"), "sgd"),
        ("d", FAILED, "failed", None, "adam"),
        ("d", FINISHED, "completed", 0.75, "adam"),  # the re-run of d, started later
        ("e", "KILLED", "killed", None, "sgd"),
    ]
    parents = []
    for _ in range(2):
        parent = client.create_run(experiment, tags={schema.ROLE: schema.ROLE_SWEEP}).info.run_id
        for start, (config_hash, status, outcome, loss, optimizer) in enumerate(children):
            tags = {schema.CONFIG_HASH: config_hash, schema.STATUS: outcome, schema.OPTIMIZER: optimizer}
            run = client.create_run(
                experiment, start_time=1000 + start, tags={**tags, schema.PARENT_RUN_ID: parent}
            )
            if loss is not None:
                client.log_metric(run.info.run_id, schema.FINAL_VAL_LOSS, loss)
            client.set_terminated(run.info.run_id, status)
        parents.append(parent)
    through_mlflow = parent_run.finish(client, experiment, parents[0])
    direct = parent_run._finish_direct(ParentRun(uri=uri, experiment_id=experiment, run_id=parents[1]))
    assert through_mlflow == direct == {"completed": 3, "diverged": 1, "failed": 0, "killed": 1, "total": 5}
    ended = [mlflow_client(uri).get_run(p) for p in parents]
    best = {p: dict(r.data.tags).pop(schema.BEST_RUN_ID) for p, r in zip(parents, ended)}
    for p in parents:  # the best run is each parent's own child with loss 0.25
        assert mlflow_client(uri).get_run(best[p]).data.tags[schema.PARENT_RUN_ID] == p
    a, b = (
        {k: v for k, v in r.data.tags.items() if k not in (schema.BEST_RUN_ID, schema.RUN_NAME)}
        for r in ended
    )
    assert a == b and a[schema.BEST_OPTIMIZER] == "adam" and a[schema.job_count_tag("completed")] == "3"
    assert ended[0].data.metrics == ended[1].data.metrics and ended[1].data.metrics["best/val_loss"] == 0.25
    assert ended[0].info.status == ended[1].info.status == FINISHED and ended[1].info.end_time is not None
    for key in ended[0].data.metrics:
        assert len(mlflow_client(uri).get_metric_history(parents[1], key)) == 1
