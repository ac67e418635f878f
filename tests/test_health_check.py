"""The tracking server's health check with credentials (a local HTTP server that requires basic auth), a busy port
for `scripts/ui.py serve`, and an interrupt raised inside a library callback."""

import base64
import http.server
import socket
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, run_cli

from harness.errors import ConfigError
from harness.tracking import mlflow_store

SECRET = "s3cr:et/x"  # characters a URI must percent-encode
QUOTED = "s3cr%3Aet%2Fx"


class Guarded(http.server.BaseHTTPRequestHandler):
    """/health answers 200 to alice with SECRET (HTTP basic auth), 401 to anyone else."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        expected = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        self.seen.append(f"{self.path} {self.headers.get('Authorization') == expected}")
        ok = self.path == "/health" and self.headers.get("Authorization") == expected
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def guarded():
    Guarded.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Guarded)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_credentials_in_the_uri_go_as_basic_auth_and_never_in_the_url(guarded):
    mlflow_store.check_server(f"http://alice:{QUOTED}@127.0.0.1:{guarded}/")
    assert Guarded.seen == ["/health True"]


def test_credentials_from_mlflows_variables_win_over_the_uri(guarded, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    mlflow_store.check_server(f"http://bob:wrong@127.0.0.1:{guarded}")
    assert Guarded.seen == ["/health True"]


@pytest.mark.parametrize("userinfo", ["", "alice:wrong@"], ids=["none", "wrong"])
def test_refused_credentials_are_one_line_without_the_secret(guarded, userinfo):
    with pytest.raises(ConfigError) as refused:
        mlflow_store.check_server(f"http://{userinfo}127.0.0.1:{guarded}")
    shown = "http://***@" if userinfo else "http://"
    assert str(refused.value) == (
        f"tracking.uri='{shown}127.0.0.1:{guarded}' is not allowed: credentials the tracking server accepts (it "
        "answered HTTP 401 Unauthorized); give them as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
        "MLFLOW_TRACKING_TOKEN)"
    )


def test_a_run_against_a_server_refusing_its_credentials_stops_in_one_line(guarded, tmp_path):
    proc = run_cli(
        "tracking=server", f"tracking.uri=http://alice:wrong-{QUOTED}@127.0.0.1:{guarded}", cwd=tmp_path
    )
    assert proc.returncode == 2
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: tracking.uri=") and "HTTP 401" in line
    assert "wrong" not in proc.stdout + proc.stderr and QUOTED not in proc.stdout + proc.stderr


def test_ui_serve_refuses_a_port_another_process_listens_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "ui.py"), "serve", "--store", f"sqlite:///{tmp_path}/x.db",
             "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is taken by another process: stop it, or choose another port "
        "(python scripts/ui.py serve --port N)"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started, no store created


def test_ui_serve_refuses_a_missing_store_instead_of_creating_one(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ui.py"), "serve", "--store", f"sqlite:///{tmp_path}/x.db",
         "--port", str(port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path}/x.db does not exist: no MLflow store there (run a sweep first)"
    ]
    assert list(tmp_path.iterdir()) == []


CALLBACK = """
import os, signal, time, weakref
from harness import signals
signals.install()
class Thing:
    pass
def callback(_):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        pass  # the handler runs in here, inside the weakref callback, where Python drops exceptions
try:
    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    time.sleep(60)  # the interrupt comes here (or sooner: Python drops nothing)
    print("not interrupted")
except signals.Interrupted as exc:
    print("interrupted", exc.signum)
"""


def test_an_interrupt_raised_inside_a_weakref_callback_is_raised_again_after_it():
    """SQLAlchemy's `_collection_gced` is such a callback: the interrupt must not be dropped ("Exception ignored")
    and the process must not go on as if nothing had happened (ignoring the next signal too)."""
    proc = subprocess.run([sys.executable, "-c", CALLBACK], capture_output=True, text=True, timeout=30)
    assert proc.stdout.splitlines() == ["interrupted 15"]
    assert proc.stderr == ""
