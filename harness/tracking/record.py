"""What a job's and a sweep's MLflow record contains, as an MLflow user reads it.

Pure functions from plain values to the names, params, tags and lines that end up in MLflow or on the terminal;
the writers (harness.job_run, harness.sweep.parent) call them, the names come from schema.py. No MLflow here.

Conventions an MLflow user can rely on (README, "The MLflow record"):
- No credentials anywhere: a tracking URI's `user:password@` (and `password=`/`token=` query values) is replaced by
  `***` in params, config.yaml, run names, tags and printed lines (`redact`).
- Every job run has the tag `harness.role = 'job'`, every sweep's parent `harness.role = 'sweep'`.
- A diverged run stays FINISHED (it is an outcome, not an error) and is marked three ways: its name starts with
  `[diverged] `, its tag `harness.diverged = 'true'`, and `harness.status = 'diverged'`. In the UI's search box:
  `attributes.run_name LIKE '[diverged]%'` or `tags.harness.diverged = 'true'`.
"""

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.redaction import REDACTED as REDACTED  # re-exported: harness.sweep.state reads it
from harness.redaction import redact
from harness.tracking import schema, store

if TYPE_CHECKING:
    from harness.tasks.base import Splits, Task

# --- Credentials ----------------------------------------------------------------------------------------------------
# `redact` and `REDACTED` live in harness.redaction (below harness.errors, whose messages use them); re-exported here
# because the record is where an MLflow user meets them.


def redact_values(values: Mapping[str, Any]) -> dict[str, str]:
    """Every value as a string, redacted (for params and tags)."""
    return {key: redact(str(value)) for key, value in values.items()}


class RedactingFilter(logging.Filter):
    """A logging filter that redacts credentials from every record's message (Hydra's own log lines print each job's
    overrides, `tracking.uri=...` included); set on Hydra's console and file handlers in conf/config.yaml."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_config(config: Any) -> Any:
    """A config as nested dicts/lists (dataclasses.asdict), with every string in it redacted: for config.yaml."""
    if isinstance(config, dict):
        return {key: redact_config(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact_config(value) for value in config]
    return redact(config) if isinstance(config, str) else config


# --- A job's run ----------------------------------------------------------------------------------------------------


def job_run_name(task: str, optimizer: str, lr: float, batch_size: int, seed: int) -> str:
    """`adam lr=0.003 bs=64 seed=7 (digits_mlp)`: what differs between a sweep's runs comes first (MLflow's runs table
    cuts names to about 20 characters), the task last; the batch size is the one the run actually used (a function
    task has one sample: `data.batch_size=128` trains with bs=1)."""
    return f"{optimizer} lr={lr:.3g} bs={batch_size} seed={seed} ({task})"


def diverged_run_name(name: str) -> str:
    return name if name.startswith(schema.DIVERGED_NAME_PREFIX) else schema.DIVERGED_NAME_PREFIX + name


def job_params(config: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, str]:
    """A job's params: its config flattened to dotted keys, then the resolved facts (`resolved.*`).

    Without noise: no null values (no 'None' strings), no empty dicts, no `scheduler.*` when the scheduler is
    `none`; credentials redacted.
    Lists and dicts are JSON (`optimizer.betas = [0.9, 0.999]`).

    Args:
        config: the resolved config as nested dicts (`dataclasses.asdict(cfg)`).
        resolved: facts derived from it before training (schema.RESOLVED_*).
    """
    flat: dict[str, str] = {}
    _flatten("", config, flat)
    if flat.get(schema.SCHEDULER_NAME_PARAM) == schema.NO_SCHEDULER:
        flat = {k: v for k, v in flat.items() if not k.startswith(schema.SCHEDULER_PARAM_PREFIX)}
    flat.update({key: str(value) for key, value in resolved.items() if value is not None})
    return redact_values(flat)


def _flatten(prefix: str, node: Any, out: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    elif node is not None:
        out[prefix] = json.dumps(node) if isinstance(node, (list, tuple)) else str(node)


def job_tags(
    *,
    task: str,
    optimizer: str,
    config_hash: str,
    overrides: Sequence[str],
    device: str,
    device_name: str,
    torch_version: str,
    user: str,
    git_commit: str | None,
) -> dict[str, str]:
    """The tags a job's run starts with: its role, what it trains, where, from which code; overrides redacted."""
    tags = {
        **source_tags(user, git_commit),
        schema.ROLE: schema.ROLE_JOB,
        schema.TASK: task,
        schema.OPTIMIZER: optimizer,
        schema.CONFIG_HASH: config_hash,
        schema.OVERRIDES: redact(" ".join(overrides)),
        schema.TORCH_VERSION: torch_version,
        schema.DEVICE: device,
        schema.DEVICE_NAME: device_name,
        schema.STATUS: schema.RUNNING_OUTCOME,
    }
    if git_commit:
        tags[schema.GIT_COMMIT] = git_commit
    return tags


