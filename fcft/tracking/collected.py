"""Runs recorded from their run directory, after the fact: a remote job (SageMaker) whose outputs were just
collected, or a run whose store stopped answering before the run ended.

    python -m fcft.tracking record RUN_DIR [RUN_DIR ...]      (fcft/tracking/__main__.py)

A run directory holds everything its MLflow run needs: spec.yaml (params, tags, the store), train_log.jsonl (the
step metrics), metrics.json (eval metrics; the MLflow run it was given) or error.json (a failed run, and the
MLflow run when the store was gone as it failed), and the artifacts. record() completes that MLflow run (only
the steps and metrics it lacks) and ends it FINISHED, FAILED or KILLED, or creates one when the run has none; a
run already ended is left as it is, so recording twice does nothing new.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.spec.upgrade import written
from fcft.spec.uris import store_uri
from fcft.tracking import store
from fcft.tracking.run import Tracker, start

ENDED = ("FINISHED", "FAILED", "KILLED")
INTERRUPTED = ("KeyboardInterrupt", "SystemExit", "Terminated")  # error.json types of a run stopped from outside


def record_collected(run_dir: Path) -> None:
    """A remote job's outputs just arrived in run_dir. If the job tracked itself, point its fcft.run_dir tag here;
    if it could not (the store is on this machine), record its MLflow run now from the files. Never raises."""
    run_dir = Path(run_dir)
    metrics = rundir.read_json(run_dir / rundir.METRICS)
    try:
        spec = written(run_dir / rundir.SPEC)
    except Exception:
        return
    if metrics is None or not store.tracking_on(spec.tracking):
        return
    try:
        tracked = metrics.get("tracking")
        if tracked:
            store.connect(tracked["uri"]).set_tag(tracked["run_id"], "fcft.run_dir", str(run_dir.absolute()))
            return
        record(run_dir)
    except Exception as err:
        print(f"fcft: warning: the job in {run_dir} was not recorded in MLflow: {err}", file=sys.stderr)


def record(run_dir: Path, uri: Optional[str] = None) -> str:
    """Complete or create run_dir's MLflow run from its files, and end it; what was done, in a line. `uri`: the
    store to record in when it is served elsewhere now (default: the one the run used). TrackingError when the
    store can't be reached; ValueError when run_dir is no ended run's directory."""
    run_dir = Path(run_dir).absolute()
    try:
        spec = written(run_dir / rundir.SPEC)
    except Exception as err:
        raise ValueError(f"{run_dir} is no run directory: its {rundir.SPEC} can't be read ({err})") from err
    if not store.tracking_on(spec.tracking):
        return f"{run_dir}: tracking=none, nothing to record"
    metrics = rundir.read_json(run_dir / rundir.METRICS)
    error = rundir.read_json(run_dir / rundir.ERROR)
    if metrics is None and error is None:
        raise ValueError(f"{run_dir} has not ended (no {rundir.METRICS} or {rundir.ERROR}): nothing to record yet")
    status = "FINISHED" if metrics is not None else "KILLED" if error.get("type") in INTERRUPTED else "FAILED"
    noted = (metrics or {}).get("tracking") or (error or {}).get("tracking") or {}
    uri = uri or noted.get("uri") or store_uri(spec.tracking.uri)
    noted_error = error is not None and "tracking" in error  # error.json's note that the run was not recorded
    try:
        tracker, created = _find(spec, run_dir, uri, noted.get("run_id")), False
        if tracker is None:
            spec.tracking.uri = uri
            tracker, created = start(spec, run_dir), True
        ended = tracker.client.get_run(tracker.run_id).info.status
        if noted_error:  # about to be untrue; it goes to MLflow without it
            rundir.write_json(run_dir / rundir.ERROR, {k: v for k, v in error.items() if k != "tracking"})
        if ended in ENDED:
            return f"{run_dir}: already recorded in MLflow run {tracker.run_id} ({ended}), nothing new"
        if metrics is not None and metrics.get("tracking") != tracker.record:
            rundir.write_json(run_dir / rundir.METRICS, {**metrics, "tracking": tracker.record})
        tracker.complete(run_dir, metrics, status)
    except Exception as err:
        if noted_error:
            rundir.write_json(run_dir / rundir.ERROR, error)
        if isinstance(err, store.TrackingError):
            raise
        raise store.unreachable(uri, err) from err
    where = tracker.record["url"] or uri
    return f"{run_dir}: recorded in MLflow run {tracker.run_id} ({'created, ' if created else ''}{status}): {where}"


def _find(spec, run_dir: Path, uri: str, run_id: Optional[str]) -> Optional[Tracker]:
    """The run's MLflow run: the one its files name, else the one tagged with its directory, else None."""
    client = store.connect(uri)
    if run_id:
        try:
            run = client.get_run(run_id)
            return Tracker(client, uri, run.info.experiment_id, run_id, run.info.run_name)
        except Exception as err:
            if "RESOURCE_DOES_NOT_EXIST" not in str(err) and "not found" not in str(err).lower():
                raise
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    if experiment is None:
        return None
    found = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`fcft.run_dir` = '{run_dir}'", max_results=1
    )
    if not found:
        return None
    run = found[0]
    return Tracker(client, uri, run.info.experiment_id, run.info.run_id, run.info.run_name)
