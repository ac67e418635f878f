"""The MLflow record as an MLflow user reads it: no credentials, readable names, params without noise, role tags,
diverged runs findable, dataset inputs, the parent's params and headline, and the single run's final line."""

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import pytest
from conftest import all_runs, compose_config, mlflow_client, run_cli

from harness.job import JobContext, run_job
from harness.tracking import record, schema

FAKE = "http://user:secret@127.0.0.1:1/"  # never contacted: for redaction only


# --- Pure functions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        (FAKE, "http://***@127.0.0.1:1/"),
        (
            "tracking.uri=https://alice:p@ss@mlflow.example.com/x seed=1",
            "tracking.uri=https://***@mlflow.example.com/x seed=1",
        ),
        (
            "tracking.uri=http\\://user\\:secret@h\\:5000/",
            "tracking.uri=http\\://***@h\\:5000/",
        ),  # as Hydra escapes it
        ("postgresql://mlflow:pw@127.0.0.1:5433/mlflow", "postgresql://***@127.0.0.1:5433/mlflow"),
        ("https://h/api?token=abc&x=1", "https://h/api?token=***&x=1"),
        ("sqlite:////tmp/store/mlflow.db", "sqlite:////tmp/store/mlflow.db"),
        ("user@example.com wrote lr=0.1", "user@example.com wrote lr=0.1"),
    ],
)
def test_redact_strips_credentials_and_nothing_else(text, expected):
    assert record.redact(text) == expected


def test_job_params_have_no_none_no_idle_scheduler_and_no_credentials():
    cfg = compose_config("task=digits_mlp", "optimizer=adam", f"tracking.uri={FAKE}")
    params = record.job_params(
        dataclasses.asdict(cfg), {schema.RESOLVED_BATCH_SIZE: 32, "resolved.none": None}
    )
    assert "None" not in params.values() and "resolved.none" not in params
    assert not [k for k in params if k.startswith("scheduler.")]
    assert params[schema.TRACKING_URI_PARAM] == "http://***@127.0.0.1:1/"
    assert params["optimizer.betas"] == "[0.9, 0.999]" and params[schema.RESOLVED_BATCH_SIZE] == "32"
    assert "task.kwargs" not in params and "trainer.epochs" not in params  # {} and null
    cosine = record.job_params(dataclasses.asdict(compose_config("scheduler=cosine")), {})
    assert cosine["scheduler.name"] == "cosine" and cosine["scheduler.min_factor"] == "0.0"


def test_run_names_say_the_task_and_the_batch_size_used_and_mark_divergence():
    name = record.job_run_name("quadratic", "sgd", 0.1, 1, 0)
    assert name == "sgd lr=0.1 bs=1 seed=0 (quadratic)"  # what differs between a sweep's runs first
    tags = record.outcome_tags(schema.DIVERGED, "loss 1e9 at step 7", name)
    assert tags[schema.RUN_NAME] == "[diverged] sgd lr=0.1 bs=1 seed=0 (quadratic)"
    assert tags[schema.DIVERGED_MARK] == "true" and tags[schema.STATUS] == "diverged"
    assert record.outcome_tags(schema.COMPLETED, None, name) == {schema.STATUS: "completed"}


def test_sweep_name_and_parent_params():
    axes = {"optimizer": ["sgd", "adam"], "seed": ["0", "1"]}
    assert (
        record.sweep_name(None, "quadratic", axes, 4)
        == "sweep quadratic: optimizer=sgd,adam seed=0,1 (4 points)"
    )
    assert record.sweep_name("demo", "digits_mlp", axes, 4) == "sweep demo: optimizer x seed (4 points)"
    wide = {"optimizer": ["sgd", "momentum", "nesterov", "adam", "adamw"], "optimizer.lr": list("123456789")}
    assert record.sweep_name(None, "", wide, 45) == "sweep: optimizer x optimizer.lr (45 points)"
    params = record.parent_params(axes, {"tracking.uri": FAKE, "trainer.max_steps": "25"}, 4)
    assert params == {
        "grid.optimizer": "sgd,adam",
        "grid.seed": "0,1",
        "tracking.uri": "http://***@127.0.0.1:1/",
        "trainer.max_steps": "25",
        "grid.points": "4",
    }
    odd = record.parent_params({"optimizer@opt": ["sgd", "adam"], "optimizer.lr": ["0.1"] * 2000}, {}, 4000)
    assert set(odd) == {"grid.optimizer_opt", "grid.optimizer.lr", "grid.points"}
    assert len(odd["grid.optimizer.lr"]) == 6000 and odd["grid.optimizer.lr"].endswith("…")


