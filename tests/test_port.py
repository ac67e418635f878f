"""The tracking port's conformance suite: the same operations through both adapters, on fresh stores, give the same
stores, table by table, and read back the same through MLflow's own client.

Ids and "now" timestamps are normalised (run ids by creation order); everything else is compared as stored. A
difference between the SQL adapter and MLflow's client is a failure: this is what holds the fast path to MLflow.
"""

import math
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import mlflow_client

from harness.context import ParentRun
from harness.sweep import parent as sweep_parent
from harness.tracking import port, record, schema, stores
from harness.tracking.group import RunGroup
from harness.tracking.mlflow_store import MlflowStore, create_sqlite
from harness.tracking.port import Columns, NewRun, RunUpdate
from harness.tracking.run_tracker import RunTracker
from harness.tracking.sqlite_store import MLFLOW_SCHEMA_REVISION, SqliteStore

ADAPTERS = ("sqlite", "mlflow")
SECRET = "http://alice:s3cret@tracking.example:5000/"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """A store fresh from MLflow's own migrations, made once: every test's stores start as copies of it."""
    db = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    create_sqlite(f"sqlite:///{db}", db)
    return db


def new_store(tmp_path: Path, adapter: str, migrated: Path) -> port.Store:
    db = tmp_path / adapter / "mlflow.db"
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(migrated)) as source, closing(sqlite3.connect(db)) as copy:
        source.backup(copy)  # a consistent copy, whatever sits in the template's write-ahead log
        copy.execute("PRAGMA journal_mode=WAL")
    found = stores.open_store(f"sqlite:///{db}", adapter=adapter)
    assert isinstance(found, SqliteStore if adapter == "sqlite" else MlflowStore)
    return found


def dataset(digest: str) -> record.DatasetInputRecord:
    data = record.DatasetRecord("digits", digest, "code", '{"tags": {"x": "y"}}', '{"train_rows": 3}')
    return record.training_input(data)


def job(name: str, k: int, digest: str = "d0") -> NewRun:
    tags = record.job_tags(
        task="quadratic", optimizer="adam", config_hash=f"h{k}", overrides=[f"seed={k}", f"tracking.uri={SECRET}"],
        device="cpu", device_name="CPU", torch_version="2.13.0", user="someone", git_commit="abc",
    )  # fmt: skip
    config = {"optimizer": {"name": "adam", "lr": 0.1, "betas": [0.9, 0.999]}, "seed": k, "epochs": None}
    config["tracking"] = {"uri": SECRET}
    params = record.job_params(config, {schema.RESOLVED_LR: 0.1})
    texts = {schema.CONFIG_ARTIFACT: f"config {k}\n"}
    return NewRun(record.redact(name), tags, params, texts, [dataset(digest)])


def points(k: int) -> list[Columns]:
    """Two chunks with NaN, +-inf, a point sent twice and one older point that must not become the latest."""
    return [
        Columns(
            [0, 1, 2],
            {"train/loss": [3.0 + k, 2.0, math.nan], "grad_norm": [1.0, 0.5, 0.25]},
            [1000, 1001, 1002],
        ),
        Columns([3, 4], {"train/loss": [1.0, math.inf], "grad_norm": [0.1, -math.inf]}, [1003, 1004]),
        Columns([4], {"train/loss": [math.inf]}, [1004]),
        Columns([1], {"grad_norm": [9.0]}, [999]),
    ]


# --- Scenarios: each returns the run ids it created, in order ---------------------------------------------------


def single_run(s: port.Store) -> list[str]:
    experiment = s.ensure_experiment("single")
    [info] = s.create_runs(experiment, [job("quadratic adam lr=0.1 seed=0", 0)])
    s.log_metrics(info.run_id, points(0))
    s.set_tags(info.run_id, {schema.STATUS: schema.COMPLETED, schema.ERROR: "x" * 6000})
    s.end_run(info.run_id, schema.FINISHED)
    return [info.run_id]


def diverged_and_killed(s: port.Store) -> list[str]:
    experiment = s.ensure_experiment("outcomes")
    runs = s.create_runs(experiment, [job("a", 0), job("b", 1, "d1")])
    for info in runs:
        s.log_metrics(info.run_id, points(1))
    diverged = record.outcome_tags(schema.DIVERGED, "loss 2e5 > 1e4 x initial", "a")
    s.write(
        [RunUpdate(runs[0].run_id, [Columns.at(5, {"final/val_loss": 1e5}, 2000)], diverged, schema.FINISHED)]
    )
    s.end_run(
        runs[1].run_id, schema.KILLED, {schema.STATUS: schema.KILLED_OUTCOME, schema.ERROR: "interrupted"}
    )
    return [i.run_id for i in runs]


