"""The report's one-line errors hold no credentials: a server that answers its health check, then refuses the report's
requests (MLflow's own exception, through its client)."""

import http.server
import threading

import pytest

from harness.report import cli

SECRET = "s3cret-Report"


class Refusing(http.server.BaseHTTPRequestHandler):
    """/health answers 200; every MLflow API request 403 (MLflow does not retry that code)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/health" else 403)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else b'{"error_code": "PERMISSION_DENIED"}')

    do_POST = do_GET  # noqa: N815 - http.server's name

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://alice:{SECRET}@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_mlflow_error_of_the_report_is_one_line_without_the_password(
    refusing, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DEBUG", "0")  # 0: not debug mode (the line, no traceback)
    assert cli.main(["--experiment", "x", "--tracking-uri", refusing]) == 1
    out, err = capsys.readouterr()
    port = refusing.rsplit(":", 1)[1]
    assert out == "" and err == (
        f"error: MLflow store http://***@127.0.0.1:{port}: PERMISSION_DENIED: Response: "
        "{'error_code': 'PERMISSION_DENIED'}\n"
    )
