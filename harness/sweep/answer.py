"""The sweep's answer as its parent run records it when it ends: the headline numbers and the description.

One number, one meaning: the parent's `best/val_loss` is the report's headline number, the score of the sweep's best
configuration by the one ranking (harness.tracking.queries.rank_configurations: the mean over its completed seeds of
the final validation loss); a sweep over several tasks has one per task (`best/val_loss/<task>`). The single best run
is beside it under its own name (`best/single_run_val_loss`, `harness.best_run_id`).

The description (`mlflow.note.content`) is Markdown in the form of the report's (harness.report.note): per task the
headline sentence and the ranked table of each optimizer's best configuration, then a footer; the report replaces it
with its fuller text when it runs. Pure: the latest run per grid point in, plain values out; no pandas.
"""

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.tracking import queries, record, schema
from harness.tracking.port import MAX_TAG_LENGTH, StoredRun

COLUMNS = [
    "#",
    "optimizer",
    "best lr",
    "batch size",
    "final val loss (mean ± std)",
    "seeds",
    "trials",
    "diverged",
]
MAX_ROWS = 10  # per task's table; the report has every optimizer
FOOTER = (
    "Written when the sweep ended; the report (`harness-report`) replaces it with its own, figures included."
)


@dataclass(frozen=True)
class Answer:
    headline: record.SweepHeadline  # the parent's numbers and tags (record.headline_record)
    sentences: list[str]  # the headline sentence of each task, in task order
    note: str  # the parent's description


def answer(runs: Sequence[StoredRun], counts: Mapping[str, int], status: str = schema.FINISHED) -> Answer:
    """The answer of a sweep whose latest run per grid point is `runs`, counted `counts`, ending with `status`."""
    rows = [queries.trial_row(run) for run in runs]
    tasks = _tasks(rows)
    bests = {task: _bests([r for r in rows if r["task"] == task]) for task in tasks}
    sentences = [sentence(task, bests[task]) for task in tasks]
    banner = None if status == schema.FINISHED else _unfinished(status, counts)
    return Answer(_headline(rows, counts, tasks), sentences, _note(bests, sentences, banner))


def _tasks(rows: list[dict]) -> list[Any]:
    return sorted({row["task"] for row in rows}, key=lambda task: (task is None, str(task)))


def _headline(rows: list[dict], counts: Mapping[str, int], tasks: list) -> record.SweepHeadline:
    heads = queries.headlines(rows)
    if len(tasks) != 1:  # several tasks: losses of different problems compare to nothing
        metrics = {schema.best_val_loss_of(str(t)): h.val_loss for t, h in heads.items()}
        optimizers = "; ".join(f"{t}: {h.optimizer}" for t, h in heads.items())
        return record.SweepHeadline(counts, best_optimizer=optimizers or None, metrics=metrics)
    head = heads.get(tasks[0])
    single = record.best_of(
        (r["run_id"], r["final_val_loss"]) for r in rows if r["outcome"] == schema.COMPLETED
    )
    return record.SweepHeadline(
        counts=counts,
        best_val_loss=head.val_loss if head else None,
        best_optimizer=head.optimizer if head else None,
        best_run_id=single[0] if single else None,
        metrics={schema.BEST_SINGLE_RUN_VAL_LOSS: single[1]} if single else None,
    )


# --- the sentence and the table, in the report's words (harness.report.tables) ------------------------------------


@dataclass(frozen=True)
class _Best:
    """An optimizer's best configuration with what the table shows of it."""

    config: queries.Configuration
    std: float  # over its completed seeds (NaN with fewer than 2)
    identical: bool  # 2 or more completed seeds, all with the same final loss
    seeds: int
    batch: str
    accuracy: float  # mean final val accuracy of its completed seeds (NaN when unknown)
    totals: dict[str, int]  # the optimizer's runs over the task's grid, by outcome


def _bests(rows: list[dict]) -> list[_Best]:
    """Each optimizer's best configuration of one task's rows, in ranking order."""
    members: dict[tuple, list[dict]] = {}
    totals: dict[Any, list[dict]] = {}
    for row in rows:
        members.setdefault(tuple(row[k] for k in queries.CONFIG_KEYS), []).append(row)
        totals.setdefault(row["optimizer"], []).append(row)
    return [
        _best(c, members[_key(c)], totals[c.optimizer])
        for c in queries.best_per_optimizer(queries.rank_configurations(rows))
    ]


