"""What a sweep says (progress, failures, hints, its log file) and what its parent records at its end (the answer),
in-process on real files and the port's own run values: the subprocess sweeps of test_sweeps/test_batched_launcher count
the lines of whole sweeps."""

import logging
import time

from harness.context import ParentRun
from harness.sweep import answer, callback, output, progress
from harness.sweep.state import SweepState
from harness.tracking import port, record, schema, store

SECRET_URI = "http://user:s3cr3t@tracking.example:5000"


def a_state(tmp_path, total: int, every: float) -> SweepState:
    # Started a minute ago: the clock and the ETA of the lines below are exact.
    return SweepState(
        total, time.time() - 60, str(tmp_path / "harness_progress-x.jsonl"), progress_every_s=every
    )


def logged(tmp_path) -> list[str]:
    return [line.split("] - ", 1)[1] for line in (tmp_path / output.LOG_FILE).read_text().splitlines()]


def test_the_progress_line_comes_with_the_first_job_then_at_most_every_progress_every_s(tmp_path, capsys):
    state = a_state(tmp_path, 4, every=600)
    progress.report(state, schema.COMPLETED, ["seed=0"])
    progress.report(state, schema.FAILED_OUTCOME, ["seed=1", f"tracking.uri={SECRET_URI}"], "boom:\n  line 3")
    progress.report_many(state, [(schema.COMPLETED, ["seed=2"], ""), (schema.DIVERGED, ["seed=3"], "")])
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[sweep] 1/4 jobs done · 1:00 elapsed · ~3:00 left",
        "[sweep] failed: boom: line 3 · re-run it alone: python -m harness.train seed=1 "
        "tracking.uri=http://***@tracking.example:5000",
    ]
    assert logged(tmp_path) == lines


def test_without_a_throttle_every_job_but_the_last_prints_progress(tmp_path, capsys):
    state = a_state(tmp_path, 3, every=0)
    for seed in range(3):
        progress.report(state, schema.COMPLETED, [f"seed={seed}"])
    assert [line.split(" · ")[0] for line in capsys.readouterr().err.splitlines()] == [
        "[sweep] 1/3 jobs done",
        "[sweep] 2/3 jobs done",
    ]


def test_a_resumes_skipped_points_print_no_progress(tmp_path, capsys):
    state = a_state(tmp_path, 3, every=0)
    progress.report_many(state, [(progress.SKIPPED, [f"seed={s}"], "") for s in range(2)])
    assert capsys.readouterr().err == ""  # the start line said how many are done
    progress.report(state, schema.COMPLETED, ["seed=2"])
    assert capsys.readouterr().err == ""  # the last job: the summary follows


