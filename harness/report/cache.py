"""The metric histories of a finished sweep, kept as Parquet beside its report.

A second report on the same runs reads the file instead of the store. The key is the set of runs with their end
times and outcomes: a resumed sweep (new or re-run runs) or a run edited after the fact changes it. Runs that have
not ended are never cached: their histories may still grow.
"""

import hashlib
import json
from pathlib import Path

import pandas as pd

FORMAT = 1  # bump when the cached frame's columns or meaning change
DATA, KEY = "metrics.parquet", "key.txt"


def cache_key(runs: pd.DataFrame) -> str | None:
    """A digest of (run id, end time, MLflow status, outcome) over the runs; None if any run has not ended."""
    if runs["end_time"].isna().any() or runs["status"].isin(["RUNNING", "SCHEDULED"]).any():
        return None
    columns = [runs["run_id"], runs["end_time"].astype("int64"), runs["status"], runs["outcome"].fillna("")]
    items = sorted(zip(*(column.tolist() for column in columns)))
    return hashlib.sha256(json.dumps([FORMAT, items]).encode()).hexdigest()


def read(directory: Path, key: str | None) -> pd.DataFrame | None:
    """The cached frame if it was written under `key`, else None."""
    if key is None or not (directory / KEY).is_file() or not (directory / DATA).is_file():
        return None
    if (directory / KEY).read_text().strip() != key:
        return None
    return pd.read_parquet(directory / DATA)


def write(directory: Path, key: str | None, frame: pd.DataFrame) -> bool:
    """Cache `frame` under `key` (nothing when key is None). Returns whether it was written."""
    if key is None:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    # The key goes last, so that an interrupted write leaves no key pointing at partial data.
    (directory / KEY).unlink(missing_ok=True)
    partial = directory / f"{DATA}.partial"
    frame.to_parquet(partial, index=False)
    partial.replace(directory / DATA)
    (directory / KEY).write_text(key + "\n")
    return True
