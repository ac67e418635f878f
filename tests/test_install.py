"""The installed commands work from any directory, in a source checkout (editable) and from a built wheel."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, all_runs

SCRIPT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["harness-train"]


def harness_train(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The `harness-train` console script of this checkout, as pip generates it (module:function)."""
    module, function = SCRIPT.split(":")
    code = f"import sys; sys.argv[0] = 'harness-train'; from {module} import {function}; {function}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # make check-install runs this from a wheel too
def test_harness_train_runs_a_job_from_another_directory(store, tmp_path):
    proc = harness_train("trainer.max_steps=3", "tracking.progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run] = all_runs(store)
    assert run.info.status == "FINISHED" and run.data.params["task.name"] == "quadratic"


def completions(line: str, cwd: Path) -> list[str]:
    """What Hydra's bash completion offers for `line` (the installed script asks the command, as here)."""
    proc = harness_train("-sc", "query=bash", cwd=cwd, env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


@pytest.mark.slow  # five completion processes
def test_shell_completion_completes_keys_and_group_options_without_schema_names(tmp_path):
    install = harness_train("--shell-completion", "install=bash", cwd=tmp_path)
    assert (
        install.returncode == 0
        and "complete -o nospace -o default -F hydra_bash_completion" in install.stdout
    )
    optimizers = completions("harness-train optimizer=", tmp_path)
    assert {"optimizer=adam", "optimizer=sgd", "optimizer=muon"} <= set(optimizers)
    trainer = completions("harness-train trainer.", tmp_path)
    assert "trainer.max_steps=" in trainer and "trainer.eval_every=" in trainer
    help_text = harness_train("--help", cwd=tmp_path).stdout
    assert "optimizer: " in help_text
    for offered in (optimizers, completions("harness-train task=", tmp_path), help_text.split()):
        assert not [word for word in offered if "base_" in word]  # schemas are no options


def test_choosing_a_schema_name_is_one_line(tmp_path):
    proc = harness_train("optimizer=base_adam", cwd=tmp_path)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "optimizer" in lines[0]


@pytest.mark.slow
def test_a_wheel_ships_the_configs_and_runs_a_job_and_a_report_outside_the_repository(store, tmp_path):
    # Built from this checkout, installed without its sources on the path (non-editable), run from elsewhere.
    # The full check (a clean clone, a fresh venv, torch pinned first) is `make check-install`, run by .ci/run.
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(wheels),
        ".",
    ]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True)
    [wheel] = wheels.glob("harness-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert (target / "harness" / "conf" / "config.yaml").is_file()
    assert (target / "harness" / "conf" / "sweep" / "demo.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import harness.install as i; print(i.CONF_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(target / "harness" / "conf")
    job = subprocess.run(
        [
            str(target / "bin" / "harness-train"),
            "-m",
            "optimizer=sgd,adam",
            "trainer.max_steps=5",
            "tracking.progress=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    assert sorted(r.info.status for r in all_runs(store)) == ["FINISHED"] * 3
    report = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from harness.report.cli import main; sys.exit(main())",
            "--experiment",
            "quadratic",
            "--out",
            str(tmp_path / "report"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert any((tmp_path / "report").iterdir())
