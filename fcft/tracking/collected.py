"""Runs finished elsewhere: a remote job (SageMaker) whose outputs were just collected into a run directory.

A job that could reach its tracking store recorded itself there; its fcft.run_dir tag now points at the collected
directory. A job that could not (the store is a SQLite file on this machine) ran untracked, and its MLflow run is
recorded here from its files: the spec, the trainer's log history, the metrics and the artifacts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from fcft import rundir
from fcft.tracking import store
from fcft.tracking.run import start


def record_collected(run_dir: Path) -> None:
    """A remote job's outputs just arrived in run_dir. If the job tracked itself, point its fcft.run_dir tag here;
    if it could not (the store is on this machine), record its MLflow run now from the files. Never raises."""
    run_dir = Path(run_dir)
    metrics = rundir.read_json(run_dir / rundir.METRICS)
    try:
        spec = OmegaConf.load(run_dir / rundir.SPEC)
    except Exception:
        return
    if metrics is None or not store.tracking_on(spec.tracking):
        return
    try:
        tracked = metrics.get("tracking")
        if tracked:
            store.connect(tracked["uri"]).set_tag(tracked["run_id"], "fcft.run_dir", str(run_dir.absolute()))
            return
        tracker = start(spec, run_dir)
        tracker.log_history(rundir.read_jsonl(run_dir / rundir.TRAIN_LOG))
        metrics["tracking"] = tracker.record
        rundir.write_json(run_dir / rundir.METRICS, metrics)
        tracker.finish(run_dir, metrics)
    except Exception as err:
        print(f"fcft: warning: the job in {run_dir} was not recorded in MLflow: {err}", file=sys.stderr)