def sweep_with_resume(s: port.Store) -> list[str]:
    """A parent with children (one left RUNNING by a killed sweep), resumed, then ended with its counts."""
    experiment = s.ensure_experiment("sweep")
    tags = {**record.source_tags("someone", "abc"), schema.ROLE: schema.ROLE_SWEEP, schema.SWEEP_KEY: "k1"}
    [parent] = s.create_runs(
        experiment, [NewRun("sweep quadratic: seed=0,1,2 (3 points)", tags, {"grid.seed": "0,1,2"})]
    )
    children = s.create_runs(experiment, [job(f"c{k}", k) for k in range(3)], parent.run_id)
    for k, child in enumerate(children[:2]):
        s.write([RunUpdate(child.run_id, [Columns.at(5, {schema.FINAL_VAL_LOSS: 0.5 - k / 10}, 3000)])])
        s.end_run(child.run_id, schema.FINISHED, {schema.STATUS: schema.COMPLETED})
    assert s.find_parent(experiment, "k1").info.run_id == parent.run_id
    done = sweep_parent._resume(s, experiment, parent.run_id, "sweep")
    assert done == {"h0": 0.5, "h1": 0.4}
    [again] = s.create_runs(experiment, [job("c2", 2)], parent.run_id)  # the stale point, re-run
    s.end_run(again.run_id, schema.FAILED, {schema.STATUS: schema.FAILED_OUTCOME, schema.ERROR: "boom"})
    counts = sweep_parent.end_parent(s, ParentRun(s.uri, experiment, parent.run_id))
    assert counts[schema.COMPLETED] == 2 and counts[schema.FAILED_OUTCOME] == 1 and counts["total"] == 3
    return [parent.run_id, *(c.run_id for c in children), again.run_id]


def interrupted_sweep(s: port.Store) -> list[str]:
    experiment = s.ensure_experiment("interrupted")
    [parent] = s.create_runs(experiment, [NewRun("sweep", {schema.ROLE: schema.ROLE_SWEEP}, {})])
    children = s.create_runs(experiment, [job("c0", 0), job("c1", 1)], parent.run_id)
    s.end_run(children[0].run_id, schema.FINISHED, {schema.STATUS: schema.COMPLETED})
    sweep_parent.end_parent(
        s, ParentRun(s.uri, experiment, parent.run_id), schema.KILLED, "interrupted (SIGTERM)"
    )
    return [parent.run_id, *(c.run_id for c in children)]


def group_and_tracker(s: port.Store) -> list[str]:
    """A RunGroup (batched trials) and a RunTracker (a single run) over the same store."""
    experiment = s.ensure_experiment("group")
    group = RunGroup(s, experiment)
    trackers = group.create([job(f"t{k}", k) for k in range(2)])
    for tracker in trackers:
        tracker.log_columns([0, 1], {"train/loss": [1.0, 0.5]}, [1000, 1001])
        tracker.log_columns([2], {"train/loss": [math.nan]}, [1002])
        tracker.set_tags(record.outcome_tags(schema.DIVERGED, "nan", "t"))
        tracker.close()
    group.flush()
    single = RunTracker.start(s, experiment, job("single", 3))
    single.log_columns([0, 1], {"train/loss": [1.0, 0.5]}, [1000, 1001])
    single.set_tags({schema.STATUS: schema.COMPLETED})
    single.close(schema.FINISHED)
    return [*(t.run_id for t in trackers), single.run_id]


def restored_experiment(s: port.Store) -> list[str]:
    experiment = s.ensure_experiment("restored")
    [info] = s.create_runs(experiment, [job("r", 0)])
    mlflow_client(s.uri).delete_experiment(experiment)  # as a user deletes it in the UI
    assert s.experiment("restored") is None
    assert s.ensure_experiment("restored") == experiment
    return [info.run_id]


SCENARIOS = [
    single_run,
    diverged_and_killed,
    sweep_with_resume,
    interrupted_sweep,
    group_and_tracker,
    restored_experiment,
]


# --- Comparing stores ----------------------------------------------------------------------------------------------


def _time(value):
    """Explicit test timestamps (< 1e12 ms) as they are; "now" as whether it was set."""
    if value is None or value < 10**12:
        return value
    return "<now>"


