"""Lineage between runs: a run started from another (method.init_from) links to that run's MLflow run, and an
MLflow run id given as method.init_from leads back to the run directory that run recorded (its fcft.run_dir tag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.tracking import store


def lineage_tags(client, init_from: Optional[str]) -> dict:
    """Tags for a run started from another run's directory: its MLflow run, linked from this run's note."""
    if not init_from:
        return {}
    tags = {"fcft.init_from": str(init_from)}
    previous = (rundir.read_json(Path(init_from) / rundir.METRICS) or {}).get("tracking") or {}
    run_id = previous.get("run_id")
    if not run_id:
        tags["mlflow.note.content"] = f"Started from the run directory `{init_from}` (not tracked in MLflow)."
        return tags
    try:
        previous_run = client.get_run(run_id)
        name, experiment_id = previous_run.info.run_name, previous_run.info.experiment_id
    except Exception:  # tracked in another store: name it, without a link
        tags["fcft.init_from_run_id"] = run_id
        tags["mlflow.note.content"] = (
            f"Started from MLflow run {run_id} ({previous.get('uri')}), run directory `{init_from}`."
        )
        return tags
    tags["fcft.init_from_run_id"] = run_id
    tags["mlflow.note.content"] = (
        f"Started from run [{name}](#/experiments/{experiment_id}/runs/{run_id}) (run directory `{init_from}`)."
    )
    return tags


def run_dir_of(run_id: str, uri: str) -> tuple[Optional[str], Optional[str]]:
    """(the run directory MLflow run `run_id` recorded, None) or (None, why it can't start a run)."""
    problem = store.arn_plugin_problem(uri)
    if problem:
        return None, f"tracking.uri: {problem}"
    try:
        run = store.connect(uri).get_run(run_id)
    except store.TrackingError as err:
        return None, str(err)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            return None, f"no MLflow run {run_id} in {uri} (tracking.uri names the store to look in)"
        return None, str(store.unreachable(uri, err))
    run_dir = run.data.tags.get("fcft.run_dir")
    if not run_dir:
        return None, f"MLflow run {run_id} has no fcft.run_dir tag: fcft did not record it; give its run directory"
    if not Path(run_dir).is_dir():
        return None, (
            f"MLflow run {run_id} recorded its run directory {run_dir}, which is not on this machine: "
            "copy that directory here and pass its path"
        )
    return run_dir, None
