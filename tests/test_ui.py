"""`mlflow ui` on a store that a real sweep wrote, looked at in headless Chromium as a person would.

The browser is Debian's /usr/bin/chromium driven by Playwright (scripts/setup_browser.sh installs both;
the fixture below runs it once when either is missing, and skips only when that fails or the browser
cannot start). Everything shares one sweep, one UI server and one browser (module scope); each test opens
its own page. On a failure the page's screenshot is left next to the test's temporary files.
"""

import contextlib
import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import ROOT, mlflow_client

pytestmark = [pytest.mark.slow, pytest.mark.ui]

EXPERIMENT = "ui_test"
STEPS = 30
SWEEP = [
    "task=quadratic",
    "optimizer=sgd,adam",
    "optimizer.lr=0.01,0.1",
    f"trainer.max_steps={STEPS}",
    f"tracking.experiment={EXPERIMENT}",
]
TIMEOUT_MS = 60_000  # one UI step (the SPA's first load, a chart's data) on a busy 2-core machine


def _load_ui_module():
    spec = importlib.util.spec_from_file_location("harness_ui_script", ROOT / "scripts" / "ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ui = _load_ui_module()


@pytest.fixture(scope="module")
def browser_ready():
    """Debian's Chromium and Playwright, installed by the project's setup script when missing."""
    problem = ui.browser_problem()
    if problem:
        setup = subprocess.run(
            ["bash", str(ROOT / "scripts" / "setup_browser.sh"), sys.prefix],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if setup.returncode != 0:
            pytest.skip(f"{problem}; scripts/setup_browser.sh failed: {setup.stderr.strip()[-500:]}")
        importlib.invalidate_caches()
        problem = ui.browser_problem()
        if problem:
            pytest.skip(f"{problem} (after scripts/setup_browser.sh)")


@pytest.fixture(scope="module")
def served_sweep(browser_ready, tmp_path_factory):
    """A real 2x2 sweep (a parent run with 4 children) in a fresh SQLite store, and `mlflow ui` on it.

    The UI starts while the sweep runs (both take 10-40 s, mostly imports); the store is created first,
    by this process, so that the two never race to create its tables. The UI is bound to 127.0.0.1 on
    a free port and always stopped afterwards. (It waits for browser_ready: no sweep when the test skips.)
    """
    tmp = tmp_path_factory.mktemp("ui-sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow_client(uri)
    client.search_experiments()  # creates the database and its tables
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }
    train_log = tmp / "sweep.log"
    with open(train_log, "wb") as out:
        train = subprocess.Popen(
            [sys.executable, "-m", "harness.train", "-m", *SWEEP],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = None
    try:
        server = ui.start_ui(uri, log=tmp / "mlflow-ui.log")
        train.wait(timeout=600)
        assert train.returncode == 0, train_log.read_text()[-3000:]
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], max_results=100)
        [parent] = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 4
        assert parent.info.run_name.startswith("sweep ")
        yield SimpleNamespace(
            url=server.url,
            experiment_id=exp.experiment_id,
            experiment_tags=exp.tags,
            parent=parent,
            children=children,
        )
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
        if server is not None:
            ui.stop_ui(server)
            assert server.poll() is not None
            assert not ui._answers(server.url + "/health"), "mlflow ui still answers after stop_ui"


@pytest.fixture(scope="module")
def browser(browser_ready, tmp_path_factory):
    from playwright.sync_api import Error, expect, sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        try:
            context = ui.launch_browser(p, str(profile))
        except Error as exc:
            pytest.skip(f"headless Chromium did not start: {str(exc).splitlines()[0]}")
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(served_sweep, browser):
    """A new page; the browser starts after the server, and so closes before it stops."""
    page = browser.new_page()
    yield page
    page.close()


@contextlib.contextmanager
def shot_on_failure(page, tmp_path):
    """On a failed check, save what the page showed (path printed in the test's output), then re-raise."""
    try:
        yield
    except Exception:
        shot = tmp_path / "failure.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot))
            print(f"screenshot of the page at the failure: {shot}")
        raise


def test_runs_table_shows_the_experiment_and_the_sweep_with_its_children(page, served_sweep, tmp_path):
    from playwright.sync_api import expect

    ui_, parent, children = served_sweep, served_sweep.parent, served_sweep.children
    with shot_on_failure(page, tmp_path):
        ui.open_runs(page, ui_.url, ui_.experiment_id, parent.info.run_id)
        ui.dismiss_assistant(page)
        # The experiment's name, in the breadcrumb above the runs.
        expect(page.get_by_role("link", name=EXPERIMENT, exact=True).first).to_be_visible()
        # The sweep's parent run, by its full name ("sweep task=quadratic optimizer=sgd,adam ...").
        parent_link = page.locator(f"a[href$='/runs/{parent.info.run_id}']").first
        expect(parent_link).to_be_visible()
        expect(parent_link).to_have_text(parent.info.run_name)
        assert parent_link.inner_text().startswith("sweep ")
        # Nested under it: collapsed at first (the table says 5 runs but shows one row), then expanded,
        # the 4 children in the rows right below it.
        expect(page.get_by_text("5 matching runs")).to_be_visible()
        for child in children:
            expect(page.locator(f"a[href$='/runs/{child.info.run_id}']")).to_have_count(0)
        ui.expand_parent(page, parent.info.run_id, children[0].info.run_id)
        for child in children:
            link = page.locator(f"a[href$='/runs/{child.info.run_id}']").first
            expect(link).to_be_visible()
            expect(link).to_have_text(child.info.run_name)

        def row_index(run):
            return int(ui.parent_row(page, run.info.run_id).first.get_attribute("row-index"))

        assert row_index(parent) == 0
        assert sorted(row_index(c) for c in children) == [1, 2, 3, 4]


def test_child_run_page_shows_its_params(page, served_sweep, tmp_path):
    from playwright.sync_api import expect

    child = next(c for c in served_sweep.children if c.data.params["optimizer.name"] == "adam")
    with shot_on_failure(page, tmp_path):
        page.goto(f"{served_sweep.url}/#/experiments/{served_sweep.experiment_id}/runs/{child.info.run_id}")
        expect(page.get_by_text(child.info.run_name, exact=True).first).to_be_visible()
        ui.dismiss_assistant(page)
        search = page.get_by_placeholder("Search parameters")
        for key in ("optimizer.lr", "optimizer.name"):
            search.fill(key)
            row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first
            row.scroll_into_view_if_needed()
            expect(row).to_be_visible()
            expect(row.get_by_role("cell")).to_have_text([key, child.data.params[key]])


def test_child_run_shows_its_train_loss_chart(page, served_sweep, tmp_path):
    from playwright.sync_api import expect

    child = served_sweep.children[0]
    with shot_on_failure(page, tmp_path):
        card = ui.open_metric_chart(
            page, served_sweep.url, served_sweep.experiment_id, child.info.run_id, "train/loss"
        )
        ui.dismiss_assistant(page)
        card.scroll_into_view_if_needed()
        expect(card).to_be_visible()
        # The legend names the run and the metric; the plot is Plotly's SVG: a marker on each of the
        # STEPS points, and a line through them (drawn twice, raw and smoothed, which coincide at the
        # default smoothing of 0; Plotly drops collinear vertices, so its segments are not counted).
        expect(card).to_contain_text(f"{child.info.run_name} (train/loss)")
        plot = card.locator("svg.main-svg").first
        expect(plot).to_be_visible()
        box = plot.bounding_box()
        assert box["width"] > 100 and box["height"] > 100
        expect(card.locator("g.scatterlayer g.points path.point")).to_have_count(STEPS)
        lines = card.locator("g.scatterlayer path.js-line").all()
        assert lines
        for line in lines:
            path = line.get_attribute("d")
            assert path.startswith("M") and path.count("L") >= 5, path[:200]


def test_the_experiment_opens_in_the_training_view_with_names_that_tell_runs_apart(
    page, served_sweep, tmp_path
):
    from playwright.sync_api import expect

    ui_, parent, children = served_sweep, served_sweep.parent, served_sweep.children
    assert ui_.experiment_tags["mlflow.experimentKind"] == "custom_model_development"
    with shot_on_failure(page, tmp_path):
        ui.open_runs(page, ui_.url, ui_.experiment_id, parent.info.run_id)
        ui.dismiss_assistant(page)
        # The training view's side bar (runs, models, the model registry), not the GenAI one (traces, judges).
        expect(page.get_by_text("Model registry", exact=True).first).to_be_visible()
        expect(page.get_by_text("Judges", exact=True)).to_have_count(0)
        ui.expand_parent(page, parent.info.run_id, children[0].info.run_id)
        shown = []
        for child in children:
            link = page.locator(f"a[href$='/runs/{child.info.run_id}']").first
            expect(link).to_be_visible()
            shown.append(link.inner_text())
        # What differs between the runs (here optimizer and lr) leads each name, within the first 16 characters
        # the table shows; the task comes last.
        leads = {
            f"{c.data.params['optimizer.name']} lr={float(c.data.params['optimizer.lr']):.3g}"
            for c in children
        }
        assert {name.split(" bs=")[0] for name in shown} == leads and max(map(len, leads)) <= 16
        assert all(name.endswith("(quadratic)") for name in shown)


def test_the_parent_runs_description_holds_the_sweeps_answer(page, served_sweep, tmp_path):
    from playwright.sync_api import expect

    ui_, parent = served_sweep, served_sweep.parent
    note = parent.data.tags["mlflow.note.content"]
    winner = parent.data.tags["harness.best_optimizer"]
    headline = note.split("\n")[0]
    assert headline.startswith("**On quadratic, ") and f" {winner} at lr " in headline
    with shot_on_failure(page, tmp_path):
        page.goto(
            f"{ui_.url}/#/experiments/{ui_.experiment_id}/runs/{parent.info.run_id}?{ui.TRAINING_WORKFLOW}"
        )
        ui.dismiss_assistant(page)
        # The run page's Description renders the Markdown (bold headline, then the ranked table): the sentence
        # naming the task and the winner shows as text, without its asterisks.
        first_clause = headline.strip("*").split(";")[0]
        expect(page.get_by_text("Description", exact=True).first).to_be_visible()
        expect(page.get_by_text(first_clause, exact=False).first).to_be_visible()
