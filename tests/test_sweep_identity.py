"""A sweep's state is its own launch's: concurrent launches sharing a sweep directory, the same sweep started twice,
an empty grid, and no secret in the files a sweep writes. Real multiruns in subprocesses, a real SQLite store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, all_runs, run_cli
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from harness.context import ParentRun
from harness.errors import ConfigError, StoreError
from harness.sweep import callback, progress
from harness.sweep import state as sweep_state

FAST = ["trainer.max_steps=5", "tracking.progress=false"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def launch(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.train", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    return err


def parents_by_experiment(store) -> dict[str, tuple]:
    """experiment name -> (its one parent run, the parent's children)."""
    from conftest import mlflow_client

    runs = all_runs(store)
    client = mlflow_client(store)
    found = {}
    for parent in [r for r in runs if r.data.tags.get("harness.role") == "sweep"]:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        name = client.get_experiment(parent.info.experiment_id).name
        assert name not in found, f"two parents in experiment {name}"
        found[name] = (parent, children)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], JOBLIB], ids=["basic", "joblib"])
def test_two_sweeps_sharing_a_sweep_dir_each_get_their_own_children(store, tmp_path, launcher):
    shared = [f"hydra.sweep.dir={tmp_path / 'shared'}", *FAST, *launcher]
    first = launch(["-m", "task=quadratic", "seed=0,1", *shared], tmp_path)
    second = launch(["-m", "task=linreg_1d", "seed=0,1,2", *shared], tmp_path)
    errors = [finish(first), finish(second)]
    assert (first.returncode, second.returncode) == (0, 0), errors
    found = parents_by_experiment(store)
    assert sorted(found) == ["linreg_1d", "quadratic"]
    for task, size in (("quadratic", 2), ("linreg_1d", 3)):
        parent, children = found[task]
        assert parent.info.status == "FINISHED"
        assert len(children) == size
        assert {c.data.params["task.name"] for c in children} == {task}
        assert sorted(int(c.data.params["seed"]) for c in children) == list(range(size))
        assert (
            parent.data.tags["harness.jobs.completed"] == parent.data.tags["harness.jobs.total"] == str(size)
        )
    assert "[sweep] finished: 2/2 jobs done" in errors[0]
    assert "[sweep] finished: 3/3 jobs done" in errors[1]
    assert len(list((tmp_path / "shared").glob("harness_sweep-*.json"))) == 2


