"""The MLflow record of the harness: every tag, param and metric name it writes, and the outcome vocabulary.

The one home of these names. Writers (the job, the loop's result, the sweep's parent run) and readers (the report,
resume) import them from here; nothing else spells them out.

Run structure: a sweep is one parent run (tag `harness.role=sweep`) with one child run per job
(`harness.role=job`, MLflow's `mlflow.parentRunId`). A single run outside a sweep is a job without a parent.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# --- MLflow run statuses (as MLflow names them) -------------------------------------------------------------------
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"

# --- Outcomes: what happened to a job, in the harness's words (tag `harness.status`) -----------------------------------
COMPLETED = "completed"  # ran its whole budget (MLflow status FINISHED)
DIVERGED = "diverged"  # stopped early because the loss blew up; an outcome, not an error (FINISHED)
FAILED_OUTCOME = "failed"  # raised, or its config was refused (FAILED)
KILLED_OUTCOME = "killed"  # interrupted: Ctrl-C, SIGTERM, or left RUNNING by a sweep that died (KILLED)
# stopped at a rung of successive halving (hydra.launcher.rungs): its curve up to the rung is recorded, and no final
# validation metrics, so nothing reads it as a final result (FINISHED)
PRUNED = "pruned"
RUNNING_OUTCOME = "running"  # not ended yet
OUTCOMES = (COMPLETED, DIVERGED, PRUNED, FAILED_OUTCOME, KILLED_OUTCOME)
RANKED_OUTCOMES = (COMPLETED, DIVERGED)  # ran their whole budget or blew up: what a report compares
DONE_OUTCOMES = (*RANKED_OUTCOMES, PRUNED)  # decided: a resumed sweep skips them

# --- Experiment tags ----------------------------------------------------------------------------------------------
# MLflow's UI opens an experiment without `mlflow.experimentKind` in its GenAI view (traces, judges); this is the value
# its "Model training" switch writes.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}

# --- A race (hydra/sweeper=race) ------------------------------------------------------------------------------------
RACE_ROUND = "harness.race.round"  # on each trial's child run: the round that trained it (1, 2, ...)
RACE_ROUNDS = "harness.race.rounds"  # on the parent: rounds run so far
RACE_DECISION = "harness.race.decision"  # on the parent: one line per task
RACE_ROUNDS_ARTIFACT = (
    "race/rounds.json"  # who was eliminated or settled, when, against whom, by which test, p-value
)
RACE_ALIVE_ARTIFACT = (
    "race/alive.json"  # per round, task and optimizer: configurations racing, trials trained
)
RACE_DECISION_ARTIFACT = (
    "race/decision.json"  # per task and optimizer: the chosen configuration, seeds, probability
)
# The columns of race/rounds.json and race/alive.json (round 0 of alive: every configuration, before the race).
RACE_EVENT_COLUMNS = [
    "round", "task", "optimizer", "configuration", "event", "against", "test", "seeds", "difference", "p_value",
    "probability",
]  # fmt: skip
RACE_ALIVE_COLUMNS = ["round", "task", "optimizer", "alive", "trials"]

# --- Tags -------------------------------------------------------------------------------------------------------------
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
ROLE = "harness.role"
ROLE_SWEEP, ROLE_JOB = "sweep", "job"
STATUS = "harness.status"  # one of OUTCOMES (RUNNING_OUTCOME while it runs)
ERROR = "harness.error"  # one line: why a run failed or was killed
DIVERGENCE = "harness.divergence"  # why a run was stopped as diverged
CONFIG_HASH = "harness.config_hash"  # identity of a grid point (see harness.config.config_hash)
OVERRIDES = "harness.overrides"  # the job's command-line overrides, as typed
TASK = "harness.task"
OPTIMIZER = "harness.optimizer"
DEVICE, DEVICE_NAME = "harness.device", "harness.device_name"
TORCH_VERSION = "harness.torch_version"
GIT_COMMIT = "harness.git_commit"
ENGINE = "harness.engine"  # which code path trained the run (single, batched)
DIVERGED_MARK = "harness.diverged"  # "true" on diverged runs: findable without reading harness.status
DIVERGED_NAME_PREFIX = "[diverged] "  # a diverged run's name starts with this (it stays FINISHED)
PRUNED_AT = "harness.pruned_at"  # on a pruned run: the step it stopped at (a rung's evaluation point)
RUNG = "harness.rung"  # on a pruned run: which rung stopped it (1, 2, ...)
PRUNED_NAME_PREFIX = "[pruned] "  # a pruned run's name starts with this
ENGINE_SINGLE, ENGINE_BATCHED = "single", "batched"
BATCH_TRIALS = "harness.batch_trials"  # K: how many trials trained together with this one (1: alone)
# MLflow's own tags, set by the job as `mlflow run` would.
SOURCE_NAME, SOURCE_TYPE = "mlflow.source.name", "mlflow.source.type"
SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
USER = "mlflow.user"
NOTE_CONTENT = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"  # JSON list of {"path", "type": "table"}: what log_table logged
# On the parent run.
SWEEP_KEY = "harness.sweep_key"
SWEEP_OVERRIDES = "harness.sweep_overrides"
GRID_SIZE = "harness.grid_size"
LAUNCHER = "harness.launcher"
STOPPED = "harness.stopped"  # why a search stopped before its end (the HPO failure budget)
# A cluster sweep left running (hydra.launcher.wait=false): the path of what collects it (harness.sweep.detached);
# empty once every piece is recorded.
DETACHED = "harness.detached"
JOB_COUNT_PREFIX = "harness.jobs."  # harness.jobs.<outcome> and harness.jobs.total
BEST_OPTIMIZER = "harness.best_optimizer"  # the sweep's headline (record.headline_record)
BEST_RUN_ID = "harness.best_run_id"  # the child with the lowest final val loss (best/single_run_val_loss)


def job_count_tag(outcome: str) -> str:
    return f"{JOB_COUNT_PREFIX}{outcome}"


# --- Params beyond the flattened config -------------------------------------------------------------------------------
RESOLVED_LR = "resolved.lr"  # optimizer.lr x optimizer.lr_scale: what the optimizer used
RESOLVED_BATCH_SIZE = "resolved.batch_size"  # "full" and oversize batches resolved to a number
RESOLVED_TOTAL_STEPS = "resolved.total_steps"  # the step budget
RESOLVED_STEPS_PER_EPOCH = "resolved.steps_per_epoch"  # batches per pass over the training set
RESOLVED_TARGET = "resolved.target"  # the task's target for time to target, as text: "val/accuracy >= 0.95"
# Config keys a job never logs as params (record.job_params): scheduler.* is dropped when the scheduler is `none`.
SCHEDULER_PARAM_PREFIX, SCHEDULER_NAME_PARAM, NO_SCHEDULER = "scheduler.", "scheduler.name", "none"
TRACKING_URI_PARAM = "tracking.uri"  # the configured URI, credentials redacted
# On the parent run: grid.<key> = the values it took (comma-separated, as typed), grid.points = the grid's size;
# the sweep's fixed overrides under their own keys (trainer.max_steps = 25).
GRID_PARAM_PREFIX = "grid."
GRID_POINTS_PARAM = "grid.points"
SWEEP_NAME_MAX_AXES_CHARS = 60  # beyond this a parent's name lists the varied keys only, not their values

# --- Metrics ----------------------------------------------------------------------------------------------------------
# Per optimizer step t (step = t, from 0): the loss at the parameters before update t.
TRAIN_LOSS = "train/loss"
TRAIN_SUBOPTIMALITY = "train/suboptimality"  # train/loss - f*, for tasks that know f*
GRAD_NORM = "grad_norm"
LR = "lr"
EPOCH = "epoch"
SAMPLES_SEEN = "samples_seen"
WALL_S = "time/wall_s"
# Evaluations, at step = updates done (0 = the initial model).
VAL_PREFIX = "val/"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
# Once, at the end of a run.
FINAL_TRAIN_LOSS = "final/train_loss"
FINAL_VAL_PREFIX = "final/val_"
FINAL_VAL_LOSS = "final/val_loss"
FINAL_VAL_ACCURACY = "final/val_accuracy"
BEST_VAL_LOSS = (
    "best/val_loss"  # a run's lowest val/loss; a parent's: the score of the sweep's best configuration
)
BEST_SINGLE_RUN_VAL_LOSS = "best/single_run_val_loss"  # on a parent: the lowest final val loss of any one run
STEPS = "steps"
TOTAL_S = "time/total_s"
JOB_COUNT_METRIC_PREFIX = "jobs/"  # on the parent: jobs/<outcome>, jobs/total (the counts, as metrics too)
TIME_TO_TARGET_S = "time_to_target_s"  # absent when the target was never reached
STEPS_TO_TARGET = "steps_to_target"


def best_val_loss_of(task: str) -> str:
    """A parent's best/val_loss for one task of a sweep that spans several (their losses are not comparable)."""
    return f"{BEST_VAL_LOSS}/{task}"


