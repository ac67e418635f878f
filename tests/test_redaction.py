"""Credentials never leave the harness: redaction reads a URI's userinfo as every parser that will use it does, and
leaves alone what holds none; the harness's errors are redacted when they are made."""

import pickle

import pytest

from harness.errors import ConfigError, StoreError, located, location_of
from harness.redaction import redact

HOSTILE = [
    # (text, redacted); "leaked": the regex redact of before printed a secret
    ("postgresql://u:p/w@h/db", "postgresql://***@h/db"),  # leaked; SQLAlchemy connects as u, password p/w
    ("postgresql://u:p?w@h/db", "postgresql://***@h/db"),
    ("postgresql://u:p#w@h/db", "postgresql://***@h/db"),
    ("postgresql://u:p/x@y@h/db", "postgresql://***@h/db"),  # leaked
    ("postgresql://u:1234/5@h/db", "postgresql://***@h/db"),  # leaked
    (  # leaked
        "https://s3/x?X-Amz-Signature=abc&X-Amz-Credential=k%2Fz&ok=1",
        "https://s3/x?X-Amz-Signature=***&X-Amz-Credential=***&ok=1",
    ),
    ("http://user:secret@127.0.0.1:1/", "http://***@127.0.0.1:1/"),
    (
        "tracking.uri=https://alice:p@ss@mlflow.example.com/x seed=1",
        "tracking.uri=https://***@mlflow.example.com/x seed=1",
    ),
    (
        "tracking.uri=http\\://user\\:secret@h\\:5000/",
        "tracking.uri=http\\://***@h\\:5000/",
    ),  # Hydra's escapes
    ("postgresql://mlflow:pw@127.0.0.1:5433/mlflow", "postgresql://***@127.0.0.1:5433/mlflow"),
    ("mysql+pymysql://u:p%40ss%2F@h:3306/db", "mysql+pymysql://***@h:3306/db"),
    ("redis://:pw@h", "redis://***@h"),
    ("git+ssh://git@github.com/o/r", "git+ssh://***@github.com/o/r"),
    ("sqlite:////abs/x.db?user=bob&PassWord=hunter2", "sqlite:////abs/x.db?user=bob&PassWord=***"),
    ("https://h/api?token=abc&x=1", "https://h/api?token=***&x=1"),
    ("https://h/?api_key=a;access_token=b#top", "https://h/?api_key=***;access_token=***#top"),
    ("['tracking.uri=http://u:p@h', 'seed=1']", "['tracking.uri=http://***@h', 'seed=1']"),
    (  # leaked: a quote in the password (repr quotes it with ")
        'tracking.uri="postgresql://u:p\'q@h/db" is not allowed',
        'tracking.uri="postgresql://***@h/db" is not allowed',
    ),
    ("a=http://u:p@h,http://v:q@h2/", "a=http://***@h,http://***@h2/"),  # a sweep over two URIs
    ("error (http://u:p@h): refused; see sql://a:b@c", "error (http://***@h): refused; see sql://***@c"),
]
INTACT = [
    "sqlite:////tmp/store/mlflow.db",
    "sqlite:///rel.db",
    "http://host:5000",
    "http://host:5000/#/experiments/1/runs/abc",
    "https://h:5000/users/a@b",
    "https://medium.com/@user/post",
    "http://[::1]:5000/x",
    "user@example.com wrote lr=0.1",
    "mailto:user@example.com",
    "/home/me/mlruns/mlflow.db",
    "optimizer=adam seed=1 trainer.max_steps=3",
    "postgresql://h:5432/db",
    "",
]


@pytest.mark.parametrize("text,expected", HOSTILE)
def test_every_userinfo_and_secret_query_value_is_redacted(text, expected):
    assert redact(text) == expected
    assert redact(expected) == expected  # redacting twice changes nothing (saved URIs are compared redacted)


@pytest.mark.parametrize("text", INTACT)
def test_text_without_credentials_stays_as_it_is(text):
    assert redact(text) == text


def test_errors_are_redacted_when_made_and_stay_so_pickled():
    config = ConfigError("tracking.uri", "postgresql://u:p/w@h/db", "a server (none at http://a:b@h)")
    assert (
        str(config) == "tracking.uri='postgresql://***@h/db' is not allowed: a server (none at http://***@h)"
    )
    assert str(pickle.loads(pickle.dumps(config))) == str(config)  # a joblib worker hands it back
    store = StoreError("cannot write to mysql://u:p/w@h/db", "mysql://u:p/w@h/db")
    assert (str(store), store.store_location) == ("cannot write to mysql://***@h/db", "mysql://***@h/db")
    with pytest.raises(OSError) as raised, located("http://u:p@h:5000"):
        raise OSError("disk full")
    assert location_of(raised.value) == "http://***@h:5000"