@pytest.mark.slow
def test_the_same_batched_sweep_started_twice_at_once_trains_each_point_once(store, tmp_path):
    args = ["-m", "task=digits_mlp", "optimizer=sgd,adam", "seed=0,1", "trainer.max_steps=100"]
    args += ["tracking.progress=false", "hydra/launcher=batched"]
    procs = [launch(args, tmp_path), launch(args, tmp_path)]
    errors = [finish(p) for p in procs]
    [(parent, children)] = parents_by_experiment(store).values()
    assert parent.info.status == "FINISHED" and parent.data.tags["harness.jobs.completed"] == "4"
    assert len(children) == 4 and all(c.data.tags["harness.status"] == "completed" for c in children)
    assert len({c.data.tags["harness.config_hash"] for c in children}) == 4
    codes = sorted(p.returncode for p in procs)
    if codes == [0, 1]:  # the second launch met the first one's lock: refused in one line
        [refused] = [e for p, e in zip(procs, errors) if p.returncode == 1]
        lines = [ln for ln in refused.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: this sweep is already running"), refused
    else:  # the first had finished when the second took the lock: it resumes with nothing to do
        assert codes == [0, 0] and any("4 grid points already done" in e for e in errors), errors


@pytest.mark.slow
def test_an_empty_sweep_list_is_refused_in_one_line_and_creates_nothing(store, tmp_path):
    proc = run_cli("-m", "seed=range(0,0)", "optimizer=sgd,adam", *FAST, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert lines == [
        "error: seed='range(0,0)' is not allowed: at least one value: this sweep would run no job"
    ]
    assert all_runs(store) == [] and not (tmp_path / "multirun").exists()


def master_config(*overrides: str):
    """The sweep's master config, as `python -m harness.train -m <overrides>` composes it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    return loader, loader.load_configuration("config", overrides=list(overrides), run_mode=RunMode.MULTIRUN)


def test_an_empty_list_is_named_whichever_key_has_it():
    with pytest.raises(ConfigError, match=r"optimizer.lr='shuffle\(range\(0,0\)\)' is not allowed"):
        callback._refuse_an_empty_grid(master_config("optimizer.lr=shuffle(range(0,0))", "seed=0,1")[1])
    callback._refuse_an_empty_grid(master_config("seed=0,1")[1])  # a grid with points passes


@pytest.mark.parametrize(
    "path",
    [
        "/tmp/a b/c,d=e",
        "/tmp/it's",
        "/tmp/x\\y",
        "/tmp/${now:%Y}/z",
        "/tmp/a\\'b",
        "/tmp/q\\",
        "/tmp/a\\${x}",
    ],
)
def test_the_state_path_reaches_the_job_as_it_is_whatever_its_characters(path):
    # What Hydra does with the override: parse it, apply it to the job's config, which env_set then reads.
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    line = sweep_state.Launch(Path(path), Path("progress")).job_override()
    cfg = OmegaConf.create({"hydra": {"job": {"env_set": {"A": "b"}}}})
    OmegaConf.set_struct(cfg, True)
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides([line]), cfg)
    assert cfg.hydra.job.env_set[sweep_state.ENV] == path


def test_hydra_composes_each_job_from_the_overrides_the_callback_appends(tmp_path):
    # Hydra's launchers (basic, joblib, submitit) call load_sweep_config(master, job overrides), which composes the
    # job from master.hydra.overrides.hydra: the override on_multirun_start appends reaches every job's env_set.
    from omegaconf import open_dict, read_write

    loader, master = master_config("seed=0,1")
    line = sweep_state.Launch(tmp_path / "s.json", tmp_path / "p.jsonl").job_override()
    with read_write(master.hydra), open_dict(master.hydra):
        master.hydra.overrides.hydra.append(line)
    job = loader.load_sweep_config(master, ["seed=1"])
    assert job.hydra.job.env_set[sweep_state.ENV] == str(tmp_path / "s.json")
    assert job.seed == 1 and line not in job.hydra.overrides.task


SECRET_URI = "postgresql://alice:s3cr3t@db.example:5432/mlflow"


def test_the_state_file_holds_no_secret_and_jobs_take_the_uri_from_their_own_config(tmp_path):
    launch_files = sweep_state.Launch.new(tmp_path)
    parent = ParentRun(uri=SECRET_URI, experiment_id="1", run_id="abc")
    sweep_state.SweepState(2, 0.0, str(launch_files.progress_file), parent).save(launch_files.state_file)
    text = launch_files.state_file.read_text()
    assert "s3cr3t" not in text and "db.example:5432/mlflow" in text
    assert sweep_state.load(launch_files.state_file, SECRET_URI).parent == parent
    with pytest.raises(StoreError, match="is not its sweep's"):
        sweep_state.load(launch_files.state_file, "postgresql://bob:other@elsewhere/mlflow")
    plain = ParentRun(uri="sqlite:////data/mlflow.db", experiment_id="1", run_id="abc")
    sweep_state.SweepState(2, 0.0, "p", plain).save(launch_files.state_file)
    # Nothing to hide: the sweep's own URI, whatever the job would have chosen.
    assert sweep_state.load(launch_files.state_file, "sqlite:////other.db").parent == plain
    assert [p.name for p in tmp_path.iterdir()] == [launch_files.state_file.name]  # no partial file left


def test_progress_entries_are_redacted(tmp_path, capsys):
    state = sweep_state.SweepState(2, 0.0, str(tmp_path / "progress.jsonl"))
    progress.report(state, "failed", [f"tracking.uri={SECRET_URI}", "seed=1"], f"cannot reach {SECRET_URI}")
    progress.report_many(state, [("completed", [f"tracking.uri={SECRET_URI}", "seed=0"], "")])
    text = (tmp_path / "progress.jsonl").read_text()
    assert "s3cr3t" not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["overrides"][1] for e in entries] == ["seed=1", "seed=0"]
    said = capsys.readouterr().err
    assert "[sweep] 1/2 jobs done" in said and "s3cr3t" not in said  # the last job's line is the summary's


def test_a_missing_state_file_is_one_line(tmp_path):
    with pytest.raises(StoreError, match="sweep state .* cannot be read"):
        sweep_state.load(tmp_path / "gone.json", "sqlite:////x.db")


@pytest.mark.slow
def test_no_file_the_batched_sweep_writes_holds_a_secret(tmp_path):
    # Tracking off: the URI is only carried (by the overrides, into job dirs and the progress file), never used.
    secret = "tracking.uri=http://alice:s3cr3t@127.0.0.1:1"
    args = ["-m", "seed=0,1", *FAST, "tracking.enabled=false", secret, "hydra/launcher=batched"]
    proc = run_cli(*args, "hydra.launcher.write_job_dirs=true", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [p for p in (tmp_path / "sw").rglob("*") if p.is_file()]
    # This launch's state, its progress and the progress lines already shown
    assert len([p for p in written if p.name.startswith("harness_")]) == 3
    assert len([p for p in written if p.parent.name == ".hydra"]) == 6  # 2 jobs x config, hydra, overrides
    # multirun.yaml too: the harness sweeper writes Hydra's file redacted.
    leaking = [p.relative_to(tmp_path) for p in written if "s3cr3t" in p.read_text()]
    assert leaking == [] and "s3cr3t" not in proc.stderr
    assert "***@127.0.0.1" in (tmp_path / "sw" / "0" / ".hydra" / "overrides.yaml").read_text()
