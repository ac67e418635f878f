"""Tracking URIs as users type them: a relative SQLite path is the launch directory's file, a SQLite file is the path
SQLAlchemy opens (no query in its name), and what names no usable store is refused in one line, redacted."""

import os
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.tracking import store


@pytest.mark.parametrize(
    "typed,resolved",
    [
        ("sqlite:///rel.db", "sqlite:////launch/rel.db"),
        ("sqlite:///mlflow.db", "sqlite:////launch/mlflow.db"),  # MLflow's documented form
        ("sqlite:///sub/../m.db", "sqlite:////launch/sub/../m.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///rel.db?password=p", "sqlite:////launch/rel.db?password=p"),  # refused by check_uri
        ("http://u:p@h:5000", "http://u:p@h:5000"),
        ("postgresql://u:p/w@h/db", "postgresql://u:p/w@h/db"),
    ],
)
def test_a_relative_sqlite_path_is_made_absolute_against_the_launch_directory(typed, resolved, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert store.resolve_uri(typed, "/launch") == resolved
    monkeypatch.setenv("MLFLOW_TRACKING_URI", typed)
    assert store.resolve_uri(None, "/launch") == resolved


def test_the_sqlite_file_is_the_one_sqlalchemy_opens(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store.sqlite_path("sqlite:////abs/x.db?user=u&password=p") == Path("/abs/x.db")
    assert store.sqlite_path("sqlite:///rel.db") == tmp_path / "rel.db"  # a report's --tracking-uri: its cwd
    assert store.sqlite_path("sqlite:///a%20b.db#1") == tmp_path / "a b.db#1"
    assert [store.sqlite_path(u) for u in ("sqlite://", "sqlite:///:memory:", "http://h/x.db")] == [None] * 3
    odd = tmp_path / "a%41?b"  # SQLAlchemy decodes %41 and ends the path at ?: the URI escapes both
    assert store.sqlite_path(store.default_uri(odd)) == odd / "mlruns" / "mlflow.db"
    assert store.sqlite_path(store.resolve_uri("sqlite:///x.db", odd)) == odd / "x.db"
    from sqlalchemy.engine import make_url

    assert make_url(store.default_uri(odd)).database == str(odd / "mlruns" / "mlflow.db")


REFUSED = [
    (
        "sqlite:////s/x.db?user=bob&password=hunter2",
        "MLFLOW_TRACKING_URI='sqlite:////s/x.db?user=bob&password=***' is not allowed: a SQLite URI without a "
        "query (this one sets password, user): a SQLite file has no users or passwords, and the harness opens it "
        "with its own options: sqlite:////s/x.db",
    ),
    (
        "sqlite://bob:hunter2@/x.db",
        "MLFLOW_TRACKING_URI='sqlite://***@/x.db' is not allowed: sqlite:///<path relative to the launch "
        "directory> or sqlite:////<absolute path>: a SQLite file has no host, user or password",
    ),
    ("sqlite://", "MLFLOW_TRACKING_URI='sqlite://' is not allowed: a database file (sqlite:///<path>)"),
    ("sqlite:///:memory:", "MLFLOW_TRACKING_URI='sqlite:///:memory:' is not allowed: a database file"),
    ("file:///tmp/mlruns", "MLFLOW_TRACKING_URI='file:///tmp/mlruns' is not allowed: a database or a server"),
]


@pytest.mark.parametrize("uri,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_uri_that_names_no_usable_store_is_refused_in_one_line_redacted(
    uri, message, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError) as refused:
        store.check_uri(store.resolve_uri(None, tmp_path))
    assert str(refused.value).startswith(message) and "hunter2" not in str(refused.value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="^tracking.uri="):  # the key the user set
        store.check_uri(store.resolve_uri(uri, tmp_path))
    assert os.listdir(tmp_path) == []  # nothing created


def test_a_database_uri_whose_driver_is_missing_is_one_line_without_the_password():
    from harness.errors import StoreError
    from harness.tracking import stores

    with pytest.raises(StoreError) as caught:
        stores.open_store("mssql+pyodbc://someone:s3cret@127.0.0.1:1/db", adapter="mlflow")
    message = str(caught.value)
    assert "'pyodbc'" in message and "pip install pyodbc" in message and "s3cret" not in message
    assert "\n" not in message