def _best(c: queries.Configuration, members: list[dict], optimizer_rows: list[dict]) -> _Best:
    done = [r for r in members if r["outcome"] == schema.COMPLETED]
    known = [r["final_val_loss"] for r in done if r["final_val_loss"] is not None]
    known = [v for v in known if math.isfinite(v)]
    return _Best(
        config=c,
        std=statistics.stdev(known) if len(known) > 1 else math.nan,
        identical=len(known) > 1 and len(set(known)) == 1,
        seeds=len({r["seed"] for r in members if r["seed"] is not None}),
        batch=_batch(c.batch_size, members),
        accuracy=_mean([r["final_val_accuracy"] for r in done if r["final_val_accuracy"] is not None]),
        totals=_totals(optimizer_rows),
    )


def _key(c: queries.Configuration) -> tuple:
    return (c.task, c.optimizer, c.lr, c.batch_size)


def _batch(size: int | None, members: list[dict]) -> str:
    """32, or "full (1437)" for full-batch runs."""
    text = "?" if size is None else str(size)
    return f"full ({text})" if any(r["batch_label"] == "full" for r in members) else text


def _totals(rows: list[dict]) -> dict[str, int]:
    counts = schema.count_outcomes(r["outcome"] for r in rows)
    return {"trials": counts["total"], "diverged": counts[schema.DIVERGED]}


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def _lr(lr: float | None) -> str:
    return "?" if lr is None else f"{lr:.3g}"


def _over_seeds(best: _Best) -> str:
    c = best.config
    if best.identical:
        which = (
            f"{best.seeds} seeds" if c.completed == best.seeds else f"{c.completed} runs ({best.seeds} seeds)"
        )
        return f"{c.val_loss_mean:.4g}, identical on all {which}"
    return f"{_mean_std(c.val_loss_mean, best.std)} over {best.seeds} seed(s)"


def sentence(task: Any, bests: list[_Best]) -> str:
    """The task's headline sentence, as the report starts its own: which optimizer, at which lr and batch size, did
    best, over how many seeds, and the runner-up."""
    if not bests or math.isnan(bests[0].config.val_loss_mean):
        return f"On {task}, no optimizer completed a run: every configuration diverged or failed."
    top = bests[0]
    text = (
        f"On {task}, {top.config.optimizer} at lr {_lr(top.config.lr)} and batch size {top.batch} reached the "
        f"lowest final validation loss, {_over_seeds(top)}"
    )
    if not math.isnan(top.accuracy):
        text += f" (accuracy {top.accuracy:.1%})"
    if top.config.diverged_share > 0:
        text += f" (but it diverged on {top.config.diverged} of {top.config.runs} runs, as every setting did on some)"
    if len(bests) > 1:
        text += "; " + _runner_up(top, bests[1])
    return text + "."


def _runner_up(top: _Best, second: _Best) -> str:
    c = second.config
    text = f"runner-up {c.optimizer} (lr {_lr(c.lr)}, batch size {second.batch}): "
    if second.identical:
        text += f"{c.val_loss_mean:.4g}, identical on all its seeds"
    else:
        text += _mean_std(c.val_loss_mean, second.std)
    spread = max([v for v in (top.std, second.std) if not math.isnan(v)], default=0.0)
    close = abs(c.val_loss_mean - top.config.val_loss_mean) <= spread
    if c.diverged_share == top.config.diverged_share and close:
        text += ", within the seed-to-seed spread: not a clear win"
    return text


def _table(bests: list[_Best], rows: int) -> str:
    cells = [
        [
            str(rank),
            str(b.config.optimizer),
            _lr(b.config.lr),
            b.batch,
            _mean_std(b.config.val_loss_mean, b.std),
            str(b.seeds),
            str(b.totals["trials"]),
            str(b.totals["diverged"]),
        ]
        for rank, b in enumerate(bests[:rows], start=1)
    ]
    lines = [_cells(COLUMNS), "|" + "---|" * len(COLUMNS), *(_cells(row) for row in cells)]
    if len(bests) > rows:
        lines.append(f"\n({len(bests) - rows} more optimizers in the report)")
    return "\n".join(lines)


def _cells(values: list[str]) -> str:
    return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"


def _unfinished(status: str, counts: Mapping[str, int]) -> str:
    have = counts[schema.COMPLETED] + counts[schema.DIVERGED]
    return (
        f"Unfinished sweep (parent run {status.lower()}): {have} grid points have a result so far; run the same "
        "sweep command again to complete it."
    )


def _note(bests: dict[Any, list[_Best]], sentences: list[str], banner: str | None) -> str:
    """The parent's description: at most MAX_TAG_LENGTH characters (fewer table rows, then none, if need be)."""
    for limit in (MAX_ROWS, 3, 0):
        parts = [f"**{banner}**"] if banner else []
        for task_bests, said in zip(bests.values(), sentences):
            parts.append(f"**{said}**")
            if limit:
                parts.append(_table(task_bests, limit))
        text = "\n\n".join([*parts, FOOTER]) + "\n"
        if len(text) <= MAX_TAG_LENGTH:
            return text
    return text[: MAX_TAG_LENGTH - 1] + "…"
