"""MLflow tracking: one MLflow run per fcft run, a parent run per multirun, and the lineage between runs.

Where (conf/tracking/, spec.tracking):
  tracking=mlflow (default)  tracking.uri null: the embedded store sqlite:///<working directory>/mlflow.db, created
                             on first use, with artifacts in <working directory>/mlruns/; or any tracking URI: an
                             http(s) server, a SageMaker MLflow ARN (the sagemaker-mlflow plugin), another SQLite
                             file (artifacts in mlruns/ beside it), a database
  tracking=none              nothing is recorded (the run directory still has everything)

What one run gets, from rank 0 only; the run is always ended: FINISHED, FAILED (with error.json), KILLED (Ctrl-C):
  params     the spec, flattened (model.name, method.learning_rate, ...): no secrets, since none enter the spec
  tags       fcft.run_dir, fcft.model / method / tuning, mlflow.parentRunId in a multirun, and for a run started
             from another (method.init_from) fcft.init_from_run_id and a note linking to that run
  metrics    train/<key> at every logging step, eval/<key> at the end (acc_norm, its 95% interval, macro_f1...)
  artifacts  spec.yaml, metrics.json, train_log.jsonl, spectrum.yaml, eval/ (samples.jsonl, confusion.png),
             error.json
The run's id goes into metrics.json ("tracking"): a run started from this run directory links back to it, and
`method.init_from=<MLflow run id>` finds the directory again through the fcft.run_dir tag.

A multirun gets a parent run (fcft/runs/sweep.py's MultirunEnd starts and ends it). Its id is written to
<sweep dir>/tracking.json, and each job's spec carries it as tracking.parent_run_id, so jobs that run elsewhere
(SageMaker) name their parent too. A remote job whose tracking store it can't reach (a local SQLite file) runs
untracked and is recorded here when its outputs are collected (`record_collected`).

fcft logs through MlflowClient with explicit run ids, from its own TrainerCallback, rather than with transformers'
MLflowCallback (report_to=mlflow): that one takes its settings from environment variables, reuses whatever
run is active, and logs asynchronously. mlflow is imported inside the functions that use it (~2.5 s).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from fcft.rundir import read_json, write_json

log = logging.getLogger(__name__)

SWEEP_FILE = "tracking.json"  # in a sweep directory: the parent run
EMBEDDED_DB = "mlflow.db"
ARTIFACT_DIR = "mlruns"  # beside a SQLite store
RUN_FILES = ("spec.yaml", "metrics.json", "train_log.jsonl", "spectrum.yaml", "error.json")
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
# mlflow's database set-up and the sagemaker-mlflow plugin (which fails to read an ARN out of every non-ARN
# URI, and mlflow warns about it on every request) talk a lot; their warnings are not the user's business.
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "mlflow.tracking.request_header.registry", "sagemaker_mlflow")
MAX_PARAMS, MAX_METRICS = 100, 1000  # per MlflowClient.log_batch call
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value


class TrackingError(RuntimeError):
    """The tracking store can't be reached or refused a request."""


# --- where: the store -------------------------------------------------------------------------------------------


def store_uri(uri: Optional[str]) -> str:
    """The tracking URI a run uses: `uri`, or the embedded store in the working directory; SQLite paths absolute."""
    if uri is None:
        return f"sqlite:///{Path.cwd().absolute() / EMBEDDED_DB}"
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return f"sqlite:///{Path(os.path.expanduser(uri[len('sqlite:///') :])).absolute()}"
    return uri


def uri_problem(uri: Optional[str]) -> Optional[str]:
    """Why `uri` is no tracking URI fcft can use, or None (checked without importing mlflow)."""
    if uri is None:
        return None
    if uri.startswith("arn:"):
        if not re.match(r"arn:aws[\w-]*:sagemaker:[\w-]+:\d{12}:(mlflow-tracking-server|mlflow-app)/\S+$", uri):
            return (
                f"'{uri}' is not a SageMaker MLflow ARN (arn:aws:sagemaker:<region>:<account>:"
                "mlflow-tracking-server/<name>)"
            )
        import importlib.util

        if importlib.util.find_spec("sagemaker_mlflow") is None:
            return "a SageMaker MLflow ARN needs the sagemaker-mlflow plugin: pip install 'fcft[sagemaker]'"
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


