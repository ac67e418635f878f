"""RunGroup (batched trials' runs written together) stores what one RunTracker per run stores, on a real store."""

import time
from pathlib import Path

import pytest
from conftest import mlflow_client

from harness.context import ParentRun
from harness.errors import StoreError
from harness.sweep import parent as parent_run
from harness.tracking import FAILED, FINISHED, port, record, schema, stores
from harness.tracking.group import RunGroup
from harness.tracking.port import NewRun
from harness.tracking.run_tracker import RunTracker


def dataset_inputs(k: int) -> list:
    """Two trials share a dataset, the third has its own (a new `datasets` row)."""
    digest = "d0" if k < 2 else "d1"
    data = record.DatasetRecord("digits", digest, "code", '{"task": "digits"}', '{"rows": 3}')
    return [record.training_input(data)]


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


@pytest.mark.parametrize("adapter", ["sqlite", "mlflow"])
@pytest.mark.parametrize("status", [FINISHED, FAILED])
def test_a_group_stores_what_one_tracker_per_run_stores(tmp_path, status, adapter):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = stores.open_store(uri, adapter=adapter)
    experiment = store.ensure_experiment("group")
    [parent] = store.create_runs(experiment, [NewRun("parent", {}, {})])
    names = [f"adam lr=0.1 seed={k}" for k in range(3)]

    def new_run(k: int, name: str) -> NewRun:
        return NewRun(
            name, {**TAGS, "k": str(k)}, PARAMS, {schema.CONFIG_ARTIFACT: f"config {k}\n"}, dataset_inputs(k)
        )

    one_by_one = []
    for k, name in enumerate(names):
        tracker = RunTracker.start(store, experiment, new_run(k, name), parent_run_id=parent.run_id)
        write(tracker, k, status)
        one_by_one.append(tracker.run_id)

    group = RunGroup(store, experiment, parent.run_id)
    trackers = group.create([new_run(k, name) for k, name in enumerate(names)])
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
    store = stores.open_store(uri)
    group = RunGroup(store, store.ensure_experiment("group"))
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


def test_the_sql_adapter_opens_only_sqlite_files_that_exist(tmp_path):
    assert stores.open_store("http://127.0.0.1:9", adapter="sqlite") is None
    with pytest.raises(StoreError, match="does not exist"):
        stores.open_store(f"sqlite:///{tmp_path / 'none.db'}", create=False, adapter="sqlite")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("adapter", ["sqlite", "mlflow"])
def test_a_parent_ends_with_the_counts_of_the_latest_run_per_grid_point(tmp_path, adapter):
    """harness.sweep.parent.end_parent: grid points run twice count once (the later run); the best run and its
    optimizer, the counts as tags and metrics, the parent FINISHED."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = stores.open_store(uri, adapter=adapter)
    experiment = store.ensure_experiment("close")
    children = [  # (config hash, MLflow status, harness.status, final/val_loss, optimizer)
        ("a", FINISHED, "completed", 0.5, "sgd"),
        ("b", FINISHED, "completed", 0.25, "adam"),
        ("c", FINISHED, "diverged", float("nan"), "sgd"),
        ("d", FAILED, "failed", None, "adam"),
        ("d", FINISHED, "completed", 0.75, "adam"),  # the re-run of d, started later
        ("e", "KILLED", "killed", None, "sgd"),
    ]
    [parent] = store.create_runs(experiment, [NewRun("sweep", {schema.ROLE: schema.ROLE_SWEEP}, {})])
    for start, (config_hash, status, outcome, loss, optimizer) in enumerate(children):
        tags = {schema.CONFIG_HASH: config_hash, schema.STATUS: outcome, schema.OPTIMIZER: optimizer}
        began = time.time_ns() // 10**6
        while time.time_ns() // 10**6 == began:  # start times are milliseconds: "later" needs another one
            pass
        [run] = store.create_runs(experiment, [NewRun(f"c{start}", tags, {})], parent.run_id)
        metrics = [] if loss is None else [port.Columns.at(1, {schema.FINAL_VAL_LOSS: loss})]
        store.write([port.RunUpdate(run.run_id, metrics, status=status)])
    counts = parent_run.end_parent(store, ParentRun(uri=uri, experiment_id=experiment, run_id=parent.run_id))
    assert counts == {"completed": 3, "diverged": 1, "failed": 0, "killed": 1, "pruned": 0, "total": 5}
    ended = mlflow_client(uri).get_run(parent.run_id)
    best = mlflow_client(uri).get_run(ended.data.tags[schema.BEST_RUN_ID])
    assert best.info.run_name == "c1" and ended.data.tags[schema.BEST_OPTIMIZER] == "adam"
    # The headline is the best configuration's mean over its seeds (adam: b and d's re-run; sgd diverged once).
    assert (
        ended.data.tags[schema.job_count_tag("completed")] == "3"
        and ended.data.metrics["best/val_loss"] == 0.5
        and ended.data.metrics["best/single_run_val_loss"] == 0.25
    )
    assert ended.info.status == FINISHED and ended.info.end_time is not None
    for key in ended.data.metrics:
        assert len(mlflow_client(uri).get_metric_history(parent.run_id, key)) == 1
