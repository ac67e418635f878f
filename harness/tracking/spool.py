"""What could not reach the tracking server, kept on local disk until `python -m harness.sync <file>` uploads it.

A spool file is JSON lines: a header naming the run and the tracking URI (credentials redacted: a file the harness
writes holds no secret), then records in the order they happened:
`{"metrics": [[key, value, timestamp_ms, step], ...]}`, `{"text": {"artifact_file": ..., "text": ...}}`,
`{"tags": {...}}`, and last `{"end": {"status": ..., "end_time": ...}}`.

A spool file is input like any other: `read` checks every line (types, keys, statuses) before anything is uploaded,
and refuses the whole file at the first bad line, naming it. A spool holds one run's history in order; replaying
the part before a bad line (metrics without the end, or an end without its tags) would leave the run in a state
it never was in, and the file is kept as it is to be looked at.
"""

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.redaction import redact
from harness.tracking import schema

RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_INT64 = 2**63 - 1  # MLflow's steps and timestamps are 64-bit integers
MAX_KEY_LENGTH = 250  # MLflow's limit for metric and tag keys
END_STATUSES = (schema.FINISHED, schema.FAILED, schema.KILLED)  # a spool ends a run; it never sets it RUNNING
# Tags that say where a run belongs and which grid point it is: set when the run is created, never by a spool (a
# crafted one would move a run under another sweep, or make a resume skip a point).
PROTECTED_TAGS = (schema.PARENT_RUN_ID, schema.ROLE, schema.CONFIG_HASH, schema.SWEEP_KEY)
HEADER_KEYS = ("run_id", "tracking_uri", "reason")


class Spool:
    """Append-only, thread-safe (the metric writer thread and the training thread both write)."""

    def __init__(self, path: Path, run_id: str, tracking_uri: str, reason: str):
        self.path = path
        self._lock = threading.Lock()
        self.records = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._append({"run_id": run_id, "tracking_uri": redact(tracking_uri), "reason": redact(reason)})

    def metrics(self, rows: Sequence[tuple[str, float, int, int]]) -> None:
        self._append({"metrics": [list(row) for row in rows]})

    def text(self, text: str, artifact_file: str) -> None:
        self._append({"text": {"artifact_file": artifact_file, "text": text}})

    def tags(self, tags: Mapping[str, str]) -> None:
        self._append({"tags": dict(tags)})

    def end(self, status: str, end_time: int) -> None:
        self._append({"end": {"status": status, "end_time": end_time}})

    def _append(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=True) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)
            self.records += 1


# --- Reading: every record checked ----------------------------------------------------------------------------------


class SpoolError(ValueError):
    """A spool file that is not what the harness writes: the message names the line and what is wrong."""


@dataclass(frozen=True)
class Header:
    run_id: str
    tracking_uri: str
    reason: str = ""


@dataclass(frozen=True)
class Metrics:
    rows: list[tuple[str, float, int, int]]  # (key, value, timestamp_ms, step)


@dataclass(frozen=True)
class Text:
    artifact_file: str  # relative, inside the run's artifacts
    text: str


@dataclass(frozen=True)
class Tags:
    tags: dict[str, str]


@dataclass(frozen=True)
class End:
    status: str  # one of END_STATUSES
    end_time: int


Record = Metrics | Text | Tags | End