def source_tags(user: str, git_commit: str | None) -> dict[str, str]:
    """MLflow's own tags of who ran what, as `mlflow run` sets them: on job runs and on a sweep's parent run."""
    tags = {schema.SOURCE_NAME: "harness.train", schema.SOURCE_TYPE: "LOCAL", schema.USER: user}
    if git_commit:
        tags[schema.SOURCE_GIT_COMMIT] = git_commit
    return tags


def outcome_tags(
    status: str, divergence: str | None, run_name: str, rung: int | None = None, steps: int | None = None
) -> dict[str, str]:
    """The tags a finished run ends with; a diverged one is renamed `[diverged] ...` and marked (module docstring), a
    pruned one renamed `[pruned] ...` with its rung and the step it stopped at."""
    tags = {schema.STATUS: status}
    if status == schema.DIVERGED:
        tags[schema.DIVERGENCE] = divergence or ""
        tags[schema.DIVERGED_MARK] = "true"
        tags[schema.RUN_NAME] = diverged_run_name(run_name)  # MLflow renames the run when this tag is set
    elif status == schema.PRUNED:
        tags[schema.RUNG] = str(rung)
        tags[schema.PRUNED_AT] = str(steps)
        prefix = schema.PRUNED_NAME_PREFIX
        tags[schema.RUN_NAME] = run_name if run_name.startswith(prefix) else prefix + run_name
    return tags


# --- What a single run prints ---------------------------------------------------------------------------------------


def summary_line(
    status: str,
    steps: int,
    wall_s: float,
    final_train_loss: float,
    final_val: Mapping[str, float],
    run_id: str | None,
    where: str | None,
) -> str:
    """The last line of a single run, printed and written to the Hydra job's log:

    `completed: 200 steps in 0.41 s, train/loss 1.2e-05, val/loss 1.3e-05; run 3f2a... - see it: make ui ...`
    """
    parts = [f"{status}: {steps} steps in {wall_s:.3g} s", f"train/loss {final_train_loss:.4g}"]
    parts += [f"val/{key} {value:.4g}" for key, value in final_val.items()]
    line = ", ".join(parts)
    if run_id is None:
        return line + "; not tracked (tracking.enabled=false)"
    return redact(f"{line}; run {run_id} - see it: {where}")


def where_to_see(uri: str, experiment_id: str, run_id: str, launch_dir: Path | None = None) -> str:
    """How to open a run, in a command that exists where the user is: `make ui` for the project's own store when the
    launch directory has a Makefile with a `ui` target (a checkout; not an installed wheel), the `mlflow ui` command
    for another SQLite file, the run's page on a tracking server; credentials redacted."""

    if uri.startswith(("http://", "https://")):
        return redact(f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")
    if (
        launch_dir is not None
        and uri == store.default_uri(launch_dir)
        and _has_ui_target(launch_dir / "Makefile")
    ):
        return "make ui"
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri}"
    return redact(f"the MLflow store {uri}")