def test_a_sweep_log_that_cannot_be_written_costs_the_file_only(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the sweep directory would be")
    say = output.logger("harness.sweep.test_output", tmp_path / "taken" / "sweep")
    say.info("[sweep] still said")
    say.info("[sweep] said again")
    captured = capsys.readouterr()
    assert captured.err == "[sweep] still said\n[sweep] said again\n"  # no logging traceback


def test_a_jobs_console_lines_are_dropped_while_it_runs_in_a_sweep(tmp_path, capsys):
    console = (
        logging.StreamHandler()
    )  # as Hydra's job logging sets up the root logger: the terminal and a file
    log_file = logging.FileHandler(tmp_path / "train.log")
    root = logging.getLogger()
    root.addHandler(console)
    root.addHandler(log_file)
    try:
        with output.quiet_console():
            logging.getLogger("harness.job").warning("completed: 10 steps")
        logging.getLogger("harness.job").warning("after the job")
    finally:
        root.removeHandler(console)
        root.removeHandler(log_file)
        log_file.close()
    assert capsys.readouterr().err == "after the job\n"
    assert (tmp_path / "train.log").read_text() == "completed: 10 steps\nafter the job\n"


def test_the_hints_name_commands_that_exist_where_the_user_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no harness-report on PATH: the one beside this Python
    own = store.default_uri(tmp_path)
    ran = ParentRun(own, "3", "abc")
    no_makefile = callback.see_it(ran, "demo", tmp_path)
    assert no_makefile.startswith(f"[sweep] see it: mlflow ui --backend-store-uri {own} · the report: ")
    assert no_makefile.endswith(f"harness-report --experiment demo --tracking-uri {own}")
    (tmp_path / "Makefile").write_text("test:\n\tpytest\n")
    assert callback.see_it(ran, "demo", tmp_path) == no_makefile  # a Makefile without a ui target
    (tmp_path / "Makefile").write_text("test:\n\tpytest\nui: setup\n\tmlflow ui\n")
    assert callback.see_it(ran, "demo", tmp_path).startswith("[sweep] see it: make ui · the report: ")
    other = callback.see_it(ParentRun(f"sqlite:///{tmp_path / 'x.db'}", "3", "abc"), "demo", tmp_path)
    assert other.startswith(f"[sweep] see it: mlflow ui --backend-store-uri sqlite:///{tmp_path / 'x.db'} · ")
    served = callback.see_it(ParentRun(SECRET_URI, "3", "abc"), "demo", tmp_path)
    assert served.startswith("[sweep] see it: http://***@tracking.example:5000/#/experiments/3/runs/abc · ")
    assert "s3cr3t" not in served


def child(
    task: str, optimizer: str, lr: float, seed: int, outcome: str, loss: float | None
) -> port.StoredRun:
    """A finished child run as the port reads it back."""
    params = {"task.name": task, "optimizer.name": optimizer, schema.RESOLVED_LR: str(lr), "seed": str(seed)}
    params |= {schema.RESOLVED_BATCH_SIZE: "32", "data.batch_size": "32"}
    tags = {schema.CONFIG_HASH: f"{task}-{optimizer}-{lr}-{seed}", schema.STATUS: outcome}
    info = port.RunInfo(
        tags[schema.CONFIG_HASH], f"{optimizer} {seed}", schema.FINISHED, seed, seed, "1", None
    )
    metrics = {} if loss is None else {schema.FINAL_VAL_LOSS: loss}
    return port.StoredRun(info, port.RunData(params, tags, metrics))


def test_a_sweep_over_two_tasks_records_an_answer_per_task():
    """A parent that ends KILLED: one best/val_loss per task (the mean over seeds of its best configuration), none
    for the sweep as a whole, and the description in the report's form, with the banner of an unfinished sweep."""
    runs = [
        child("a", "sgd", 0.1, 0, schema.COMPLETED, 1.0),
        child("a", "sgd", 0.1, 1, schema.COMPLETED, 3.0),
        child("a", "adam", 0.01, 0, schema.COMPLETED, 0.5),  # better, but it diverged on the other seed
        child("a", "adam", 0.01, 1, schema.DIVERGED, None),
        child("b", "sgd", 0.1, 0, schema.COMPLETED, 4.0),
        child("b", "sgd", 0.1, 1, schema.COMPLETED, 4.0),
    ]
    counts = schema.count_outcomes([schema.COMPLETED] * 5 + [schema.DIVERGED])
    said = answer.answer(runs, counts, schema.KILLED)
    metrics, tags = record.headline_record(said.headline)
    assert {k: v for k, v in metrics.items() if k.startswith("best/")} == {
        "best/val_loss/a": 2.0,
        "best/val_loss/b": 4.0,
    }
    assert tags == {schema.BEST_OPTIMIZER: "a: sgd; b: sgd"}
    header = (
        "| # | optimizer | best lr | batch size | final val loss (mean ± std) | seeds | trials | diverged |"
    )
    rule = "|---|---|---|---|---|---|---|---|"
    assert said.note == "\n\n".join(
        [
            "**Unfinished sweep (parent run killed): 6 grid points have a result so far; run the same sweep command "
            "again to complete it.**",
            "**On a, sgd at lr 0.1 and batch size 32 reached the lowest final validation loss, 2 ± 1.4 over 2 "
            "seed(s); runner-up adam (lr 0.01, batch size 32): 0.5.**",
            "\n".join(
                [
                    header,
                    rule,
                    "| 1 | sgd | 0.1 | 32 | 2 ± 1.4 | 2 | 2 | 0 |",
                    "| 2 | adam | 0.01 | 32 | 0.5 | 2 | 2 | 1 |",
                ]
            ),
            "**On b, sgd at lr 0.1 and batch size 32 reached the lowest final validation loss, 4, identical on all 2 "
            "seeds.**",
            "\n".join(
                [
                    header,
                    rule,
                    "| 1 | sgd | 0.1 | 32 | 4 ± 0 | 2 | 2 | 0 |",  # the report's table says ± 0 too
                ]
            ),
            "Written when the sweep ended; the report (`harness-report`) replaces it with its own, figures included.\n",
        ]
    )


def test_the_description_keeps_the_answer_and_cuts_the_table_to_fit_mlflows_limit():
    runs = [child("t", f"opt{k:03d}", 0.1, 0, schema.COMPLETED, 1.0 + k) for k in range(200)]
    said = answer.answer(runs, schema.count_outcomes([schema.COMPLETED] * 200))
    lines = said.note.splitlines()
    assert lines[0].startswith(
        "**On t, opt000 at lr 0.1 and batch size 32 reached the lowest final validation loss"
    )
    assert [line.split(" | ")[1] for line in lines if line.startswith("| ") and line[2].isdigit()] == [
        f"opt{k:03d}" for k in range(answer.MAX_ROWS)
    ]
    assert "(190 more optimizers in the report)" in lines
    assert len(said.note) <= port.MAX_TAG_LENGTH
