"""A SageMaker training job's log, read from CloudWatch Logs: streamed to the terminal while fcft waits on a single
job, and saved (its last lines printed) when a job fails, so that a failure says more than SageMaker's 1 KiB
FailureReason and a console link."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from fcft import rundir

LOG_GROUP = "/aws/sagemaker/TrainingJobs"  # where SageMaker writes every training job's log
TAIL = 30  # lines of a failed job's log printed


class JobLog:
    """`call(region, operation, service=..., **params)`: the launcher's AWS call, tried again on transient errors."""

    def __init__(self, call: Callable):
        self.call = call
        self.read_up_to: dict = {}  # run dir -> {stream: token}, for streaming

    def lines(self, record: dict, since: Optional[dict] = None) -> tuple[list[str], dict]:
        """The job's log lines (every instance's stream, in order) after `since` (stream -> token), and where they
        end. [] while SageMaker hasn't started the log yet."""
        streams = self.call(
            record["region"],
            "describe_log_streams",
            service="logs",
            logGroupName=LOG_GROUP,
            logStreamNamePrefix=f"{record['job_name']}/",
        ).get("logStreams", [])
        lines, tokens = [], dict(since or {})
        for stream in sorted(s["logStreamName"] for s in streams):
            params = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in tokens:
                params["nextToken"] = tokens[stream]
            page = self.call(record["region"], "get_log_events", service="logs", **params)
            prefix = f"[{stream.split('/', 1)[-1]}] " if len(streams) > 1 else ""
            lines += [prefix + event["message"].rstrip("\n") for event in page.get("events", [])]
            tokens[stream] = page.get("nextForwardToken")
        return lines, tokens

    def stream(self, run_dir: Path, record: dict) -> None:
        """Print the lines that came since the last call for this run."""
        try:
            lines, self.read_up_to[run_dir] = self.lines(record, self.read_up_to.get(run_dir))
        except Exception as err:  # no log group yet, or no logs:GetLogEvents permission: the job goes on
            if "ResourceNotFoundException" not in str(err):
                print(f"fcft: warning: the job's log can't be read: {err}", file=sys.stderr)
            return
        for line in lines:
            print(f"  | {line}", flush=True)

    def save(self, run_dir: Path, record: dict) -> None:
        """A failed job's log into run_dir (rundir.JOB_LOG), its last lines printed."""
        try:
            lines, _ = self.lines(record)
        except Exception as err:
            print(
                f"fcft: warning: the failed job's log can't be read ({err}); see {record.get('console')}",
                file=sys.stderr,
            )
            return
        if not lines:
            return
        rundir.write_text(run_dir / rundir.JOB_LOG, "\n".join(lines) + "\n")
        tail = "\n".join(f"  | {line}" for line in lines[-TAIL:])
        print(
            f"fcft: the last lines of job {record['job_name']}'s log (all in {run_dir / rundir.JOB_LOG}):\n{tail}",
            file=sys.stderr,
            flush=True,
        )
