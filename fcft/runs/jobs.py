"""Runs that execute elsewhere: a submitted job's state, and the error a run that did not finish raises.

A launcher that submits a run (SageMaker) writes `job.json` into the run directory (fcft.rundir.RunDir.write_job):
what was submitted, where its outputs will be, and the last state seen. `python -m fcft.runs` reads it to wait
for the job and collect its results, in the same command or a later one. Secrets never go into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
