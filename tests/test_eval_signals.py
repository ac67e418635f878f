"""A run that evaluates every epoch, ended by SIGTERM mid-run: every step and evaluation it measured is in the store."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import all_runs, history, wait_for

from harness.tracking import schema

STEPS_PER_EPOCH = 45  # digits_mlp: 1,437 training samples in batches of 32
ARGS = [
    "task=digits_mlp",
    "optimizer=adam",
    "data.batch_size=32",
    f"trainer.eval_every={STEPS_PER_EPOCH}",
    "trainer.max_steps=1000000",
    "tracking.progress=false",
]


@pytest.mark.slow
def test_sigterm_mid_run_keeps_every_step_and_every_evaluation(store, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.train", *ARGS],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def evaluated_after_training() -> bool:
        runs = all_runs(store)
        return bool(runs) and len(history(store, runs[0].info.run_id, schema.VAL_LOSS)) >= 2

    wait_for(evaluated_after_training, proc=proc, what="an evaluation after some training in the store")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    [r] = all_runs(store)
    assert r.info.status == "KILLED"
    steps = [s for s, _ in history(store, r.info.run_id, schema.TRAIN_LOSS)]
    assert steps == list(range(len(steps)))
    for key in (schema.GRAD_NORM, schema.WALL_S):
        assert [s for s, _ in history(store, r.info.run_id, key)] == steps, key
    # An evaluation after every epoch done; the last one may be missing when the signal came between the epoch's
    # last step and its evaluation.
    evaluations = list(range(0, len(steps) + 1, STEPS_PER_EPOCH))
    for key in (schema.VAL_LOSS, "val/accuracy", schema.EPOCH, schema.SAMPLES_SEEN, schema.LR):
        logged = [s for s, _ in history(store, r.info.run_id, key)]
        assert logged in (evaluations, evaluations[:-1] if len(steps) % STEPS_PER_EPOCH == 0 else None), key
        assert len(logged) >= 2, key
