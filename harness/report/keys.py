"""Names the harness writes into MLflow, as the report reads them. Kept apart from the training code on purpose:
the report depends on what the store holds, not on the code that wrote it."""

# Per-step metrics (step = optimizer step, from 0) and evaluations (step = updates done).
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
WALL_S = "time/wall_s"
EPOCH = "epoch"

# Logged once, at the end of a run.
FINAL_VAL_LOSS = "final/val_loss"
FINAL_VAL_ACCURACY = "final/val_accuracy"
TOTAL_S = "time/total_s"
STEPS_TO_TARGET = "steps_to_target"  # absent when the target was never reached
TIME_TO_TARGET_S = "time_to_target_s"

# Tags.
PARENT_RUN_ID = "mlflow.parentRunId"
ROLE, SWEEP_ROLE = "harness.role", "sweep"
STATUS = "harness.status"
CONFIG_HASH = "harness.config_hash"

# Run outcomes (the `outcome` column): harness.status, or what MLflow's run status implies.
COMPLETED, DIVERGED, FAILED, KILLED, RUNNING = "completed", "diverged", "failed", "killed", "running"
FINISHED_OUTCOMES = (COMPLETED, DIVERGED)  # runs that ran to their end: the ones a report compares
