"""Runs that execute elsewhere: a submitted job's state, and the error a run that did not finish raises; how the
command lines (`python -m fcft`, `python -m fcft.worker`) end on an error: one line, and an exit status.

A launcher that submits a run (SageMaker) writes `job.json` into the run directory (fcft.rundir.RunDir.write_job):
what was submitted, where its outputs will be, and the last state seen. `python -m fcft.runs` reads it to wait
for the job and collect its results, in the same command or a later one. Secrets never go into it.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Optional

DEBUG_ENV = "FCFT_DEBUG"  # FCFT_DEBUG=1: an error's traceback too (HYDRA_FULL_ERROR=1 is Hydra's own, for its errors)
BAD_INPUT, FAILED, INTERRUPTED, TERMINATED = 2, 1, 130, 143  # 130 = 128 + SIGINT, 143 = 128 + SIGTERM
OVERWRITE_ENV = "FCFT_OVERWRITE"  # `python -m fcft ... overwrite=true` sets it, for every run the command starts


class RunFailed(RuntimeError):
    """A run that started but did not finish: a worker process that exited non-zero, a job that failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, Kubernetes, Slurm, `timeout`), raised like Ctrl-C: the run writes error.json and its
    MLflow run ends KILLED."""


def overwrite() -> bool:
    """Whether the command was given `overwrite=true`: a run may replace another run's outputs in its directory."""
    return os.environ.get(OVERWRITE_ENV, "") not in ("", "0", "false")


def handle_sigterm() -> None:
    """Turn SIGTERM into Terminated in this process (the main thread), from now on."""

    def _raise(signum, frame):
        raise Terminated(f"terminated by signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, _raise)


def exit_status(err: BaseException) -> int:
    """The exit status for an error: 2 for bad input (config, data rows, a missing file, a store that can't be
    reached, a run directory in use), 1 for a run that failed, 130 for an interrupt, 143 for SIGTERM."""
    from fcft.data.when2call import DataError
    from fcft.rundir import RunDirError
    from fcft.spec import SpecError
    from fcft.tracking import TrackingError

    if isinstance(err, Terminated):
        return TERMINATED
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(err, (SpecError, DataError, TrackingError, RunDirError)):
        return BAD_INPUT
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return BAD_INPUT
    return FAILED


def explain(err: BaseException, run_dir=None) -> str:
    """The one line a command prints for an error (without the traceback, unless FCFT_DEBUG=1)."""
    from fcft.data.when2call import DataError
    from fcft.spec import SpecError

    if isinstance(err, KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        return f"fcft: {what}" + (f"; the run's state is in {run_dir}" if run_dir else "")
    if isinstance(err, SpecError):
        return f"fcft: invalid config: {err}"
    if isinstance(err, DataError):
        return f"fcft: bad data: {err}"
    if isinstance(err, RunFailed):
        return f"fcft: run failed: {err}"
    if exit_status(err) == BAD_INPUT:
        return f"fcft: {err}"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return (
            f"fcft: the disk is full ({err}): free some space and run the same command again (with "
            "compute.checkpoint_dir set, it resumes from the newest complete checkpoint: finished training is kept)"
        )
    where = f" (traceback in {run_dir}/error.json; {DEBUG_ENV}=1 prints it here)" if run_dir else ""
    return f"fcft: run failed: {type(err).__name__}: {err}{where}"


def fail(err: BaseException, run_dir=None) -> int:
    """Print the error's one line (and, with FCFT_DEBUG=1, its traceback) to stderr; return its exit status."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(err)
    print(explain(err, run_dir), file=sys.stderr, flush=True)
    return exit_status(err)


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