def _has_ui_target(makefile: Path) -> bool:
    try:
        return any(line.startswith("ui:") for line in makefile.read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        return False


# --- The dataset a run trained on ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRecord:
    """An MLflow dataset (mlflow.entities.Dataset's fields), as `mlflow.log_input` would log it."""

    name: str
    digest: str
    source_type: str
    source: str  # JSON
    profile: str  # JSON: split sizes and shapes
    schema: str | None = None  # (mlflow.entities.Dataset's field; the harness logs none)


@dataclass(frozen=True)
class InputTagRecord:
    key: str
    value: str


@dataclass(frozen=True)
class DatasetInputRecord:
    """What an mlflow.entities.DatasetInput holds, without importing MLflow (the tracking port writes it)."""

    dataset: DatasetRecord
    tags: tuple[InputTagRecord, ...]


def training_input(record: DatasetRecord) -> DatasetInputRecord:
    """The dataset as an input of a training run (context `training`, as `mlflow.log_input` tags it)."""
    return DatasetInputRecord(
        record, (InputTagRecord(schema.DATASET_CONTEXT, schema.DATASET_CONTEXT_TRAINING),)
    )


def dataset_record(task: "Task", splits: "Splits") -> DatasetRecord | None:
    """The task's data as an MLflow dataset: name, digest of its contents, source, split sizes.

    None for tasks without data (function tasks optimise a point: their one dummy sample has no features).
    """
    features = splits.train[0]
    if features.numel() == 0:
        return None
    cls = type(task)
    source = {"tags": {schema.DATASET_SOURCE_CODE: f"{cls.__module__}.{cls.__qualname__}.make_data"}}
    kwargs = {k: v for k, v in vars(task).items() if not k.startswith("_")}
    if kwargs:
        source["tags"]["task.kwargs"] = json.dumps(kwargs, sort_keys=True, default=str)
    profile = {
        "train_rows": int(features.shape[0]),
        "val_rows": int(splits.val[0].shape[0]),
        "features_shape": [-1, *features.shape[1:]],
        "features_dtype": str(features.dtype).removeprefix("torch."),
    }
    if len(splits.train) > 1:
        profile["targets_shape"] = [-1, *splits.train[1].shape[1:]]
        profile["targets_dtype"] = str(splits.train[1].dtype).removeprefix("torch.")
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        profile["description"] = doc[0]
    return DatasetRecord(
        name=task.name,
        digest=_digest(splits),
        source_type=schema.DATASET_SOURCE_TYPE,
        source=json.dumps(source),
        profile=json.dumps(profile),
    )


_DIGESTS: dict[
    int, tuple[Any, str]
] = {}  # id(splits) -> (splits, digest); holding splits keeps the id unique


def _digest(splits: "Splits") -> str:
    """sha256 of every tensor's bytes and shape, train then val; computed once per Splits object in a process
    (jobs in one process share their task's Splits)."""
    cached = _DIGESTS.get(id(splits))
    if cached is not None and cached[0] is splits:
        return cached[1]
    h = hashlib.sha256()
    for tensor in (*splits.train, *splits.val):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()[:16]
    _DIGESTS[id(splits)] = (splits, digest)
    return digest


# --- A sweep's parent run -------------------------------------------------------------------------------------------


def sweep_name(named: str | None, task: str, axes: Mapping[str, Sequence[str]], points: int | None) -> str:
    """The parent run's name: short and readable, e.g. `sweep demo: optimizer x optimizer.lr x seed (144 points)`
    or `sweep quadratic: optimizer=sgd,adam seed=0,1 (4 points)`.

    Args:
        named: the named sweep (`+sweep=demo`), if any.
        task: the task (or `sweeps` for a grid over tasks).
        axes: what varies over which values (grid order), without launcher/tracking keys.
        points: the grid's size, when known.
    """
    spelled = " ".join(f"{key}={','.join(values)}" for key, values in axes.items())
    if named or len(spelled) > schema.SWEEP_NAME_MAX_AXES_CHARS:
        spelled = " x ".join(axes)
    head = f"sweep {named or task}".rstrip()
    name = f"{head}: {spelled}" if spelled else head
    if points is not None:
        name += f" ({points} point{'s' if points != 1 else ''})"
    return redact(name)


def parent_params(
    axes: Mapping[str, Sequence[str]], fixed: Mapping[str, str], points: int | None
) -> dict[str, str]:
    """The parent run's params: what varied over which values (`grid.optimizer = sgd,adam`), what the sweep fixed
    (`trainer.max_steps = 25`, as typed), and the number of points; credentials redacted."""
    params = {f"{schema.GRID_PARAM_PREFIX}{key}": ",".join(values) for key, values in axes.items()}
    params.update(fixed)
    if points is not None:
        params[schema.GRID_POINTS_PARAM] = str(points)
    return {_param_key(key): _param_value(value) for key, value in redact_values(params).items()}


# MLflow refuses a param whose name holds other characters (`optimizer@opt=...` is valid Hydra) or whose value is
# longer than 6,000 characters (a grid of thousands of values): the sweep must start anyway.
_NOT_IN_PARAM_NAME = re.compile(r"[^/\w.\- :]")
MAX_PARAM_VALUE = 6000


def _param_key(key: str) -> str:
    return _NOT_IN_PARAM_NAME.sub("_", key).strip("/") or "_"


def _param_value(value: str) -> str:
    return value if len(value) <= MAX_PARAM_VALUE else value[: MAX_PARAM_VALUE - 1] + "…"


@dataclass(frozen=True)
class SweepHeadline:
    """The results a parent run shows in the runs table: counts, and the best result once known."""

    counts: Mapping[str, int]  # schema.count_outcomes(...)
    best_val_loss: float | None = None
    best_optimizer: str | None = None
    best_run_id: str | None = None
    metrics: Mapping[str, float] | None = None  # more headline numbers (the report's), by schema name


def headline_record(headline: SweepHeadline) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) for the parent run."""
    metrics = {f"{schema.JOB_COUNT_METRIC_PREFIX}{k}": float(v) for k, v in headline.counts.items()}
    if headline.best_val_loss is not None and math.isfinite(headline.best_val_loss):
        metrics[schema.BEST_VAL_LOSS] = float(headline.best_val_loss)
    metrics.update({k: float(v) for k, v in (headline.metrics or {}).items() if math.isfinite(v)})
    tags = {}
    if headline.best_optimizer:
        tags[schema.BEST_OPTIMIZER] = headline.best_optimizer
    if headline.best_run_id:
        tags[schema.BEST_RUN_ID] = headline.best_run_id
    return metrics, tags


def best_of(final_val_losses: Iterable[tuple[str, float | None]]) -> tuple[str, float] | None:
    """(run id, loss) of the lowest finite final validation loss, or None."""
    finite = [(run_id, loss) for run_id, loss in final_val_losses if loss is not None and math.isfinite(loss)]
    return min(finite, key=lambda item: item[1]) if finite else None