def run_url(uri: str, experiment_id: str, run_id: str) -> Optional[str]:
    """Where the run opens in the MLflow UI (http servers only)."""
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if uri.startswith("http") else None


def _client(uri: str):
    import mlflow
    from mlflow import MlflowClient

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)  # the sagemaker-mlflow plugin reads the global URI for its request headers
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, uri: str) -> str:
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


def _unreachable(uri: str, err: Exception) -> TrackingError:
    return TrackingError(
        f"tracking: MLflow at {uri} refused or can't be reached ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}); start the server, fix tracking.uri, "
        "or run with tracking=none"
    )


# --- one run ------------------------------------------------------------------------------------------------------


class Tracker:
    """The MLflow run of one fcft run; every call goes to it by id."""

    def __init__(self, client, uri: str, experiment_id: str, run_id: str, name: str):
        self.client, self.uri, self.experiment_id, self.run_id, self.name = client, uri, experiment_id, run_id, name
        self._step_failed = False

    @property
    def record(self) -> dict:
        """What metrics.json keeps about the MLflow run."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "uri": self.uri,
            "url": run_url(self.uri, self.experiment_id, self.run_id),
        }

    def callback(self):
        """A transformers TrainerCallback that logs every logging step's numbers (train/<key>)."""
        from transformers import TrainerCallback

        tracker = self

        class MlflowSteps(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    tracker.log_step(logs, state.global_step)

        return MlflowSteps()

    def log_step(self, logs: dict, step: int) -> None:
        """One trainer log record; a failure warns once and never stops training."""
        try:
            self._log_metrics({_train_key(k): v for k, v in logs.items()}, step)
        except Exception as err:  # a flaky server must not cost a training run
            if not self._step_failed:
                log.warning("MLflow: train metrics at step %d were not logged: %s", step, err)
            self._step_failed = True

    def log_history(self, records: list[dict]) -> None:
        """A finished run's trainer log history (train_log.jsonl), step by step."""
        for record in records:
            self._log_metrics({_train_key(k): v for k, v in record.items() if k != "step"}, record.get("step", 0))

    def finish(self, run_dir: Path, metrics: dict) -> None:
        """Eval metrics and the run directory's files, then FINISHED."""
        eval_metrics = _eval_metrics(metrics.get("eval") or {})
        self._log_metrics(eval_metrics, metrics.get("train", {}).get("steps") or 0)
        self._log_files(run_dir)
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, run_dir: Path, err: BaseException) -> None:
        """The files there are (spec.yaml, error.json...), then FAILED, or KILLED when interrupted; never raises."""
        try:
            self._log_files(run_dir)
        except Exception as problem:
            log.warning("MLflow: the failed run's files were not logged: %s", problem)
        try:
            self.client.set_terminated(self.run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        except Exception as problem:
            log.warning("MLflow: run %s could not be marked failed: %s", self.run_id, problem)

    def _log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v in values.items() if _is_number(v)]
        for i in range(0, len(batch), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=batch[i : i + MAX_METRICS], synchronous=True)

    def _log_files(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "eval").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "eval"), "eval")


def start(spec: DictConfig, run_dir: Path) -> Optional[Tracker]:
    """Create the MLflow run of `spec` running in run_dir (None with tracking=none); TrackingError if the store
    can't be reached, before anything expensive has started."""
    t = spec.tracking
    if str(t.name) != "mlflow":
        return None
    uri = t.uri
    name = t.run_name or f"{spec.model.name}-{spec.method.name}-{spec.tuning.name}"
    try:
        client = _client(uri)
        experiment_id = _experiment_id(client, t.experiment, uri)
        tags = {**_run_tags(spec, run_dir), **_lineage(client, spec.method.init_from)}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        params = _params(spec)
        for i in range(0, len(params), MAX_PARAMS):
            client.log_batch(run.info.run_id, params=params[i : i + MAX_PARAMS], synchronous=True)
    except TrackingError:
        raise
    except Exception as err:
        raise _unreachable(uri, err) from err
    tracker = Tracker(client, uri, experiment_id, run.info.run_id, name)
    where = run_url(uri, experiment_id, tracker.run_id) or f"{uri} (browse: mlflow ui --backend-store-uri {uri})"
    print(f"fcft: MLflow run {name} ({tracker.run_id}), experiment {t.experiment}: {where}", flush=True)
    return tracker