def tables(db: Path, ids: list[str]) -> dict:
    """The rows of MLflow's tables, ids by creation order, the store's directory and "now" timestamps normalised."""
    order = {run_id: f"<run {i}>" for i, run_id in enumerate(ids)}

    def norm(value):
        if isinstance(value, str):
            for run_id, name in order.items():
                value = value.replace(run_id, name)
            value = value.replace(str(db.parent), "<store>")
        return value

    dumped = {}
    with closing(sqlite3.connect(db)) as conn:
        runs = conn.execute(
            "SELECT run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, "
            "end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id FROM runs"
        ).fetchall()
        assert sorted(r[0] for r in runs) == sorted(ids)  # every run the scenario made, no other
        dumped["runs"] = sorted(
            (norm(r[0]), r[1], *r[2:7], _time(r[7]), _time(r[8]), *r[9:12], norm(r[12]), r[13]) for r in runs
        )
        ended = [r for r in runs if r[8] is not None]
        assert all(r[8] >= r[7] for r in ended)
        for table in ("tags", "params"):
            rows = conn.execute(f"SELECT key, value, run_uuid FROM {table}").fetchall()
            dumped[table] = sorted((k, norm(v), norm(r)) for k, v, r in rows)
        for table in ("metrics", "latest_metrics"):
            rows = conn.execute(
                f"SELECT key, value, timestamp, step, is_nan, run_uuid FROM {table}"
            ).fetchall()
            dumped[table] = sorted((k, repr(v), _time(t), s, n, norm(r)) for k, v, t, s, n, r in rows)
        dumped["experiments"] = sorted(
            tuple(map(norm, row))
            for row in conn.execute(
                "SELECT experiment_id, name, artifact_location, lifecycle_stage, workspace FROM experiments"
            )
        )
        dumped["experiment_tags"] = sorted(conn.execute("SELECT * FROM experiment_tags").fetchall())
        uuids = {}
        datasets = conn.execute(
            "SELECT dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source, dataset_schema, "
            "dataset_profile FROM datasets ORDER BY name, digest"
        ).fetchall()
        for row in datasets:
            uuids[row[0]] = f"<dataset {row[2]}/{row[3]}>"
        dumped["datasets"] = sorted((uuids[r[0]], *r[1:]) for r in datasets)
        inputs = conn.execute(
            "SELECT input_uuid, source_type, source_id, destination_type, destination_id, step FROM inputs"
        ).fetchall()
        edges = {r[0]: (uuids.get(r[2], r[2]), norm(r[4])) for r in inputs}
        dumped["inputs"] = sorted((r[1], edges[r[0]][0], r[3], edges[r[0]][1], r[5]) for r in inputs)
        rows = conn.execute("SELECT input_uuid, name, value FROM input_tags").fetchall()
        dumped["input_tags"] = sorted((edges[i], n, v) for i, n, v in rows)
    return dumped


def _ids(value: str, ids: list[str]) -> str:
    for i, run_id in enumerate(ids):
        value = value.replace(run_id, f"<run {i}>")
    return value


def through_mlflow(uri: str, ids: list[str]) -> list:
    """Each run as MLflow's own client reads it back: info, params, tags, latest metrics, histories, inputs."""
    client = mlflow_client(uri)
    read = []
    for run_id in ids:
        run = client.get_run(run_id)
        info = run.info
        histories = {
            key: sorted(
                (m.step, repr(m.value), _time(m.timestamp)) for m in client.get_metric_history(run_id, key)
            )
            for key in run.data.metrics
        }
        read.append({
            "info": (info.run_name, info.status, info.user_id, info.lifecycle_stage, info.end_time is None),
            "params": run.data.params,
            "tags": {k: _ids(v, ids) for k, v in run.data.tags.items()},
            "metrics": {k: repr(v) for k, v in run.data.metrics.items()},
            "histories": histories,
            "inputs": sorted(
                (d.dataset.name, d.dataset.digest, d.dataset.source, d.dataset.profile, [(t.key, t.value) for t in d.tags])
                for d in run.inputs.dataset_inputs
            ),
            "artifacts": sorted(f.path for f in client.list_artifacts(run_id)),
        })  # fmt: skip
    return read


def through_the_port(s: port.Store, ids: list[str]) -> list:
    """The port's own reading of each run, ids normalised."""
    read = []
    for run_id in ids:
        found = s.run(run_id)
        info = found.info
        tags = {k: _ids(v, ids) for k, v in found.data.tags.items()}
        metrics = {k: repr(v) for k, v in found.data.metrics.items()}
        read.append(
            (
                (info.run_name, info.status, info.user_id, info.lifecycle_stage),
                tags,
                found.data.params,
                metrics,
            )
        )
    return read


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_both_adapters_store_the_same(tmp_path, scenario, migrated):
    made = {}
    for adapter in ADAPTERS:
        s = new_store(tmp_path, adapter, migrated)
        ids = scenario(s)
        made[adapter] = (s, ids, tables(s.db if adapter == "sqlite" else Path(s.location), ids))
    (fast, fast_ids, fast_tables), (slow, slow_ids, slow_tables) = made["sqlite"], made["mlflow"]
    for table in fast_tables:
        assert fast_tables[table] == slow_tables[table], table
    assert through_mlflow(fast.uri, fast_ids) == through_mlflow(slow.uri, slow_ids)
    assert through_the_port(fast, fast_ids) == through_the_port(slow, slow_ids)
    # and each store reads the same through the other adapter
    assert through_the_port(stores.open_store(fast.uri, adapter="mlflow"), fast_ids) == through_the_port(
        fast, fast_ids
    )


