"""Start the MLflow UI on a store, and take screenshots of it in headless Chromium.

    python scripts/ui.py serve --store sqlite:///$PWD/mlruns/mlflow.db [--port 5000]
    python scripts/ui.py screenshot --store URI --experiment NAME [--out docs/mlflow_ui.png]

As a module (tests/test_ui.py): `start_ui(store, port)` returns the running `mlflow ui` process once it
answers HTTP, `stop_ui(proc)` ends it, and `launch_browser(playwright)` starts Debian's Chromium.

`serve` refuses in one line, before starting anything, a port another process listens on (else the health check
would be answered by that process); `serve` and `screenshot` refuse a SQLite store that is missing or at another
schema revision than the installed MLflow's (`mlflow ui` and MlflowClient would create or migrate it without asking).

The browser is Debian's /usr/bin/chromium driven by Playwright (`bash scripts/setup_browser.sh .venv`
installs both). Playwright's own browser download is never used: it cannot work on a closed network.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # not installed yet: browser_problem() says so, and nothing here drives a page
    PlaywrightError = Exception

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Refused(Exception):
    """The UI cannot start as asked; the message is the one line to show."""


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a port another process listens on (bound as uvicorn binds it, SO_REUSEADDR: a closed connection
    lingering in TIME_WAIT does not count).

    Raises:
        Refused: naming the port and what to do.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise Refused(
                f"port {port} on {host} is taken by another process: stop it, or choose another port "
                f"(python scripts/ui.py serve --port N)"
            ) from None


def check_store(store: str) -> None:
    """Refuse a SQLite store that is missing, not sound, or at another schema revision than the installed MLflow's
    (harness.tracking.mlflow_store.check_revision): `mlflow ui` would create, or migrate, it.

    Raises:
        Refused: the one line of the harness's StoreError.
    """
    from harness.errors import StoreError
    from harness.tracking import mlflow_store, sqlite_store
    from harness.tracking.store import sqlite_path

    db = sqlite_path(store)
    if db is None:
        return
    try:
        if not db.is_file():
            raise StoreError(f"{db} does not exist: no MLflow store there (run a sweep first)")
        sqlite_store.check_file(db.resolve(), read_only=True)
        mlflow_store.check_revision(db.resolve())
    except StoreError as exc:
        raise Refused(str(exc)) from None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_ui(
    store: str, port: int | None = None, timeout: float = 120.0, log: Path | None = None, workers: int = 1
) -> subprocess.Popen:
    """Start `mlflow ui` on `store`, bound to 127.0.0.1; return the process once /health (or /) answers.

    The process gets the attribute `url` (http://127.0.0.1:PORT). Its output goes to `log` (a temporary
    file when None), which is shown when it does not come up in `timeout` seconds.

    One worker, and no job runner, unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise: MLflow's
    defaults (4 uvicorn workers plus a job runner and its Huey consumers) start 8 Python processes, which on a
    small busy machine answer late and have uvicorn kill workers that are still importing (BENCHMARKS.md).
    """
    port = port or free_port()
    check_port(port)
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    if log is None:
        fd, name = tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")
        os.close(fd)
        log = Path(name)
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow)] if mlflow.exists() else [sys.executable, "-m", "mlflow"]
    cmd += [
        "ui",
        "--backend-store-uri",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with open(log, "wb") as out:
        # A session of its own: stop_ui ends the server and the workers it forks, and nothing else.
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proc.url = f"http://127.0.0.1:{port}"
    proc.log = log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if _answers(proc.url + "/health") or _answers(proc.url + "/"):
            return proc
        time.sleep(0.5)
    stop_ui(proc)
    raise TimeoutError(
        f"mlflow ui did not answer on {proc.url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
    )


def stop_ui(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the UI server (and its workers), then kill whatever is left after `timeout` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout)
    else:
        _signal_group(proc, signal.SIGKILL)  # workers left behind by a server that already exited


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group start_ui made: the server and its workers, nothing else
    except (ProcessLookupError, PermissionError):
        pass


def browser_problem() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (bash scripts/setup_browser.sh .venv installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (bash scripts/setup_browser.sh .venv installs it)"
    return None


def launch_browser(playwright, user_data_dir: str | None = None):
    """Debian's Chromium, headless, with the flags a closed network needs and a fresh profile.

    Returns a persistent browser context (Playwright passes --user-data-dir only that way); close it when done.
    """
    profile = user_data_dir or tempfile.mkdtemp(prefix="chromium-profile-")
    return playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=VIEWPORT,
    )


def dismiss_assistant(page) -> None:
    """Close the MLflow Assistant side panel when it is open (MLflow 3.17 opens it on a fresh profile)."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    try:
        close.first.click(timeout=3_000)
    except PlaywrightError:
        pass