def test_summary_line_says_what_the_run_did_and_where_to_see_it():
    where = record.where_to_see(FAKE, "3", "r1")
    assert where == "http://***@127.0.0.1:1/#/experiments/3/runs/r1"
    line = record.summary_line("completed", 200, 1.234, 0.5, {"loss": 0.25, "accuracy": 0.9}, "r1", where)
    assert line == (
        "completed: 200 steps in 1.23 s, train/loss 0.5, val/loss 0.25, val/accuracy 0.9;"
        " run r1 - see it: http://***@127.0.0.1:1/#/experiments/3/runs/r1"
    )
    assert record.summary_line("diverged", 7, 0.01, 1e9, {}, None, None).endswith(
        "not tracked (tracking.enabled=false)"
    )
    # make ui only for the project's store, where a Makefile with a ui target is (a checkout, not a wheel)
    project = Path(tempfile.mkdtemp())
    own = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    assert record.where_to_see(own, "1", "r", project) == f"mlflow ui --backend-store-uri {own}"
    (project / "Makefile").write_text("ui: setup\n\tmlflow ui\n")
    assert record.where_to_see(own, "1", "r", project) == "make ui"
    assert (
        record.where_to_see("sqlite:////p/x.db", "1", "r", project)
        == "mlflow ui --backend-store-uri sqlite:////p/x.db"
    )


def test_the_logging_filter_redacts_hydra_lines():
    log_record = logging.LogRecord("hydra", logging.INFO, "", 0, "#0 : %s", (f"tracking.uri={FAKE}",), None)
    assert record.RedactingFilter().filter(log_record)
    assert log_record.getMessage() == "#0 : tracking.uri=http://***@127.0.0.1:1/"


# --- A real store ---------------------------------------------------------------------------------------------------


def secrets_in_runs(uri: str) -> list[str]:
    """Every place the word `secret` appears in the runs' names, params, tags and config.yaml."""
    found = []
    for run in all_runs(uri):
        texts = {"name": run.info.run_name, **run.data.params, **run.data.tags}
        found += [key for key, value in texts.items() if "secret" in str(value)]
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        found += [str(p) for p in artifacts.glob("*") if p.is_file() and "secret" in p.read_text()]
    return found


@pytest.fixture
def secret_store(tmp_path, monkeypatch):
    """A real SQLite store whose URI holds `scheme://user:secret@`: its path has a directory `x:/user:secret@host`."""
    uri = f"sqlite:///{tmp_path}/x://user:secret@host/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_a_recorded_run_holds_no_credentials_role_tags_and_its_dataset(secret_store, tmp_path):
    cfg = compose_config("task=digits_mlp", "trainer.max_steps=5", f"tracking.uri={secret_store}")
    run_job(cfg, JobContext(project_dir=tmp_path, overrides=(f"tracking.uri={secret_store}",)))
    [run] = all_runs(secret_store)
    assert secrets_in_runs(secret_store) == []
    assert run.data.params[schema.TRACKING_URI_PARAM] == f"sqlite:///{tmp_path}/x://***@host/mlflow.db"
    assert run.data.tags[schema.ROLE] == schema.ROLE_JOB
    assert run.info.run_name == "sgd lr=0.01 bs=32 seed=0 (digits_mlp)"
    assert "None" not in run.data.params.values() and not [
        p for p in run.data.params if p.startswith("scheduler.")
    ]
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "digits_mlp" and len(dataset.digest) == 16 and dataset.source_type == "code"
    profile = json.loads(dataset.profile)
    assert (profile["train_rows"], profile["val_rows"], profile["features_shape"]) == (1437, 360, [-1, 64])
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]


def test_the_digest_is_the_data_and_computed_once_per_splits():
    from harness.tasks import create_task

    task = create_task("logreg_cancer", None, {})
    splits = task.make_data()
    first = record.dataset_record(task, splits)
    assert record.dataset_record(task, splits).digest == first.digest
    assert record.dataset_record(task, task.make_data()).digest == first.digest  # same data, new tensors
    changed = dataclasses.replace(splits, val=(splits.val[0] + 1, splits.val[1]))
    assert record.dataset_record(task, changed).digest != first.digest
    quadratic = create_task("quadratic", None, {})
    assert record.dataset_record(quadratic, quadratic.make_data()) is None  # a function task has no data


