"""When the tracking store stops answering mid-run, training finishes and nothing is lost (spool + harness.sync)."""

from conftest import history, mlflow_client

from harness.sync import main as sync_main
from harness.tracking import port, stores
from harness.tracking.port import NewRun
from harness.tracking.run_tracker import RunTracker


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


def test_metrics_tags_and_end_are_spooled_and_synced_later(store, tmp_path, capsys):
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
    assert spool_file.with_name(spool_file.name + ".synced").exists()
