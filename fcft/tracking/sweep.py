"""A multirun's parent run: fcft/runs/sweep.py's MultirunEnd starts it before the first job and ends it after the
last, with the jobs' runs nested under it (mlflow.parentRunId).

Its record goes to <sweep dir>/tracking.json; each job's spec carries its id as tracking.parent_run_id, so jobs that
run elsewhere (SageMaker) name their parent too. At the end the parent gets the sweep's report and sweep.json as
artifacts, the job counts and the best headline score (best/eval/acc_norm) as metrics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.eval.metrics import HEADLINE
from fcft.spec.uris import store_uri, uri_problem
from fcft.tracking import store
from fcft.tracking.run import CALL_TIMEOUT_S


def start_sweep(tracking, sweep_dir: Path, name: str, overrides: list[str]) -> Optional[str]:
    """Create a sweep's parent run and write <sweep dir>/tracking.json; None with tracking=none."""
    if not store.tracking_on(tracking):
        return None
    uri = store_uri(tracking.uri)
    problem = uri_problem(tracking.uri) or store.arn_plugin_problem(uri)
    if problem:
        raise store.TrackingError(f"tracking.uri: {problem}")
    try:
        client, experiment_id = store.open_experiment(uri, tracking.experiment)
        tags = {"fcft.sweep_dir": str(Path(sweep_dir).absolute()), "fcft.overrides": " ".join(overrides)}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
    except store.TrackingError:
        raise
    except Exception as err:
        raise store.unreachable(uri, err) from err
    record = {
        "parent_run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "experiment": tracking.experiment,
        "uri": uri,
        "url": store.run_url(uri, experiment_id, run.info.run_id),
    }
    rundir.write_json(Path(sweep_dir) / rundir.SWEEP_TRACKING, record)
    print(f"fcft: MLflow parent run {name} ({run.info.run_id}): {record['url'] or uri}", flush=True)
    return run.info.run_id


def sweep_parent(sweep_dir: Path) -> Optional[dict]:
    """The sweep's parent run record (tracking.json), if it has one."""
    return rundir.read_json(Path(sweep_dir) / rundir.SWEEP_TRACKING)


def parent_for(tracking, sweep_dir: Path) -> Optional[str]:
    """The parent run id a job of the sweep in sweep_dir names: only when it tracks to the parent's store and
    experiment (MLflow nests runs within one experiment)."""
    parent = sweep_parent(sweep_dir)
    if parent is None or not store.tracking_on(tracking):
        return None
    if store_uri(tracking.uri) != parent["uri"] or tracking.experiment != parent["experiment"]:
        return None
    return parent["parent_run_id"]


def log_sweep_report(sweep_dir: Path, report_dir: Path) -> None:
    """The sweep's report files as the parent run's artifacts (report/)."""
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return
    try:
        with store.bounded(parent["uri"], CALL_TIMEOUT_S):
            store.connect(parent["uri"]).log_artifacts(parent["parent_run_id"], str(report_dir), "report")
    except Exception as err:
        print(f"fcft: warning: the report was not logged to MLflow: {err}", file=sys.stderr)


def end_sweep(sweep_dir: Path, outcomes: list) -> None:
    """A report writer (fcft/runs/sweep.py): the parent run gets sweep.json, the job counts and the best headline
    score (best/eval/acc_norm), and ends FINISHED, or FAILED when any job failed. Each call gets one short try:
    a store gone away costs the sweep's end seconds, not minutes."""
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return
    from mlflow.entities import Metric

    run_id = parent["parent_run_id"]
    key = HEADLINE.key
    evals = [(o.metrics or {}).get("eval") or {} for o in outcomes if o.ok]
    scores = [ev[key] for ev in evals if ev.get(key) is not None]
    now = int(time.time() * 1000)
    values = {"jobs": len(outcomes), "jobs_failed": sum(not o.ok for o in outcomes)}
    if scores:
        values[f"best/eval/{key}"] = max(scores) if HEADLINE.higher_is_better else min(scores)
    summary = Path(sweep_dir) / rundir.SWEEP_SUMMARY
    try:
        with store.bounded(parent["uri"], CALL_TIMEOUT_S):
            client = store.connect(parent["uri"])
            client.log_batch(
                run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()], synchronous=True
            )
            if summary.is_file():
                client.log_artifact(run_id, str(summary))
            client.set_terminated(run_id, "FINISHED" if all(o.ok for o in outcomes) else "FAILED")
    except Exception as err:
        print(f"fcft: warning: the MLflow parent run {run_id} was not ended: {err}", file=sys.stderr)