def _run_tags(spec: DictConfig, run_dir: Path) -> dict:
    tags = {
        "fcft.run_dir": str(Path(run_dir).absolute()),
        "fcft.model": str(spec.model.name),
        "fcft.method": str(spec.method.name),
        "fcft.tuning": str(spec.tuning.name),
        "fcft.compute": str(spec.compute.name),
    }
    if spec.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = spec.tracking.parent_run_id
    tags.update({str(k): str(v) for k, v in (spec.tracking.tags or {}).items()})
    return tags


def _lineage(client, init_from: Optional[str]) -> dict:
    """Tags for a run started from another run's directory: its MLflow run, linked from this run's note."""
    if not init_from:
        return {}
    tags = {"fcft.init_from": str(init_from)}
    previous = (read_json(Path(init_from) / "metrics.json") or {}).get("tracking") or {}
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


def _params(spec: DictConfig) -> list:
    from mlflow.entities import Param

    flat = _flatten(spec.to_dict() if hasattr(spec, "to_dict") else OmegaConf.to_container(spec, resolve=True))
    return [
        Param(key, (value if isinstance(value, str) else json.dumps(value))[:MAX_PARAM_LENGTH])
        for key, value in flat.items()
        if key != "tracking.parent_run_id"
    ]


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def _train_key(key: str) -> str:
    """trainer log keys as MLflow metrics: loss -> train/loss; the end-of-training summary keeps its train_ name."""
    return key if key.startswith("train_") else f"train/{key}"


def _eval_metrics(ev: dict) -> dict:
    values = {f"eval/{k}": ev.get(k) for k in ("acc", "acc_norm", "macro_f1", "tool_hallucination_rate", "n")}
    for key in ("acc_norm_ci95", "macro_f1_ci95"):
        if ev.get(key):
            values[f"eval/{key}_low"], values[f"eval/{key}_high"] = ev[key]
    return values


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


# --- method.init_from=<run id> --------------------------------------------------------------------------------


def run_dir_of(run_id: str, uri: str) -> tuple[Optional[str], Optional[str]]:
    """(the run directory MLflow run `run_id` recorded, None) or (None, why it can't start a run)."""
    try:
        run = _client(uri).get_run(run_id)
    except Exception as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(err) or "not found" in str(err).lower():
            return None, f"no MLflow run {run_id} in {uri} (tracking.uri names the store to look in)"
        return None, str(_unreachable(uri, err))
    run_dir = run.data.tags.get("fcft.run_dir")
    if not run_dir:
        return None, f"MLflow run {run_id} has no fcft.run_dir tag: fcft did not record it; give its run directory"
    if not Path(run_dir).is_dir():
        return None, (
            f"MLflow run {run_id} recorded its run directory {run_dir}, which is not on this machine: "
            "copy that directory here and pass its path"
        )
    return run_dir, None


# --- runs finished elsewhere ------------------------------------------------------------------------------------


