"""When the tracking store stops answering mid-run, training finishes and nothing is lost (spool + harness.sync)."""

from conftest import history

from harness.sync import main as sync_main
from harness.tracking import store as stores
from harness.tracking.mlflow_tracker import MlflowTracker
from harness.tracking.sinks import ClientSink


class GoneAfter(ClientSink):
    """The store takes the first `n` batches, then the connection is refused (the server went away)."""

    def __init__(self, client, n: int):
        super().__init__(client)
        self.left = n

    def write(self, run_id, rows):
        if self.left == 0:
            raise ConnectionError("Connection refused")
        self.left -= 1
        super().write(run_id, rows)


def test_metrics_tags_and_end_are_spooled_and_synced_later(store, tmp_path, capsys):
    client = stores.client(store)
    experiment_id = stores.ensure_experiment(client, "spool")
    run_id = client.create_run(experiment_id).info.run_id
    tracker = MlflowTracker(client, run_id, sink=GoneAfter(client, 1), spool_dir=tmp_path / "unsent")
    for step in range(2500):  # 1,000 points per batch: the first batch lands, the other 1,500 points do not
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    tracker.flush()
    tracker.set_tags({"harness.status": "completed"})
    tracker.close("FINISHED")

    spool_file = tmp_path / "unsent" / f"{run_id}.jsonl"
    assert spool_file.exists() and f"python -m harness.sync {spool_file}" in capsys.readouterr().err
    assert client.get_run(run_id).info.status == "RUNNING"  # incomplete in MLflow until synced
    assert len(history(store, run_id, "train/loss")) == 500

    assert sync_main([str(spool_file)]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["harness.status"] == "completed"
    assert [s for s, _ in history(store, run_id, "train/loss")] == list(range(2500))
    assert spool_file.with_name(spool_file.name + ".synced").exists()
