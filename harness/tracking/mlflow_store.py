"""The MLflow adapter of the tracking port: MlflowClient, for any URI MLflow tracks to (SQLite, servers, databases).

Also where a store is made ready before MLflow touches it:
- a new SQLite store is built by MLflow's migrations under a temporary name beside it and renamed into place once
  complete (`create_sqlite`: under the store lock, SIGINT/SIGTERM held until it is done), so that an interrupted
  creation leaves no store or a whole one, and concurrent launches never race in the migrations;
- an existing SQLite store at another schema revision than the installed MLflow's is refused in one line before
  MLflow opens it (MLflow would migrate it without asking, or refuse it with a traceback);
- a tracking server is asked whether it answers (`check_server`), with the credentials MLflow's client would send.
"""

import base64
import functools
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness import failures, signals
from harness.errors import ConfigError, StoreError, located
from harness.tracking import locks, schema, sqlite_store, store
from harness.tracking.port import (
    HISTORY_COLUMNS,
    Experiment,
    NewRun,
    RunData,
    RunInfo,
    RunUpdate,
    Store,
    StoredRun,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

PAGE = 1000  # MLflow's search_runs page size limit
MAX_METRICS_PER_BATCH = 1000  # MLflow's limits for one log_batch call
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
CLIENT_THREADS = (
    8  # concurrent get_metric_history requests against a server: each mostly waits on the network
)


class MlflowStore(Store):
    """The port through MlflowClient."""

    adapter = "mlflow"

    def __init__(self, uri: str, location: str, client: "MlflowClient", read_only: bool = False):
        super().__init__(uri, location)
        self.client = client
        self.remote = store.is_remote(uri)
        self.read_only = read_only

    @classmethod
    def open(cls, uri: str, create: bool = True, read_only: bool = False) -> "MlflowStore":
        db = store.sqlite_path(uri)
        if db is not None:
            db = db.resolve()
            client = _sqlite_client(uri, str(db), create and not read_only, read_only)
            return cls(uri, str(db), client, read_only)
        if store.is_remote(uri):
            # MLflow retries a dead server with exponential backoff for minutes; a few seconds tell us enough.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            check_server(uri)
        from mlflow import MlflowClient

        location = store.redact(uri)
        with located(location):  # a database URI: MLflow connects (and imports the driver) here
            client = MlflowClient(tracking_uri=uri)
        return cls(uri, location, client)

    def close(self) -> None:
        """A SQLite store: MLflow's connections closed (its engine disposed) and, written to, checkpointed: the
        database file alone then holds every run (sqlite_store.checkpoint)."""
        db = store.sqlite_path(self.uri)
        if db is None:
            return
        engine = getattr(self.client._tracking_client.store, "engine", None)
        if engine is not None:
            engine.dispose()
        if not self.read_only:
            sqlite_store.checkpoint(Path(self.location))

    # experiments
    def experiment(self, name: str) -> Experiment | None:
        with located(self.location):
            found = self.client.get_experiment_by_name(name)
        if found is None or found.lifecycle_stage != "active":
            return None
        return Experiment(found.experiment_id, found.name, found.artifact_location)

    def experiment_names(self) -> list[str]:
        with located(self.location):
            return sorted(e.name for e in self.client.search_experiments())

    def _ensure_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        with located(self.location):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    self.client.restore_experiment(experiment.experiment_id)
                return experiment.experiment_id
            try:
                return self.client.create_experiment(
                    name, artifact_location=store.experiment_location(self.uri, name)
                )
            except MlflowException:
                experiment = self.client.get_experiment_by_name(name)  # created concurrently: use theirs
                if experiment is None:
                    raise
                return experiment.experiment_id

    def _add_experiment_tags(self, experiment_id: str, tags: dict[str, str]) -> None:
        with located(self.location):
            present = self.client.get_experiment(experiment_id).tags
            for key, value in tags.items():
                if key not in present:
                    self.client.set_experiment_tag(experiment_id, key, value)

    # runs
    def _create_runs(self, experiment_id: str, runs: Sequence[NewRun], start_time: int) -> list[RunInfo]:
        from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunStatus

        infos: list[RunInfo] = []
        with located(self.location):
            try:
                for run in runs:
                    created = self.client.create_run(
                        experiment_id, start_time=start_time, tags=run.tags, run_name=run.name
                    ).info
                    infos.append(_info(created))
                    params = [Param(k, v) for k, v in run.params.items()]
                    for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
                        self.client.log_batch(
                            created.run_id, params=params[start : start + MAX_PARAMS_PER_BATCH]
                        )
                    datasets = [
                        DatasetInput(
                            Dataset(d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source,
                                    schema=d.dataset.schema, profile=d.dataset.profile),
                            [InputTag(t.key, t.value) for t in d.tags],
                        )
                        for d in run.datasets
                    ]  # fmt: skip
                    if datasets:
                        self.client.log_inputs(created.run_id, datasets=datasets)
            except Exception:
                for info in infos:  # all or none: what was created ends FAILED
                    self.client.set_terminated(info.run_id, RunStatus.to_string(RunStatus.FAILED))
                raise
        return infos

    def _write(self, updates: Sequence[RunUpdate]) -> None:
        from mlflow.entities import Metric, RunTag

        with located(self.location):
            for update in updates:
                metrics = [Metric(k, v, t, s) for chunk in update.metrics for k, v, t, s in chunk.rows()]
                for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                    self.client.log_batch(
                        update.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH]
                    )
                tags = [RunTag(k, v) for k, v in update.tags.items()]
                for start in range(0, len(tags), MAX_TAGS_PER_BATCH):
                    self.client.log_batch(update.run_id, tags=tags[start : start + MAX_TAGS_PER_BATCH])
                if update.status == schema.RUNNING:
                    self.client.update_run(update.run_id, status=update.status)
                elif update.status is not None:
                    self.client.set_terminated(update.run_id, update.status, end_time=update.end_time)

    # reading
    def run(self, run_id: str) -> StoredRun | None:
        from mlflow.exceptions import MlflowException

        try:
            with located(self.location):
                return _stored(self.client.get_run(run_id))
        except MlflowException:
            return None

    def find_parent(self, experiment_id: str, sweep_key: str) -> StoredRun | None:
        return self._first(
            experiment_id,
            f"tags.`{schema.ROLE}` = '{schema.ROLE_SWEEP}' and tags.`{schema.SWEEP_KEY}` = '{sweep_key}'",
        )

    def latest_parent(self, experiment_id: str) -> StoredRun | None:
        return self._first(experiment_id, f"tags.`{schema.ROLE}` = '{schema.ROLE_SWEEP}'")

    def _first(self, experiment_id: str, filter_string: str) -> StoredRun | None:
        with located(self.location):
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=filter_string,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        return _stored(runs[0]) if runs else None

    def children(self, experiment_id: str, parent_run_id: str) -> list[StoredRun]:
        runs, token = [], None
        with located(self.location):
            while True:  # paged: sweeps can hold thousands
                page = self.client.search_runs(
                    [experiment_id],
                    filter_string=f"tags.`{schema.PARENT_RUN_ID}` = '{parent_run_id}'",
                    order_by=["attributes.start_time ASC"],
                    max_results=PAGE,
                    page_token=token,
                )
                runs.extend(_stored(r) for r in page)
                token = page.token
                if not token:
                    return runs

    def histories(
        self, run_ids: Sequence[str], keys: Sequence[str], step: int | None = None
    ) -> "pd.DataFrame":
        """get_metric_history per run and key, in parallel threads."""
        from concurrent.futures import ThreadPoolExecutor

        import pandas as pd

        def history(job: tuple[str, str]) -> list[tuple]:
            run_id, key = job
            points = self.client.get_metric_history(run_id, key)
            return [(run_id, key, m.step, m.value) for m in points if step is None or m.step == step]

        jobs = [(run_id, key) for run_id in run_ids for key in keys]
        with located(self.location), ThreadPoolExecutor(CLIENT_THREADS) as pool:
            rows = [row for part in pool.map(history, jobs) for row in part]
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _info(info) -> RunInfo:
    return RunInfo(
        info.run_id, info.run_name, info.status, info.start_time, info.end_time, str(info.experiment_id),
        info.artifact_uri, info.user_id or "", info.lifecycle_stage,
    )  # fmt: skip