def parent_row(page, run_id: str):
    """The runs table's row of a run (ag-grid keys its rows by run id)."""
    return page.locator(f".ag-row[row-id='{run_id}']")


def expand_parent(page, parent_run_id: str, child_run_id: str, timeout_ms: float = 30_000) -> None:
    """Show a parent run's children in the runs table.

    MLflow 3 lists child runs under their parent, collapsed: the +/- button in front of the parent's
    name shows them (as rows right below it). A fresh browser profile starts collapsed.
    """
    child = page.locator(f"a[href$='/runs/{child_run_id}']")
    if child.count() == 0:
        row = parent_row(page, parent_run_id).first
        button = row.locator("button[data-component-id*='runnamecellrenderer']")
        (button if button.count() else row.locator("button")).first.click()
    child.first.wait_for(timeout=timeout_ms)


# MLflow 3.17's UI opens every experiment in its GenAI view (traces, judges) unless the URL asks for the training
# view: its GenAI / "Model training" switch is kept per browser and defaults to GenAI, whatever the experiment's
# `mlflow.experimentKind` tag says (the harness sets it all the same: UIs without the switch read it).
TRAINING_WORKFLOW = "workflowType=machine_learning"
TRAINING_VIEW = f"#/experiments?{TRAINING_WORKFLOW}"  # the experiments list, in the training view


def open_runs(
    page,
    url: str,
    experiment_id: str,
    parent_run_id: str,
    chart_view: bool = False,
    timeout_ms: float = 60_000,
) -> None:
    """The experiment's runs page (table, or charts with the runs listed beside them), once the parent
    run's row has rendered."""
    query = f"?{TRAINING_WORKFLOW}" + ("&compareRunsMode=CHART" if chart_view else "")
    page.goto(f"{url}/#/experiments/{experiment_id}/runs{query}", timeout=timeout_ms)
    page.locator(f"a[href$='/runs/{parent_run_id}']").first.wait_for(timeout=timeout_ms)


def filter_charts(page, key: str, timeout_ms: float = 60_000):
    """Type `key` in the charts' search box; return the chart card that plots it, once drawn.

    The card's legend names the metric ("<run name> (train/loss)"); the plot is Plotly's SVG, and its
    line is drawn once the metric's history has arrived.
    """
    box = page.get_by_placeholder("Search metric charts")
    box.wait_for(timeout=timeout_ms)
    box.fill(key)
    card = page.locator("[data-testid='experiment-view-compare-runs-card']").filter(has_text=f"({key})")
    card.first.locator("svg.main-svg path.js-line").first.wait_for(state="attached", timeout=timeout_ms)
    return card.first


def open_metric_chart(page, url: str, experiment_id: str, run_id: str, key: str, timeout_ms: float = 60_000):
    """A run's page, "Model metrics" tab, filtered to the chart of `key`; return that chart card."""
    page.goto(
        f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics?{TRAINING_WORKFLOW}",
        timeout=timeout_ms,
    )
    return filter_charts(page, key, timeout_ms)


def _drag(page, handle, dx: float, dy: float) -> None:
    box = handle.bounding_box(timeout=60_000)
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=15)
    page.mouse.up()


def _best_effort(step, *args) -> None:
    """A cosmetic step of the screenshot: a UI that changed should cost the picture polish, not the picture."""
    try:
        step(*args)
    except PlaywrightError as exc:
        print(f"(screenshot: skipped {step.__name__}: {str(exc).splitlines()[0]})", file=sys.stderr)


def _toggle_sidebar(page) -> None:
    page.get_by_role("button", name="Toggle sidebar").click(timeout=60_000)


def _hide_parent_from_charts(page, parent_run_id: str) -> None:
    # The parent has no metrics of its own; left visible, MLflow 3.17 gives its name to a child's line
    # in the chart legend (the legend and the lines go out of step by one).
    toggle = parent_row(page, parent_run_id).first.locator("label:has(input.is-visibility-toggle-checkbox)")
    toggle.first.click(timeout=60_000)


def _hide_diverged_from_charts(page, run_ids: list[str]) -> None:
    # A diverged run's last training losses (1e5 and more) would flatten every other line on the chart's linear axis.
    for run_id in run_ids:
        row = parent_row(page, run_id)
        if row.count():
            toggle = row.first.locator("label:has(input.is-visibility-toggle-checkbox)")
            if toggle.first.locator("input").is_checked():
                toggle.first.click(timeout=60_000)


def _widen_runs_list(page) -> None:
    _drag(page, page.locator("div[handleaxis='e']").first, 170, 0)


