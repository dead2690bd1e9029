"""Where tracking goes: the MLflow client for a store, the experiment's id in it, and the errors a store gives.

fcft/spec/uris.py says what a valid tracking.uri is and what a null one resolves to; this module opens the store
the URI names. mlflow is imported inside the functions that use it (~2.5 s).

Three guards MLflow lacks:
  - a SQLite store is created (its schema migrated) under a file lock beside it (<db>.lock): MLflow's own set-up
    is not safe when two first runs start at once ("duplicate column name: step"); a store an interrupted set-up
    left half done is reported, never touched;
  - an http(s) server is probed once, with a short timeout, before anything is asked of it: MLflow's retries
    would take minutes to say that nothing listens;
  - `bounded()` limits the MLflow calls in a block to one try within a timeout (MLflow reads its retry and
    timeout settings from the environment at every request), for calls a run must never wait on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import socket
import ssl
from pathlib import Path
from typing import Iterator, Optional

ARTIFACT_DIR = "mlruns"  # beside a SQLite store
PROBE_TIMEOUT_S = 3.0
GATEWAY_ERRORS = (502, 503, 504)  # a proxy saying that nothing answers behind it
# mlflow's database set-up and the sagemaker-mlflow plugin (which fails to read an ARN out of every non-ARN
# URI, and mlflow warns about it on every request) talk a lot; their warnings are not the user's business.
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "mlflow.tracking.request_header.registry", "sagemaker_mlflow")
RETRIES_SETTING, TIMEOUT_SETTING = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"


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
    """An MlflowClient for the store at `uri`: an http(s) server answers (else TrackingError, in seconds), a SQLite
    store is set up (under its lock); mlflow's chatty loggers quietened."""
    with _setting_up(uri):
        return _client(uri)


def open_experiment(uri: str, name: str):
    """(an MlflowClient for `uri`, the id of experiment `name` there, created on first use); a SQLite store and
    the experiment are created under the store's lock, so runs starting at once don't race."""
    with _setting_up(uri):
        client = _client(uri)
        return client, experiment_id(client, name, uri)


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
    path = sqlite_path(uri)
    if path is not None:
        folder = re.sub(r"[^\w.-]+", "_", name).strip("_") or "experiment"
        location = (path.parent / ARTIFACT_DIR / folder).absolute().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a job on a store fcft can't lock (a server, a database)
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


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """TrackingError at once when nothing answers at an http(s) store: one request to its /health, no retries.
    Any HTTP answer (even 401 or 404; not a proxy's 502-504) or a TLS handshake counts as answering: MLflow's own
    calls say the rest."""
    if not is_http(uri):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
        return
    except urllib.error.HTTPError as err:
        if err.code not in GATEWAY_ERRORS:
            return
        reason = f"HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        reason = err.reason
    except OSError as err:  # a timeout or reset while reading the answer
        reason = err
    if isinstance(reason, ssl.SSLError):
        return
    raise TrackingError(
        f"tracking: nothing answers at {uri} ({_why_no_answer(reason, timeout)}); start the server, fix "
        f"tracking.uri, or run with tracking=none (MLflow's own retries: {RETRIES_SETTING})"
    )


def _why_no_answer(reason, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer in {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    return str(reason) or type(reason).__name__


@contextlib.contextmanager
def bounded(uri: str, timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP calls in this block get one try each, answered within timeout_s (rather than MLflow's
    default of 7 retries over about 4 minutes): MLflow reads both settings from the environment per request."""
    if not (is_http(uri) or uri.startswith("arn:")):
        yield
        return
    saved = {key: os.environ.get(key) for key in (RETRIES_SETTING, TIMEOUT_SETTING)}
    os.environ[RETRIES_SETTING] = "0"
    os.environ[TIMEOUT_SETTING] = str(max(1, int(timeout_s)))  # MLflow reads an int
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a sqlite:/// URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _setting_up(uri: str) -> Iterator[None]:
    """Around opening a store: an http(s) server is probed; a SQLite file is locked (<db>.lock, an inter-process
    fcntl lock) and checked for a half-done set-up."""
    probe(uri)
    path = sqlite_path(uri)
    if path is None or os.name == "nt":
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            problem = half_set_up(path)
            if problem:
                raise TrackingError(problem)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def half_set_up(path: Path) -> Optional[str]:
    """Why the SQLite store at path can't be used because its set-up stopped halfway (its schema version is an
    older one of this MLflow's and some of its tables are missing), or None. The file is only read."""
    import sqlite3

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables:
                return None
            version = (db.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0]
            runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    except sqlite3.Error:
        return None  # not a database fcft can read: MLflow says what it is
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_alembic_config  # also registers every table with Base.metadata

    if set(Base.metadata.tables) <= tables:
        return None  # complete, or an older complete schema (MLflow says what to do: mlflow db upgrade)
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    head = script.get_current_head()
    if version == head or (version is not None and all(rev.revision != version for rev in script.walk_revisions())):
        return None  # a schema this MLflow doesn't know (a newer MLflow's): MLflow says what it is
    return (
        f"tracking: the MLflow store {path} was left half set up (schema version {version or 'none'} of {head}, "
        "tables missing: its creation was interrupted, or raced by a program that opened it at once); it holds "
        f"{runs} run(s) and was not touched. If it holds nothing you need, move it aside (mv {path} {path}.broken) "
        f"and run again: a fresh store is created; otherwise keep a copy and try: mlflow db upgrade sqlite:///{path}"
    )


def _client(uri: str):
    import mlflow
    from mlflow import MlflowClient

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)  # the sagemaker-mlflow plugin reads the global URI for its request headers
    client = MlflowClient(tracking_uri=uri)
    if sqlite_path(uri) is not None:
        client.search_experiments(max_results=1)  # opens (creates, migrates) the store now, under the lock
    return client
