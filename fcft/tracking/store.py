"""Where tracking goes: the MLflow client for a store, the experiment's id in it, and the errors a store gives.

fcft/spec/uris.py says what a valid tracking.uri is and what a null one resolves to; this module opens the store
the URI names. mlflow is imported inside the functions that use it (~2.5 s).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Optional

ARTIFACT_DIR = "mlruns"  # beside a SQLite store
# mlflow's database set-up and the sagemaker-mlflow plugin (which fails to read an ARN out of every non-ARN
# URI, and mlflow warns about it on every request) talk a lot; their warnings are not the user's business.
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "mlflow.tracking.request_header.registry", "sagemaker_mlflow")


class TrackingError(RuntimeError):
    """The tracking store can't be reached or refused a request."""


def tracking_on(tracking) -> bool:
    """Whether spec.tracking records to MLflow: the typed option's `enabled` (MlflowTracking, NoTracking), or,
    for a DictConfig that has none, its name being mlflow."""
    enabled = getattr(tracking, "enabled", None)
    if enabled is not None:
        return bool(enabled)
    return str(getattr(tracking, "name", None)) == "mlflow"


def arn_plugin_problem(uri: Optional[str]) -> Optional[str]:
    """Why this machine can't open a SageMaker MLflow ARN (the sagemaker-mlflow plugin is missing), or None."""
    if uri and uri.startswith("arn:") and importlib.util.find_spec("sagemaker_mlflow") is None:
        return "a SageMaker MLflow ARN needs the sagemaker-mlflow plugin: pip install 'fcft[sagemaker]'"
    return None


def run_url(uri: str, experiment_id: str, run_id: str) -> Optional[str]:
    """Where the run opens in the MLflow UI (http servers only)."""
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if uri.startswith("http") else None


def connect(uri: str):
    """An MlflowClient for the store at `uri`, with mlflow's chatty loggers quietened."""
    import mlflow
    from mlflow import MlflowClient

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)  # the sagemaker-mlflow plugin reads the global URI for its request headers
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, created on first use; in a SQLite store its artifacts go to mlruns/ beside the file
    (MLflow's default would be ./mlruns of whatever directory the first run started in)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(f"tracking.experiment: '{name}' was deleted in {uri}; restore it or pick another name")
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        folder = re.sub(r"[^\w.-]+", "_", name).strip("_") or "experiment"
        location = (Path(uri[len("sqlite:///") :]).parent / ARTIFACT_DIR / folder).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another job of the sweep
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def unreachable(uri: str, err: Exception) -> TrackingError:
    """The error for a store that refused a request or can't be reached, with what to do about it."""
    return TrackingError(
        f"tracking: MLflow at {uri} refused or can't be reached ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}); start the server, fix tracking.uri, "
        "or run with tracking=none"
    )
