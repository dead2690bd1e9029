"""Runs that execute elsewhere: the record a launcher leaves in the run directory, a job's state, and how a
failed run is reported.

A launcher that submits a run (SageMaker) writes `job.json` into the run directory: what was submitted,
where its outputs will be, and the last state seen. `python -m fcft.runs` reads it to wait for the job and collect
its results, in the same command or a later one. Secrets never go into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.json"


class RunFailed(RuntimeError):
    """A run that started but did not finish: a worker process that exited non-zero, a job that failed."""


@dataclass(frozen=True)
class JobStatus:
    """A submitted job's state, in the backend's words (e.g. SageMaker's InProgress/Training)."""

    state: str
    done: bool  # no further change will come
    failed: bool = False
    detail: Optional[str] = None  # the finer-grained state (SageMaker's secondary status)
    reason: Optional[str] = None  # why it failed or stopped

    def describe(self) -> str:
        text = f"{self.state} ({self.detail})" if self.detail and self.detail != self.state else self.state
        return f"{text}: {self.reason}" if self.reason else text


def read_record(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / JOB_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(run_dir: Path, record: dict) -> None:
    write_json(Path(run_dir) / JOB_FILE, record)


def update_record(run_dir: Path, **changes) -> dict:
    record = {**(read_record(run_dir) or {}), **changes}
    write_record(run_dir, record)
    return record


def write_error(run_dir: Path, err: BaseException | str, kind: Optional[str] = None) -> None:
    """error.json for a run that failed outside the worker (bad config, failed job)."""
    message = str(err)
    write_json(Path(run_dir) / ERROR_FILE, {"type": kind or type(err).__name__, "message": message})


def read_json(path: Path) -> Optional[dict]:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