def _stored(run) -> StoredRun:
    return StoredRun(
        _info(run.info), RunData(dict(run.data.params), dict(run.data.tags), dict(run.data.metrics))
    )


@functools.cache
def _sqlite_client(uri: str, db: str, create: bool, read_only: bool) -> "MlflowClient":
    """MlflowClient on the SQLite file `db`, once per process (jobs share it): created first when missing (`create`),
    refused when it is not a sound store at the installed MLflow's schema revision."""
    from mlflow import MlflowClient

    _quiet_mlflow()
    path = Path(db)
    if not path.is_file():
        if read_only or not create:
            raise StoreError(f"{path} does not exist: no MLflow store there (nothing created)", str(path))
        create_sqlite(uri, path)
    if read_only:
        sqlite_store.check_file(path, read_only=True)
        check_revision(path)
        sqlite_store.mark_connected(path)
        return MlflowClient(tracking_uri=uri)
    sqlite_store.check_writable(path)
    with locks.store_lock(path), located(str(path)):
        sqlite_store.check_file(path)
        check_revision(path)
        client = MlflowClient(tracking_uri=uri)
        client._tracking_client.store  # noqa: B018 - connects inside the lock (the revision is the installed one)
        sqlite_store.mark_connected(path)
        sqlite_store.write_ahead_log(path)
    return client


