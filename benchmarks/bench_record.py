"""What the MLflow record's additions cost per job: the dataset input (digest + `log_inputs`), on a real SQLite store.

    python benchmarks/bench_record.py [--runs 40]

Interleaved in one process: each round creates two runs with the job's params; one also logs its dataset input.
Prints the median cost of `log_inputs` (the dataset row exists after the first run: later runs add only the input
link), of the digest computed afresh and from the per-process cache, and of the run without the input.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - sets MLFLOW_DISABLE_TELEMETRY before mlflow is imported
from mlflow.entities import Param

from harness.tasks import create_task
from harness.tracking import record, store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    task = create_task("digits_mlp")
    splits = task.make_data()
    fresh = []
    for _ in range(args.runs):
        record._DIGESTS.clear()
        start = time.perf_counter()
        record.dataset_record(task, splits)
        fresh.append(time.perf_counter() - start)
    cached = []
    for _ in range(args.runs):
        start = time.perf_counter()
        dataset = record.dataset_record(task, splits)
        cached.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = store.client(uri)
        experiment_id = store.ensure_experiment(client, "bench")
        params = [Param(f"p{i}", str(i)) for i in range(30)]
        plain, inputs = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            run_id = client.create_run(experiment_id).info.run_id
            client.log_batch(run_id, params=params)
            client.set_terminated(run_id)
            plain.append(time.perf_counter() - start)
            run_id = client.create_run(experiment_id).info.run_id
            client.log_batch(run_id, params=params)
            start = time.perf_counter()
            client.log_inputs(run_id, datasets=[record.dataset_input(dataset)])
            inputs.append(time.perf_counter() - start)
            client.set_terminated(run_id)
    ms = lambda values: f"{statistics.median(values) * 1e3:.2f} ms"  # noqa: E731
    print(f"digits_mlp digest, fresh (1,797 x 64 float32): {ms(fresh)}; cached: {ms(cached)}")
    print(f"run with 30 params, no input: {ms(plain)}; log_inputs added to a run: {ms(inputs)}  ({args.runs} rounds)")


if __name__ == "__main__":
    main()