def test_a_single_run_prints_its_final_line_and_train_log_holds_it(store, tmp_path):
    proc = run_cli("task=logreg_cancer", "trainer.max_steps=12", "data.batch_size=full", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [run] = all_runs(store)
    metrics = run.data.metrics
    [line] = [ln for ln in proc.stdout.splitlines() if f"run {run.info.run_id}" in ln]
    message = line.split(" - ", 1)[1]
    assert message.startswith("completed: 12 steps in ")
    assert (
        f"train/loss {metrics['final/train_loss']:.4g}, val/loss {metrics['final/val_loss']:.4g}, " in message
    )
    assert f"val/accuracy {metrics['final/val_accuracy']:.4g}; run {run.info.run_id}" in message
    assert message.endswith(f"see it: mlflow ui --backend-store-uri {store}")
    assert (
        run.info.run_name == "sgd lr=0.01 bs=426 seed=0 (logreg_cancer)"
    )  # full batch: the 426 training samples
    [log] = tmp_path.glob("outputs/*/*/train.log")
    assert line in log.read_text().splitlines()


def test_a_diverged_run_is_findable_by_name_and_tag(store, tmp_path):
    cfg = compose_config("task=quadratic", "optimizer.lr=1.5", "trainer.max_steps=50", "data.batch_size=128")
    run_job(cfg, JobContext(project_dir=tmp_path))
    client = mlflow_client(store)
    [run] = all_runs(store)
    assert (
        run.info.status == "FINISHED" and run.info.run_name == "[diverged] sgd lr=1.5 bs=1 seed=0 (quadratic)"
    )
    by_name = client.search_runs([run.info.experiment_id], "attributes.run_name LIKE '[diverged]%'")
    by_tag = client.search_runs([run.info.experiment_id], f"tags.`{schema.DIVERGED_MARK}` = 'true'")
    assert [r.info.run_id for r in by_name] == [r.info.run_id for r in by_tag] == [run.info.run_id]


def test_a_sweep_parent_has_a_short_name_its_grid_as_params_and_the_headline(secret_store, tmp_path):
    proc = run_cli(
        "-m",
        "task=quadratic",
        "optimizer=sgd,adam",
        "seed=0,1",
        "optimizer.lr=0.1",
        "trainer.max_steps=20",
        f"tracking.uri={secret_store}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
    assert secrets_in_runs(secret_store) == []
    runs = all_runs(secret_store)
    [parent] = [r for r in runs if r.data.tags[schema.ROLE] == schema.ROLE_SWEEP]
    client = mlflow_client(secret_store)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{schema.ROLE}` = '{schema.ROLE_JOB}'")
    assert len(children) == 4 and all(
        c.data.tags[schema.PARENT_RUN_ID] == parent.info.run_id for c in children
    )
    assert parent.info.run_name == "sweep quadratic: optimizer=sgd,adam seed=0,1 (4 points)"
    assert parent.data.params == {
        "grid.optimizer": "sgd,adam",
        "grid.seed": "0,1",
        "grid.points": "4",
        "task": "quadratic",
        "optimizer.lr": "0.1",
        "trainer.max_steps": "20",
    }
    # SGD at lr 0.1 on x^2: f shrinks 0.64x a step; both seeds start at the same point (a tie).
    best_loss = min(c.data.metrics["final/val_loss"] for c in children)
    best = [c.info.run_id for c in children if c.data.metrics["final/val_loss"] == best_loss]
    m = parent.data.metrics
    assert (m["jobs/completed"], m["jobs/total"], m["jobs/failed"]) == (4, 4, 0)
    assert m[schema.BEST_VAL_LOSS] == best_loss == pytest.approx(13 * 0.64**20)
    assert parent.data.tags[schema.BEST_OPTIMIZER] == "sgd"
    assert parent.data.tags[schema.BEST_RUN_ID] in best and len(best) == 2
    names = sorted(c.info.run_name for c in children)
    assert names == [f"{o} lr=0.1 bs=1 seed={s} (quadratic)" for o in ("adam", "sgd") for s in (0, 1)]


def test_the_sweep_headline_is_the_parents_metrics_and_tags():
    counts = schema.count_outcomes(["completed", "completed", "diverged"])
    headline = record.SweepHeadline(counts, 0.125, "adam", "r9", metrics={"best/accuracy": 0.97})
    metrics, tags = record.headline_record(headline)
    assert metrics == {
        "jobs/completed": 2.0,
        "jobs/diverged": 1.0,
        "jobs/failed": 0.0,
        "jobs/killed": 0.0,
        "jobs/pruned": 0.0,
        "jobs/total": 3.0,
        "best/val_loss": 0.125,
        "best/accuracy": 0.97,
    }
    assert tags == {schema.BEST_OPTIMIZER: "adam", schema.BEST_RUN_ID: "r9"}


def test_an_unreachable_server_is_named_without_its_credentials(tmp_path):
    proc = run_cli("tracking=server", f"tracking.uri={FAKE}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "secret" not in proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(
        "error: tracking.uri='http://***@127.0.0.1:1/' is not allowed: a running MLflow tracking"
    )