# --- Artifacts --------------------------------------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
ERROR_ARTIFACT = "error.txt"
GRID_ARTIFACT = "sweep_grid.json"

# --- Dataset inputs (MlflowClient.log_inputs, as mlflow.log_input records them) ----------------------------------------
DATASET_CONTEXT = "mlflow.data.context"
DATASET_CONTEXT_TRAINING = "training"
DATASET_SOURCE_TYPE = "code"  # the data is built by the task's code (harness.tasks), not read from a file
DATASET_SOURCE_CODE = "harness.task.make_data"  # in the source's tags: which function builds the data

# --- Where a project's runs are -------------------------------------------------------------------------------------
# The default store (harness.tracking.store.default_uri), as `mlflow ui` in the launch directory reads it.
DEFAULT_STORE_URI_RELATIVE = "sqlite:///mlruns/mlflow.db"


def outcome(mlflow_status: str, tags: Mapping[str, str]) -> str:
    """A run's outcome from its MLflow status and its `harness.status` tag.

    FAILED/KILLED runs are failed/killed whatever their tag said; a FINISHED run is completed or diverged by its tag
    (failed when the tag is missing: it never recorded a result).
    """
    if mlflow_status == RUNNING:
        return RUNNING_OUTCOME
    if mlflow_status == KILLED:
        return KILLED_OUTCOME
    tagged = tags.get(STATUS, "")
    if mlflow_status == FINISHED and tagged in DONE_OUTCOMES:
        return tagged
    return FAILED_OUTCOME


@dataclass(frozen=True)
class ChildOutcome:
    """What a sweep needs to know of one child run."""

    run_id: str
    config_hash: str
    outcome: str  # one of OUTCOMES, or RUNNING_OUTCOME
    overrides: str
    error: str
    final_val_loss: float | None
    start_time: int | None = None
    pruned: "Pruned | None" = None  # a pruned run: where it stopped


@dataclass(frozen=True)
class Pruned:
    """A pruned job's return value, in place of a loss: where successive halving stopped it (a race eliminates its
    configuration; an HPO sweeper would read it as a failed trial)."""

    rung: int
    step: int


def count_outcomes(outcomes: Iterable[str]) -> dict[str, int]:
    """{outcome: count} over OUTCOMES (zeros included), plus `total`: the one way outcomes are counted."""
    counts = dict.fromkeys(OUTCOMES, 0)
    total = 0
    for value in outcomes:
        counts[value] = counts.get(value, 0) + 1
        total += 1
    counts["total"] = total
    return counts
