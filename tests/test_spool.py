"""When the tracking store stops answering mid-run, training finishes and nothing is lost (spool + harness.sync)."""

import json
import math
from pathlib import Path

import pytest
from conftest import history, mlflow_client

from harness.sync import main as sync_main
from harness.tracking import port, stores
from harness.tracking.port import Columns, NewRun
from harness.tracking.run_tracker import RunTracker
from harness.tracking.spool import Spool


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> str:
    """One store for this module's tests (each has runs of its own in it): MLflow's migrations once."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('spools') / 'mlflow.db'}"
    stores.open_store(uri)
    return uri


class GoneAfter:
    """The store takes the first `n` metric writes, then the connection is refused (the server went away)."""

    def __init__(self, store: port.Store, n: int):
        self.store, self.left = store, n
        self.uri, self.location = store.uri, store.location

    def write(self, updates):
        if self.left == 0:
            raise ConnectionError("Connection refused")
        self.left -= 1
        self.store.write(updates)

    def __getattr__(self, name):  # everything else: gone too
        def refused(*args, **kwargs):
            raise ConnectionError("Connection refused")

        return refused


def test_metrics_tags_and_end_are_spooled_and_synced_later(shared_store, tmp_path, capsys):
    store = shared_store
    real = stores.open_store(store)
    experiment_id = real.ensure_experiment("spool")
    [info] = real.create_runs(experiment_id, [NewRun("r", {}, {})])
    run_id = info.run_id
    tracker = RunTracker(GoneAfter(real, 1), run_id, info.artifact_uri, spool_dir=tmp_path / "unsent")
    for step in range(2500):  # 1,000 points per batch: the first batch lands, the other 1,500 points do not
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    tracker.flush()
    tracker.set_tags({"harness.status": "completed"})
    tracker.close("FINISHED")
    client = mlflow_client(store)

    spool_file = tmp_path / "unsent" / f"{run_id}.jsonl"
    assert spool_file.exists() and f"python -m harness.sync {spool_file}" in capsys.readouterr().err
    assert client.get_run(run_id).info.status == "RUNNING"  # incomplete in MLflow until synced
    assert len(history(store, run_id, "train/loss")) == 500

    assert sync_main([str(spool_file)]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["harness.status"] == "completed"
    assert [s for s, _ in history(store, run_id, "train/loss")] == list(range(2500))
    synced = spool_file.with_name(spool_file.name + ".synced")
    assert synced.exists()
    spool_file.write_bytes(synced.read_bytes())  # the same file synced again: the run ended as it says
    assert sync_main([str(spool_file)]) == 0
    assert [s for s, _ in history(store, run_id, "train/loss")] == list(range(2500))  # nothing twice


# --- Spool files are input: hostile ones change nothing -------------------------------------------------------------

RUN_ID = "ab" * 16


def _points(real: port.Store, run_id: str) -> list[tuple[int, float]]:
    frame = real.histories([run_id], ["train/loss"])
    return list(zip(frame["step"].tolist(), frame["value"].tolist()))


def _ended_run(uri: str) -> tuple[port.Store, str]:
    """A FINISHED, completed run with one point, as a sync finds it after the run ended."""
    real = stores.open_store(uri)
    [info] = real.create_runs(
        real.ensure_experiment("spool"), [NewRun("r", {}, {"harness.status": "running"})]
    )
    real.log_metrics(info.run_id, Columns.of_rows([("train/loss", 1.0, 1000, 0)]))
    real.end_run(info.run_id, "FINISHED", tags={"harness.status": "completed"})
    return real, info.run_id


def _write_spool(path, run_id: str, uri: str, *lines: str) -> str:
    header = json.dumps({"run_id": run_id, "tracking_uri": uri, "reason": "ConnectionError"})
    path.write_bytes("\n".join([header, *lines]).encode() + b"\n")
    return str(path)


HOSTILE = [
    # (records after the header, the refusal after `error: <file>: `)
    (
        ['{"end": {"status": "RUNNING", "end_time": 5}}'],
        "line 2: the run's end status 'RUNNING' is not one of",
    ),
    (
        ['{"end": {"status": "FAILED", "end_time": 9999999999999}}'],
        "run {run} ended FINISHED in the store and this spool ends it FAILED",
    ),
    (
        ['{"tags": {"harness.status": "diverged"}}'],
        "run {run} ended FINISHED in the store and this spool, which does not end it, sets tags",
    ),
    (
        ['{"tags": {"mlflow.parentRunId": "' + "0" * 32 + '"}}'],
        "line 2: a spool may not set mlflow.parentRunId",
    ),
    (
        ['{"text": {"artifact_file": "../../escaped.txt", "text": "x"}}'],
        "line 2: a text record's artifact_file '../../escaped.txt' is not a relative path",
    ),
    (
        ['{"text": {"artifact_file": "/tmp/abs.txt", "text": "x"}}'],
        "line 2: a text record's artifact_file '/tmp/abs.txt'",
    ),
    (
        ['{"metrics": [["train/loss", "1.0", 1, 1]]}'],
        "line 2: a metric ['train/loss', '1.0', 1, 1] is not [key, number",
    ),
    (['{"metrics": [["train/loss", 1.0, 1, 1.5]]}'], "line 2: a metric ['train/loss', 1.0, 1, 1.5] is not"),
    (['{"metrics": [["train/loss", 1.0, 1, true]]}'], "line 2: a metric ['train/loss', 1.0, 1, True] is not"),
    (['{"metrics": [["train/loss", 1.0, 1, 9223372036854775808]]}'], "line 2: a metric"),
    (['{"metrics": [["train/loss", 1.0, 1]]}'], "line 2: a metric ['train/loss', 1.0, 1] is not [key, value"),
    (['{"metrics": {"train/loss": 1}}'], "line 2: metrics are a list of [key, value, timestamp_ms, step]"),
    (['{"metrics": []}', "not json"], "line 3: not JSON (Expecting value at column 1)"),
    (
        ['{"metrics": ' + "[" * 100000 + "]" * 100000 + "}"],
        "line 2: not JSON this harness writes (RecursionError)",
    ),
    (['{"metrics": [["a", 1, 1, ' + "9" * 5000 + "]]}"], "line 2: not JSON this harness writes (ValueError)"),
    (["[1, 2]"], "line 2: not a JSON object"),
    (
        ['{"tags": {"a": "1"}, "end": {"status": "FINISHED", "end_time": 1}}'],
        "line 2: a record has exactly one of",
    ),
    (['{"params": {"a": "1"}}'], "line 2: params are given when a run is created"),
    (['{"status": "RUNNING"}'], "line 2: unknown record 'status'"),
    (['{"end": {"status": "FINISHED", "end_time": 1}}'], "the spool ends run {run} at 1, before it started"),
    (
        ['{"end": {"status": "FINISHED", "end_time": 9999999999999}}', '{"tags": {"a": "1"}}'],
        "line 2: the end of the run is not the last record",
    ),
    (
        ['{"end": {"status": "FINISHED", "end_time": 9999999999999, "extra": 1}}'],
        "line 2: the end record has the keys status, end_time (unknown key 'extra')",
    ),
    (['{"tags": {"a": 1}}'], "line 2: tags are an object of string keys"),
]


@pytest.mark.parametrize("lines,message", HOSTILE, ids=[h[1][:40] for h in HOSTILE])
def test_a_hostile_spool_is_refused_in_one_line_and_changes_nothing(
    lines, message, shared_store, tmp_path, capsys
):
    real, run_id = _ended_run(shared_store)
    before = real.run(run_id)
    path = _write_spool(tmp_path / "unsent.jsonl", run_id, shared_store, *lines)
    assert sync_main([path]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: " + message.format(run=run_id)), line
    after = real.run(run_id)
    assert (after.info.status, after.info.end_time, after.data.tags) == (
        before.info.status, before.info.end_time, before.data.tags,
    )  # fmt: skip
    assert _points(real, run_id) == [(0, 1.0)]
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == [] and Path(path).exists()  # kept, not renamed


def test_a_good_spool_syncs_beside_a_bad_one_and_a_running_run_takes_tags_without_an_end(
    shared_store, tmp_path, capsys
):
    real = stores.open_store(shared_store)
    [info] = real.create_runs(real.ensure_experiment("spool"), [NewRun("r", {}, {})])
    good = _write_spool(
        tmp_path / "good.jsonl", info.run_id, shared_store,
        '{"metrics": [["train/loss", NaN, 5, 0], ["train/loss", Infinity, 6, 1]]}', '{"tags": {"harness.note": "x"}}',
    )  # fmt: skip
    bad = _write_spool(tmp_path / "bad.jsonl", info.run_id, shared_store, "{")
    assert sync_main([bad, good]) == 1
    refused = (
        f"error: {bad}: line 2: not JSON (Expecting property name enclosed in double quotes at column 2)"
    )
    assert capsys.readouterr().err.splitlines() == [refused]
    run = real.run(info.run_id)
    assert run.info.status == "RUNNING" and run.data.tags["harness.note"] == "x"
    points = _points(real, info.run_id)
    assert points[0][0] == 0 and math.isnan(points[0][1]) and points[1] == (1, port.LARGEST_FLOAT)


def test_a_spool_keeps_no_credentials_and_asks_for_them_to_sync(tmp_path, capsys, monkeypatch):
    secret = "http://alice:s3cret@127.0.0.1:1/"
    written = Spool(tmp_path / "s.jsonl", RUN_ID, secret, f"ConnectionError: {secret}api/2.0/runs")
    written.end("FINISHED", 1)
    assert "s3cret" not in written.path.read_text()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert sync_main([str(written.path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {written.path}: the spool was written for http://***@127.0.0.1:1/, whose credentials it does not "
        "keep: pass --tracking-uri with them (or set MLFLOW_TRACKING_URI)"
    ]