def _quiet_mlflow() -> None:
    if not failures.debug():
        # MLflow logs every database error with its traceback before raising it; the harness says it in one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def create_sqlite(uri: str, db: Path) -> None:
    """Create a new SQLite store at `db` unless one exists there.

    MLflow's migrations build it under a temporary name beside `db` (sqlite_store.building_path), and it is renamed
    into place once complete; all of it under the store lock (concurrent launches never race in the migrations),
    with SIGINT/SIGTERM held until it is done (raised afterwards, the store whole). Whatever stops the process
    meanwhile, `db` is then absent or a whole store; a build a killed process left is removed by the next creator.

    Raises:
        StoreError: the directory cannot be created or written.
    """
    db = Path(os.path.abspath(db))
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store's directory {db.parent}: {exc.strerror}", str(db)) from exc
    sqlite_store.check_writable(db)
    _quiet_mlflow()
    with locks.store_lock(db), signals.held(), located(str(db)):
        if db.exists():  # made by another process while this one waited for the lock
            return
        building = sqlite_store.building_path(db)
        sqlite_store.remove_database(building)
        try:
            _migrate(building, store.artifact_root(f"sqlite:///{db}"))
            sqlite_store.install_new(building, db)
        except Exception:
            sqlite_store.remove_database(building)  # a failed build (a full disk, say) is not left behind
            raise


def _migrate(building: Path, artifact_root: str) -> None:
    """MLflow's migrations (and its Default experiment) on a new file, every connection closed afterwards."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{building}"
    try:
        SqlAlchemyStore(uri, Path(artifact_root).as_uri())
    finally:
        engine = SqlAlchemyStore._engine_map.pop(uri, None)  # MLflow keeps one engine per URI for the process
        if engine is not None:
            engine.dispose()


@functools.cache
def installed_schema() -> tuple[str, frozenset[str], frozenset[str], str]:
    """What the installed MLflow expects of a SQLite store: (head revision, every revision its migrations know, the
    tables of its models, its version)."""
    import mlflow
    from alembic.script import ScriptDirectory
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    scripts = ScriptDirectory.from_config(_get_alembic_config(""))
    known = frozenset(revision.revision for revision in scripts.walk_revisions())
    # What MLflow checks before it migrates (db.utils._all_tables_exist; importing db.utils registers every model).
    tables = frozenset(Base.metadata.tables)
    return _get_latest_schema_revision(), known, tables, mlflow.__version__


def check_revision(db: Path) -> None:
    """Refuse (one line, nothing written) an existing SQLite store at another revision than the installed MLflow's.

    Raises:
        StoreError: see sqlite_store.check_revision.
    """
    sqlite_store.check_revision(db, *installed_schema())


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when no tracking server answers at `uri` or it refuses the credentials.

    The credentials go as MLflow's client sends them: MLFLOW_TRACKING_USERNAME/PASSWORD (else the URI's
    `user:password@`) as HTTP basic auth, else MLFLOW_TRACKING_TOKEN as a bearer token. They are never printed.

    Raises:
        ConfigError: naming the URI with its credentials redacted.
    """
    url, headers = health_request(uri)
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (401, 403):
            allowed = (
                f"credentials the tracking server accepts (it answered HTTP {exc.code} {exc.reason}); give them as "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            )
        else:
            allowed = f"a running MLflow tracking server (/health answered HTTP {exc.code} {exc.reason})"
        raise ConfigError("tracking.uri", store.redact(uri), allowed) from None
    except (OSError, ValueError) as exc:
        reason = store.redact(str(getattr(exc, "reason", exc)))
        raise ConfigError(
            "tracking.uri",
            store.redact(uri),
            f"a running MLflow tracking server (none answered: {reason}; `make server` starts one)",
        ) from None


def health_request(uri: str) -> tuple[str, dict[str, str]]:
    """The server's /health URL without credentials, and the Authorization header MLflow's client would send."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    path = parts.path.rstrip("/")
    url = urllib.parse.urlunsplit((parts.scheme, host, f"{path}/health", "", ""))
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or urllib.parse.unquote(parts.username or "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or urllib.parse.unquote(parts.password or "")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if username and password:
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        return url, {"Authorization": f"Basic {basic}"}
    if token:
        return url, {"Authorization": f"Bearer {token}"}
    return url, {}