def read(path: Path) -> tuple[Header, list[Record]]:
    """The header and the records of a spool file, each checked.

    Raises:
        SpoolError: the file is not UTF-8 JSON lines, or a line is not a record this harness writes (the message
            names the line).
        OSError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpoolError(f"not a harness spool file (not UTF-8 text: byte {exc.start})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise SpoolError("not a harness spool file (empty)")
    header = _header(*lines[0])
    records = [_record(number, _json(number, line)) for number, line in lines[1:]]
    ends = [number for (number, _), record in zip(lines[1:], records) if isinstance(record, End)]
    if ends and ends[0] != lines[-1][0]:
        raise SpoolError(f"line {ends[0]}: the end of the run is not the last record (nothing follows it)")
    return header, records


def _json(number: int, line: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SpoolError(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
    # an integer of thousands of digits (ValueError), arrays nested thousands deep (RecursionError)
    except (ValueError, RecursionError) as exc:
        raise SpoolError(f"line {number}: not JSON this harness writes ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise SpoolError(f"line {number}: not a JSON object")
    return value


def _header(number: int, line: str) -> Header:
    value = _json(number, line)
    if "run_id" not in value:
        raise SpoolError(f"line {number}: not a harness spool file (no header with a run_id)")
    _keys(number, "the header", value, required=HEADER_KEYS[:2], allowed=HEADER_KEYS)
    run_id, uri, reason = value["run_id"], value["tracking_uri"], value.get("reason", "")
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise SpoolError(
            f"line {number}: the header's run id {run_id!r} is not an MLflow run id (32 hex digits)"
        )
    if not isinstance(uri, str) or not isinstance(reason, str):
        raise SpoolError(f"line {number}: the header's tracking_uri and reason are not strings")
    return Header(run_id, uri, reason)


def _record(number: int, value: dict) -> Record:
    if len(value) != 1:
        raise SpoolError(
            f"line {number}: a record has exactly one of metrics, text, tags, end (got {sorted(value)})"
        )
    [(kind, body)] = value.items()
    reader = _READERS.get(kind)
    if reader is None:
        if kind == "params":
            raise SpoolError(
                f"line {number}: params are given when a run is created; a spool of this harness holds none"
            )
        raise SpoolError(f"line {number}: unknown record {kind!r} (metrics, text, tags or end)")
    return reader(number, body)


def _metrics(number: int, body: object) -> Metrics:
    if not isinstance(body, list):
        raise SpoolError(f"line {number}: metrics are a list of [key, value, timestamp_ms, step]")
    rows = []
    for row in body:
        if not (isinstance(row, list) and len(row) == 4):
            raise SpoolError(f"line {number}: a metric {_short(row)} is not [key, value, timestamp_ms, step]")
        key, value, timestamp, step = row
        if not _is_key(key) or not _is_number(value) or not _is_count(timestamp) or not _is_count(step):
            raise SpoolError(
                f"line {number}: a metric {_short(row)} is not [key, number, timestamp_ms, step] with a key of 1 to "
                f"{MAX_KEY_LENGTH} characters and timestamp and step integers in [0, 2**63 - 1]"
            )
        rows.append((key, float(value), timestamp, step))
    return Metrics(rows)


def _text(number: int, body: object) -> Text:
    _keys(number, "a text record", body, required=("artifact_file", "text"))
    name, text = body["artifact_file"], body["text"]
    if not isinstance(text, str) or not _is_artifact_file(name):
        raise SpoolError(
            f"line {number}: a text record's artifact_file {_short(name)} is not a relative path inside the run's "
            "artifacts, or its text is not a string"
        )
    return Text(name, text)


def _tags(number: int, body: object) -> Tags:
    if not isinstance(body, dict) or not all(_is_key(k) and isinstance(v, str) for k, v in body.items()):
        raise SpoolError(
            f"line {number}: tags are an object of string keys (1 to {MAX_KEY_LENGTH} characters) to strings"
        )
    protected = sorted(set(body) & set(PROTECTED_TAGS))
    if protected:
        raise SpoolError(
            f"line {number}: a spool may not set {', '.join(protected)} (set when the run was created: where it "
            "belongs and which grid point it is)"
        )
    return Tags(dict(body))


def _end(number: int, body: object) -> End:
    _keys(number, "the end record", body, required=("status", "end_time"))
    status, end_time = body["status"], body["end_time"]
    if status not in END_STATUSES:
        raise SpoolError(
            f"line {number}: the run's end status {_short(status)} is not one of {', '.join(END_STATUSES)} (a spool "
            "ends a run, it never sets one running)"
        )
    if not _is_count(end_time):
        raise SpoolError(f"line {number}: the end time {_short(end_time)} is not milliseconds since 1970")
    return End(status, end_time)


_READERS = {"metrics": _metrics, "text": _text, "tags": _tags, "end": _end}


def _keys(number: int, what: str, body: object, required: Sequence[str], allowed: Sequence[str] = ()) -> None:
    if not isinstance(body, dict):
        raise SpoolError(f"line {number}: {what} is not a JSON object")
    missing = [k for k in required if k not in body]
    unknown = sorted(set(body) - set(required) - set(allowed))
    if missing or unknown:
        wrong = ", ".join([*(f"no {k}" for k in missing), *(f"unknown key {_short(k)}" for k in unknown)])
        raise SpoolError(f"line {number}: {what} has the keys {', '.join(allowed or required)} ({wrong})")


def _is_key(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, float) or abs(value) <= MAX_INT64)
    )


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT64


def _is_artifact_file(name: object) -> bool:
    """A relative POSIX path that stays inside the run's artifact folder (no `..`, no absolute path, no `\\`)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and path.name not in ("", ".")


def _short(value: object) -> str:
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."