def _enlarge_card(page, card) -> None:
    # The handle is a sibling of the card, in the resizable box around it.
    box = page.locator(".react-resizable", has=card).last
    _drag(page, box.locator("[data-testid='draggable-card-resize-handle']").first, 900, 140)


def screenshot(
    store: str,
    experiment: str,
    out: Path,
    chart_out: Path | None = None,
    port: int | None = None,
    metric: str = "train/loss",
    parent_out: Path | None = None,
) -> None:
    """Serve `store` and save `out`: the experiment's runs with the latest sweep's parent expanded to its
    children, beside their `metric` chart. With `chart_out`, also a child run's own `metric` chart."""
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {store}")
    runs = client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    if not parents:
        raise SystemExit(f"experiment {experiment!r} has no sweep (no run tagged harness.role=sweep)")
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    if not children:
        raise SystemExit(f"sweep run {parent.info.run_id} has no child runs")

    t0 = time.monotonic()

    def step(what: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {what}", file=sys.stderr, flush=True)

    proc = start_ui(store, port)
    step(f"mlflow ui answers on {proc.url}")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as p:
            context = launch_browser(p, profile)
            try:
                page = context.new_page()
                open_runs(page, proc.url, exp.experiment_id, parent.info.run_id, chart_view=True)
                step("runs page rendered")
                dismiss_assistant(page)
                _best_effort(_toggle_sidebar, page)
                expand_parent(page, parent.info.run_id, children[0].info.run_id)
                step("sweep expanded")
                _best_effort(_hide_parent_from_charts, page, parent.info.run_id)
                diverged = [
                    r.info.run_id for r in children if r.data.tags.get("harness.status") == "diverged"
                ]
                _best_effort(_hide_diverged_from_charts, page, diverged)
                _best_effort(_widen_runs_list, page)
                card = filter_charts(page, metric)
                step(f"{metric} chart drawn")
                _best_effort(_enlarge_card, page, card)
                page.mouse.move(0, 0)
                page.wait_for_timeout(1500)  # Plotly redraws after a resize
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                step(f"wrote {out}")
                if parent_out:
                    # The parent run's page: its description is the sweep's answer and ranked table (Markdown).
                    page.goto(
                        f"{proc.url}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?{TRAINING_WORKFLOW}"
                    )
                    page.get_by_text(parent.info.run_name, exact=True).first.wait_for(timeout=60_000)
                    dismiss_assistant(page)
                    page.mouse.move(0, 0)
                    page.wait_for_timeout(1500)
                    parent_out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(parent_out))
                    step(f"wrote {parent_out}")
                if chart_out:
                    child = min(children, key=lambda r: r.info.run_name or "")
                    open_metric_chart(page, proc.url, exp.experiment_id, child.info.run_id, metric)
                    dismiss_assistant(page)
                    page.mouse.move(0, 0)
                    page.wait_for_timeout(1500)
                    chart_out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(chart_out))
                    step(f"wrote {chart_out}")
            finally:
                context.close()
    finally:
        stop_ui(proc)
        shutil.rmtree(profile, ignore_errors=True)


def serve(proc: subprocess.Popen) -> int:
    """Keep the started UI running until Ctrl-C or SIGTERM (0), or until it exits by itself (1: its log says why)."""
    print(
        f"MLflow UI on {proc.url}/{TRAINING_VIEW} (Ctrl-C stops it; its log: {proc.log})",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` too stops the server it started
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_ui(proc)
    print(f"error: mlflow ui exited with {code}; its log: {proc.log}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run `mlflow ui` on the store until interrupted")
    serve.add_argument("--store", required=True, help="backend store URI, e.g. sqlite:////abs/path/mlflow.db")
    serve.add_argument("--port", type=int, default=5000)
    shot = sub.add_parser("screenshot", help="save PNG screenshots of an experiment in the UI")
    shot.add_argument("--store", required=True)
    shot.add_argument("--experiment", required=True)
    shot.add_argument("--out", type=Path, default=Path("docs/mlflow_ui.png"))
    shot.add_argument("--chart-out", type=Path, default=None, help="also a child run's own chart of --metric")
    shot.add_argument("--metric", default="train/loss")
    shot.add_argument("--parent-out", type=Path, default=None, help="also the sweep's parent run page")
    shot.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "serve":
        try:
            check_port(args.port)
            check_store(args.store)
            proc = start_ui(args.store, args.port)
        except Refused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return serve(proc)
    problem = browser_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        check_store(args.store)  # MlflowClient and mlflow ui would migrate a store at another revision
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    screenshot(args.store, args.experiment, args.out, args.chart_out, args.port, args.metric, args.parent_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
