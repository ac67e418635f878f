"""Team scale: a real MLflow tracking server on PostgreSQL, started by the project's own script, on loopback.

Slow (the server takes 15-40 s to start): marked `slow`, run by `make test-all` / .ci/run.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, history, run_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """scripts/server.sh with its own data directory and ports."""

    def __init__(self, directory: Path):
        self.env = {
            **os.environ,
            "SERVER_DIR": str(directory),
            "MLFLOW_PORT": str(free_port()),
            "PG_PORT": str(free_port()),
            "PYTHON": sys.executable,
        }
        self.uri = f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    def run(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "server.sh"), action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def kill_mlflow(self) -> None:
        """The tracking server goes away (PostgreSQL stays)."""
        pid = int(Path(self.env["SERVER_DIR"], "mlflow.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        Path(self.env["SERVER_DIR"], "mlflow.pid").unlink()

    def ensure_started(self) -> None:
        """Start the tracking server again after kill_mlflow (a test that failed midway leaves it down)."""
        if not Path(self.env["SERVER_DIR"], "mlflow.pid").exists():
            restarted = self.run("start")
            assert restarted.returncode == 0, restarted.stderr[-3000:]


@pytest.fixture(scope="module")
def server():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (make setup installs it)")
    if not shutil.which("runuser") and os.geteuid() == 0:
        pytest.skip("runuser is needed to run PostgreSQL as a non-root user")
    # Not under pytest's tmp (mode 700 for root): PostgreSQL runs as `postgres` and must reach its data directory.
    directory = Path(tempfile.mkdtemp(prefix="harness-server-"))
    directory.chmod(0o755)
    srv = Server(directory)
    started = srv.run("start")
    if started.returncode != 0 and "could not install postgresql" in started.stderr:
        pytest.skip("PostgreSQL could not be installed here: " + started.stderr.strip()[-300:])
    if started.returncode != 0:
        srv.run("stop")
        pytest.fail("scripts/server.sh start failed: " + started.stderr[-3000:])
    srv.started = started
    yield srv
    srv.run("stop")
    shutil.rmtree(directory, ignore_errors=True)


def children_of_single_parent(client, experiment: str):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_a_parallel_sweep_against_the_server_records_every_point(server, tmp_path):
    from mlflow import MlflowClient

    proc = run_cli(
        "-m",
        "task=quadratic",
        "optimizer=sgd,adam",
        "seed=0,1",
        "trainer.max_steps=25",
        "trainer.eval_every=5",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "tracking=server",
        f"tracking.uri={server.uri}",
        "tracking.experiment=on_server",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(server.uri)
    [parent], children = children_of_single_parent(client, "on_server")
    assert parent.info.status == "FINISHED" and len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["harness.status"] == "completed"
        # Per step the series that change with it; at each evaluation val/* and the ones that follow from the step.
        for key in ("train/loss", "grad_norm", "time/wall_s", "train/suboptimality"):
            assert [s for s, _ in history(server.uri, child.info.run_id, key)] == list(range(25)), key
        for key in ("val/loss", "epoch", "samples_seen", "lr"):
            assert [s for s, _ in history(server.uri, child.info.run_id, key)] == [0, 5, 10, 15, 20, 25], key
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["config.yaml"]


def test_an_unreachable_server_stops_the_run_at_once(tmp_path):
    start = time.time()
    proc = run_cli("tracking=server", f"tracking.uri=http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "tracking.uri=" in line and "tracking server" in line
    assert time.time() - start < 60


def wait_for_created_runs(uri: str, experiment: str, count: int, timeout: float = 120) -> None:
    """Until `count` child runs are wholly created: a run exists from its first REST call, and its config.yaml
    artifact is the last thing its creation writes (harness.tracking.port.Store.create_runs)."""
    from mlflow import MlflowClient

    client, deadline = MlflowClient(uri), time.time() + timeout
    experiment_id = client.get_experiment_by_name(experiment).experiment_id

    def created() -> int:
        runs = client.search_runs([experiment_id], "tags.`mlflow.parentRunId` != ''")
        return sum(any(a.path == "config.yaml" for a in client.list_artifacts(r.info.run_id)) for r in runs)

    while created() < count:
        assert time.time() < deadline, "the second job never created its run"
        time.sleep(0.2)


def test_the_server_lost_mid_sweep_loses_nothing(server, tmp_path):
    from mlflow import MlflowClient

    args = [
        "-m",
        "task=digits_mlp",
        "optimizer=sgd",
        "seed=0,1,2,3",
        "trainer.max_steps=400",
        "trainer.eval_every=100",
        "tracking=server",
        f"tracking.uri={server.uri}",
        "tracking.experiment=lost",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.train", *args],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "[sweep] 1/4 jobs done" in line:
            # The second job's run is created: from here on what the server cannot take goes to the job's spool.
            wait_for_created_runs(server.uri, "lost", 2)
            server.kill_mlflow()
            break
    try:
        lines += proc.stderr.readlines()
        assert proc.wait(timeout=600) == 0, "".join(lines)[-3000:]
        output = "".join(lines)
        assert "python -m harness.sync" in output, output[-3000:]
        spools = sorted((tmp_path / "mlruns" / "unsent").glob("*.jsonl"))
        assert len(spools) == 1, output[-3000:]  # the job that was training; later jobs could not start a run
    finally:
        server.ensure_started()
    synced = subprocess.run(
        [sys.executable, "-m", "harness.sync", *map(str, spools)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert synced.returncode == 0, synced.stderr
    client = MlflowClient(server.uri)
    run_id = spools[0].stem
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["harness.status"] == "completed"
    assert [s for s, _ in history(server.uri, run_id, "train/loss")] == list(range(400))

    again = run_cli(*args, cwd=tmp_path)  # the same sweep command: completes the grid
    assert again.returncode == 0, again.stderr[-3000:]
    [parent], children = children_of_single_parent(client, "lost")
    completed = [c for c in children if c.data.tags.get("harness.status") == "completed"]
    assert len(completed) == 4 and len({c.data.params["seed"] for c in completed}) == 4
    assert all(c.info.status != "RUNNING" for c in children)
    assert parent.info.status == "FINISHED"
    for child in completed:
        assert len(history(server.uri, child.info.run_id, "train/loss")) == 400


def test_the_database_takes_no_password_less_connection_and_mlflow_is_no_superuser(server):
    import psycopg2

    directory = Path(server.env["SERVER_DIR"])
    port = int(server.env["PG_PORT"])
    hba = (directory / "pgdata" / "pg_hba.conf").read_text()
    assert not [ln for ln in hba.splitlines() if "trust" in ln.split("#")[0]]
    pgpass = directory / "pgpass"
    assert pgpass.stat().st_mode & 0o777 == 0o600
    password = pgpass.read_text().strip().split(":")[-1]
    assert len(password) == 48
    # Never printed, never on the server's command line, never in its log.
    assert password not in server.started.stdout + server.started.stderr
    pid = int((directory / "mlflow.pid").read_text())
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert password not in (directory / "mlflow.log").read_text()

    def connect(user: str, secret: str | None, database: str = "mlflow"):
        return psycopg2.connect(
            host="127.0.0.1", port=port, user=user, password=secret, dbname=database, connect_timeout=10
        )

    for user, secret, database in [
        ("postgres", None, "postgres"),
        ("postgres", "", "mlflow"),
        ("mlflow", None, "mlflow"),
        ("mlflow", "wrong", "mlflow"),
        ("mlflow", password, "postgres"),
    ]:
        with pytest.raises(psycopg2.OperationalError):
            connect(user, secret, database).close()
    with connect("mlflow", password) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        assert cursor.fetchone() == (False, False, False)
    connection.close()