def record_collected(run_dir: Path) -> None:
    """A remote job's outputs just arrived in run_dir. If the job tracked itself, point its fcft.run_dir tag here;
    if it could not (the store is on this machine), record its MLflow run now from the files. Never raises."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    try:
        spec = OmegaConf.load(run_dir / "spec.yaml")
    except Exception:
        return
    if metrics is None or str(spec.tracking.name) != "mlflow":
        return
    try:
        tracked = metrics.get("tracking")
        if tracked:
            _client(tracked["uri"]).set_tag(tracked["run_id"], "fcft.run_dir", str(run_dir.absolute()))
            return
        tracker = start(spec, run_dir)
        tracker.log_history([json.loads(line) for line in _lines(run_dir / "train_log.jsonl")])
        metrics["tracking"] = tracker.record
        write_json(run_dir / "metrics.json", metrics)
        tracker.finish(run_dir, metrics)
    except Exception as err:
        print(f"fcft: warning: the job in {run_dir} was not recorded in MLflow: {err}", file=sys.stderr)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# --- a multirun: the parent run -------------------------------------------------------------------------------


def start_sweep(tracking: DictConfig, sweep_dir: Path, name: str, overrides: list[str]) -> Optional[str]:
    """Create a sweep's parent run and write <sweep dir>/tracking.json; None with tracking=none."""
    if str(tracking.get("name")) != "mlflow":
        return None
    uri = store_uri(tracking.get("uri"))
    problem = uri_problem(tracking.get("uri"))
    if problem:
        raise TrackingError(f"tracking.uri: {problem}")
    try:
        client = _client(uri)
        experiment_id = _experiment_id(client, tracking.experiment, uri)
        tags = {"fcft.sweep_dir": str(Path(sweep_dir).absolute()), "fcft.overrides": " ".join(overrides)}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
    except TrackingError:
        raise
    except Exception as err:
        raise _unreachable(uri, err) from err
    record = {
        "parent_run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "experiment": tracking.experiment,
        "uri": uri,
        "url": run_url(uri, experiment_id, run.info.run_id),
    }
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(sweep_dir) / SWEEP_FILE, record)
    print(f"fcft: MLflow parent run {name} ({run.info.run_id}): {record['url'] or uri}", flush=True)
    return run.info.run_id


def sweep_parent(sweep_dir: Path) -> Optional[dict]:
    """The sweep's parent run record (tracking.json), if it has one."""
    return read_json(Path(sweep_dir) / SWEEP_FILE)


def parent_for(tracking: DictConfig, sweep_dir: Path) -> Optional[str]:
    """The parent run id a job of the sweep in sweep_dir names: only when it tracks to the parent's store and
    experiment (MLflow nests runs within one experiment)."""
    parent = sweep_parent(sweep_dir)
    if parent is None or str(tracking.get("name")) != "mlflow":
        return None
    if store_uri(tracking.get("uri")) != parent["uri"] or tracking.experiment != parent["experiment"]:
        return None
    return parent["parent_run_id"]


def log_sweep_report(sweep_dir: Path, report_dir: Path) -> None:
    """The sweep's report files as the parent run's artifacts (report/)."""
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return
    try:
        _client(parent["uri"]).log_artifacts(parent["parent_run_id"], str(report_dir), "report")
    except Exception as err:
        print(f"fcft: warning: the report was not logged to MLflow: {err}", file=sys.stderr)


def end_sweep(sweep_dir: Path, outcomes: list) -> None:
    """A report writer (fcft/runs/sweep.py): the parent run gets sweep.json, the best acc_norm, and ends FINISHED, or
    FAILED when any job failed."""
    parent = sweep_parent(sweep_dir)
    if parent is None:
        return
    from mlflow.entities import Metric

    client, run_id = _client(parent["uri"]), parent["parent_run_id"]
    scores = [
        o.metrics["eval"]["acc_norm"]
        for o in outcomes
        if o.ok and o.metrics and (o.metrics.get("eval") or {}).get("acc_norm") is not None
    ]
    now = int(time.time() * 1000)
    values = {"jobs": len(outcomes), "jobs_failed": sum(not o.ok for o in outcomes)}
    if scores:
        values["best/eval/acc_norm"] = max(scores)
    try:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()], synchronous=True)
        if (Path(sweep_dir) / "sweep.json").is_file():
            client.log_artifact(run_id, str(Path(sweep_dir) / "sweep.json"))
        client.set_terminated(run_id, "FINISHED" if all(o.ok for o in outcomes) else "FAILED")
    except Exception as err:
        print(f"fcft: warning: the MLflow parent run {run_id} was not ended: {err}", file=sys.stderr)
