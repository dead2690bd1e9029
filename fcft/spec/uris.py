"""The grammar of MLflow tracking URIs and run ids, as the spec checks them: pure, no mlflow import.

fcft/tracking/ talks to the stores; this module only says what a valid `tracking.uri` or run id looks like,
what a null URI resolves to (the embedded store in the working directory), and whether a job running on
another machine could reach a store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

EMBEDDED_DB = "mlflow.db"
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
ARN = re.compile(r"arn:aws[\w-]*:sagemaker:[\w-]+:\d{12}:(mlflow-tracking-server|mlflow-app)/\S+$")


def store_uri(uri: Optional[str]) -> str:
    """The tracking URI a run uses: `uri`, or the embedded store in the working directory; SQLite paths absolute."""
    if uri is None:
        return f"sqlite:///{Path.cwd().absolute() / EMBEDDED_DB}"
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return f"sqlite:///{Path(os.path.expanduser(uri[len('sqlite:///') :])).absolute()}"
    return uri


def uri_problem(uri: Optional[str]) -> Optional[str]:
    """Why `uri` is no tracking URI fcft can use, or None."""
    if uri is None:
        return None
    if uri.startswith("arn:"):
        if not ARN.match(uri):
            return (
                f"'{uri}' is not a SageMaker MLflow ARN (arn:aws:sagemaker:<region>:<account>:"
                "mlflow-tracking-server/<name>)"
            )
        return None
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg2://...
    if scheme not in SCHEMES:
        return (
            f"'{uri}' is not a tracking URI fcft can use; give http(s)://host:port, a SageMaker MLflow ARN, "
            "sqlite:///PATH.db, postgresql://..., mysql://..., databricks, or null for the embedded "
            f"sqlite:///{Path.cwd() / EMBEDDED_DB}"
        )
    if parsed.password:
        return (
            "holds a password, and the spec is written to disk: put it in MLFLOW_TRACKING_PASSWORD (the user in "
            "MLFLOW_TRACKING_USERNAME, or a token in MLFLOW_TRACKING_TOKEN) and drop it from the URI"
        )
    if scheme in ("http", "https") and not parsed.hostname:
        return f"'{uri}' names no host"
    return None


def reachable_from_elsewhere(uri: str) -> bool:
    """Whether a job on another machine can log to `uri`: a server or database not on this machine's loopback."""
    if uri.startswith(("arn:", "databricks")):
        return True
    parsed = urlparse(uri)
    return parsed.scheme.split("+")[0] in SCHEMES and parsed.scheme != "sqlite" and parsed.hostname not in LOCAL_HOSTS


def run_id_in(value: Optional[str]) -> Optional[str]:
    """The MLflow run id `value` names (a 32-hex-digit id, or runs:/<id>), else None."""
    match = RUN_ID.fullmatch(value.strip()) if value else None
    return match.group(1) if match else None
