"""One fcft run's MLflow run: created before anything expensive starts, logged to by id, always ended.

What it gets, from rank 0 only; it ends FINISHED, FAILED (with error.json) or KILLED (Ctrl-C):
  params     the spec, flattened (model.name, method.learning_rate, ...): no secrets, since none enter the spec
  tags       fcft.run_dir, fcft.model / method / tuning / compute, mlflow.parentRunId in a multirun, the spec's
             tracking.tags, and the lineage tags of a run started from another (lineage.py)
  metrics    train/<key> at every logging step, eval/<key> at the end for each of fcft/eval/metrics.py's METRICS
             (and eval/<interval>_low / _high for those with a 95% interval)
  artifacts  the run directory's spec.yaml, metrics.json, train_log.jsonl, spectrum.yaml, error.json, and eval/

fcft logs through MlflowClient with explicit run ids, from its own TrainerCallback, rather than with transformers'
MLflowCallback (report_to=mlflow): that one takes its settings from environment variables, reuses whatever
run is active, and logs asynchronously.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from enum import Enum
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.eval.metrics import METRICS
from fcft.tracking import store
from fcft.tracking.lineage import lineage_tags

log = logging.getLogger(__name__)

MAX_PARAMS, MAX_METRICS = 100, 1000  # per MlflowClient.log_batch call
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value


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
            "url": store.run_url(self.uri, self.experiment_id, self.run_id),
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
        for name in rundir.ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / rundir.EVAL).is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / rundir.EVAL), rundir.EVAL)


def start(spec, run_dir: Path) -> Optional[Tracker]:
    """Create the MLflow run of `spec` running in run_dir (None with tracking=none); TrackingError if the store
    can't be reached, before anything expensive has started."""
    t = spec.tracking
    if not store.tracking_on(t):
        return None
    uri = t.uri
    problem = store.arn_plugin_problem(uri)
    if problem:
        raise store.TrackingError(f"tracking.uri: {problem}")
    name = t.run_name or f"{spec.model.name}-{spec.method.name}-{spec.tuning.name}"
    try:
        client = store.connect(uri)
        experiment_id = store.experiment_id(client, t.experiment, uri)
        tags = {**_run_tags(spec, run_dir), **lineage_tags(client, spec.method.init_from)}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        params = _params(spec)
        for i in range(0, len(params), MAX_PARAMS):
            client.log_batch(run.info.run_id, params=params[i : i + MAX_PARAMS], synchronous=True)
    except store.TrackingError:
        raise
    except Exception as err:
        raise store.unreachable(uri, err) from err
    tracker = Tracker(client, uri, experiment_id, run.info.run_id, name)
    where = store.run_url(uri, experiment_id, tracker.run_id) or f"{uri} (browse: mlflow ui --backend-store-uri {uri})"
    print(f"fcft: MLflow run {name} ({tracker.run_id}), experiment {t.experiment}: {where}", flush=True)
    return tracker


def _run_tags(spec, run_dir: Path) -> dict:
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


def _params(spec) -> list:
    from mlflow.entities import Param

    return [
        Param(key, (value if isinstance(value, str) else json.dumps(value))[:MAX_PARAM_LENGTH])
        for key, value in _flatten(_plain(spec)).items()
        if key != "tracking.parent_run_id"
    ]


def _plain(spec) -> dict:
    """The spec as nested dicts, from a typed spec (dataclasses) or an OmegaConf DictConfig."""
    if dataclasses.is_dataclass(spec):
        return dataclasses.asdict(spec)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(spec, resolve=True)


def _flatten(node, prefix: str = "") -> dict:
    """{"model.name": ..., "method.learning_rate": ...}: nested keys joined by dots, Enum members as their values."""
    if isinstance(node, dict) and node:
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node.value if isinstance(node, Enum) else node}


def _train_key(key: str) -> str:
    """trainer log keys as MLflow metrics: loss -> train/loss; the end-of-training summary keeps its train_ name."""
    return key if key.startswith("train_") else f"train/{key}"


def _eval_metrics(ev: dict) -> dict:
    values = {f"eval/{metric.key}": ev.get(metric.key) for metric in METRICS}
    for metric in METRICS:
        if metric.interval and ev.get(metric.interval):
            values[f"eval/{metric.interval}_low"], values[f"eval/{metric.interval}_high"] = ev[metric.interval]
    return values


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
