"""What the MLflow record's additions cost per job: the dataset input (digest + `log_inputs`), on a real SQLite store.

    python benchmarks/bench_record.py [--runs 40]

Interleaved in one process: each round creates a run with a job's params and ends it (the reference), and times on
other runs `log_inputs` (the dataset row exists after the first run: later runs add only the input link) and, for
scale, one `log_batch` of one tag (one store transaction). Also the digest, computed afresh and from the cache.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - sets MLFLOW_DISABLE_TELEMETRY before mlflow is imported
from mlflow.entities import Param, RunTag

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
        plain, inputs, one_tag = [], [], []
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
            start = time.perf_counter()
            client.log_batch(run_id, tags=[RunTag("x", "y")])
            one_tag.append(time.perf_counter() - start)
            client.set_terminated(run_id)
    ms = lambda values: f"{statistics.median(values) * 1e3:.2f} ms"  # noqa: E731
    print(f"digits_mlp digest, fresh (1,797 x 64 float32): {ms(fresh)}; cached: {ms(cached)}")
    print(f"run created, 30 params, ended: {ms(plain)}; log_inputs: {ms(inputs)}; one tag: {ms(one_tag)}")
    ratio = statistics.median(i / t for i, t in zip(inputs, one_tag))
    print(f"log_inputs / one-tag log_batch: {ratio:.2f} (median of {args.runs} interleaved rounds)")


if __name__ == "__main__":
    main()
