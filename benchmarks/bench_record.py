"""What the MLflow record's additions cost per job: the dataset input (digest + its rows), on a real SQLite store.

    python benchmarks/bench_record.py [--runs 40] [--adapter sqlite|mlflow]

Interleaved in one process, through the tracking port: each round creates a run with a job's params and ends it
(the reference), and the same with the job's dataset input (the dataset row exists after the first run: later runs
add only the input link), and, for scale, times one tag set (one store transaction). Also the digest, computed
afresh and from the cache.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - sets MLFLOW_DISABLE_TELEMETRY before mlflow is imported

from harness.tasks import create_task
from harness.tracking import record, stores
from harness.tracking.port import NewRun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--adapter", choices=stores.ADAPTERS, default="sqlite")
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
        found = stores.open_store(uri, adapter=args.adapter)
        experiment_id = found.ensure_experiment("bench")
        params = {f"p{i}": str(i) for i in range(30)}
        inputs_of_the_job = [record.training_input(dataset)]
        plain, inputs, one_tag = [], [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            [run] = found.create_runs(experiment_id, [NewRun("plain", {}, params)])
            found.end_run(run.run_id, "FINISHED")
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            [run] = found.create_runs(
                experiment_id, [NewRun("with input", {}, params, datasets=inputs_of_the_job)]
            )
            found.end_run(run.run_id, "FINISHED")
            inputs.append(time.perf_counter() - start - plain[-1])
            start = time.perf_counter()
            found.set_tags(run.run_id, {"x": "y"})
            one_tag.append(time.perf_counter() - start)
    ms = lambda values: f"{statistics.median(values) * 1e3:.2f} ms"  # noqa: E731
    print(f"digits_mlp digest, fresh (1,797 x 64 float32): {ms(fresh)}; cached: {ms(cached)}")
    print(
        f"run created, 30 params, ended: {ms(plain)}; the dataset input adds {ms(inputs)}; one tag: {ms(one_tag)}"
    )


if __name__ == "__main__":
    main()