def test_what_the_stores_hold_is_what_an_mlflow_user_expects(tmp_path, migrated):
    """A few absolute facts the comparison alone would not catch if both adapters were wrong the same way."""
    s = new_store(tmp_path, "sqlite", migrated)
    diverged, killed = (s.run(r) for r in diverged_and_killed(s))
    assert diverged.info.run_name == "[diverged] a" == diverged.data.tags[schema.RUN_NAME]
    assert diverged.info.status == schema.FINISHED and killed.info.status == schema.KILLED
    assert diverged.data.metrics["train/loss"] == port.LARGEST_FLOAT  # step 4 beats the older point at step 1
    assert "s3cret" not in str(diverged.data.params) + str(diverged.data.tags)
    parent_id, *children = sweep_with_resume(s)
    ended = s.run(parent_id)
    assert ended.info.status == schema.FINISHED and ended.info.user_id == "someone"
    assert (
        ended.data.tags[schema.job_count_tag("total")] == "3"
        and ended.data.metrics[schema.BEST_VAL_LOSS] == 0.45  # the mean over the configuration's seeds
        and ended.data.metrics[schema.BEST_SINGLE_RUN_VAL_LOSS] == 0.4
    )
    assert [s.run(c).info.status for c in children] == ["FINISHED", "FINISHED", "KILLED", "FAILED"]
    with closing(sqlite3.connect(s.db)) as conn:
        # train/loss 5 points (the repeated inf at step 4 stored once), grad_norm 6, final/val_loss 1
        assert conn.execute(
            "SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (diverged.info.run_id,)
        ).fetchone() == (12,)
        assert conn.execute(
            "SELECT COUNT(*) FROM metrics WHERE run_uuid = ? AND key = 'train/loss'", (diverged.info.run_id,)
        ).fetchone() == (5,)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_experiments_open_in_the_uis_training_view_unless_the_user_chose_another(tmp_path, adapter, migrated):
    s = new_store(tmp_path, adapter, migrated)
    client = mlflow_client(s.uri)
    made = s.ensure_experiment("made")
    assert client.get_experiment(made).tags[schema.EXPERIMENT_KIND] == "custom_model_development"
    theirs = client.create_experiment("theirs")
    client.set_experiment_tag(theirs, schema.EXPERIMENT_KIND, "genai_development")
    assert s.ensure_experiment("theirs") == theirs  # used again, its kind kept
    assert s.ensure_experiment("made") == made
    assert client.get_experiment(theirs).tags[schema.EXPERIMENT_KIND] == "genai_development"
    assert client.get_experiment(made).tags == {schema.EXPERIMENT_KIND: "custom_model_development"}


def test_a_store_is_written_by_sql_only_at_the_schema_it_was_written_for(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert isinstance(stores.open_store(uri), SqliteStore)  # a new store: MLflow migrates it, SQL writes it
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'other'")
        conn.commit()
    stores._OPEN.clear()
    assert stores.open_store(uri, adapter="sqlite") is None
    assert isinstance(
        stores.open_store(uri, read_only=True), SqliteStore
    )  # reading needs only the columns read
    with closing(sqlite3.connect(tmp_path / "mlflow.db")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (MLFLOW_SCHEMA_REVISION,))
        conn.execute("ALTER TABLE runs ADD COLUMN extra TEXT")
        conn.commit()
    stores._OPEN.clear()
    assert (
        stores.open_store(uri, adapter="sqlite") is None
    )  # a column it does not write: MLflow's client instead


def test_the_schema_revision_is_the_installed_mlflows_head(tmp_path):
    """When MLflow is upgraded (constraints.txt), this fails until MLFLOW_SCHEMA_REVISION and the column sets of
    harness.tracking.sqlite_store are checked against the new schema (then test_both_adapters_store_the_same)."""
    from harness.tracking.sqlite_store import WRITTEN, schema_revision

    db = tmp_path / "mlflow.db"
    create_sqlite(f"sqlite:///{db}", db)
    assert schema_revision(db) == MLFLOW_SCHEMA_REVISION
    with closing(sqlite3.connect(db)) as conn:
        for table, columns in WRITTEN.items():
            assert {row[1] for row in conn.execute(f"PRAGMA table_info({table})")} == columns, table


def test_only_the_sql_adapter_holds_sql_against_mlflows_tables():
    root = Path(__file__).parent.parent
    holders = sorted(
        str(p.relative_to(root))
        for p in [*root.glob("harness/**/*.py"), *root.glob("hydra_plugins/**/*.py")]
        if "import sqlite3" in p.read_text()
    )
    assert holders == ["harness/tracking/sqlite_store.py"]
