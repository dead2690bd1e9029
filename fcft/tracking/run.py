"""One fcft run's MLflow run: created before anything expensive starts, logged to by id, always ended.

What it gets, from rank 0 only; it ends FINISHED, FAILED (with error.json) or KILLED (Ctrl-C, a signal):
  params     the spec, flattened (model.name, method.learning_rate, ...): no secrets, since none enter the spec
  tags       fcft.run_dir, fcft.model / method / tuning / compute, mlflow.parentRunId in a multirun, the spec's
             tracking.tags, and the lineage tags of a run started from another (lineage.py)
  metrics    train/<key> at every logging step, eval/<key> at the end for each of fcft/eval/metrics.py's METRICS
             (and eval/<interval>_low / _high for those with a 95% interval); generate/<key> for GENERATE_METRICS
  artifacts  the run directory's spec.yaml, metrics.json, train_log.jsonl, spectrum.yaml, error.json, and eval/

fcft logs through MlflowClient with explicit run ids, from its own TrainerCallback, rather than with transformers'
MLflowCallback (report_to=mlflow): that one takes its settings from environment variables, reuses whatever
run is active, and logs asynchronously.

Tracking never holds a run hostage: a step's metrics get one short try (store.bounded); once the store stops
answering, steps are held back (train_log.jsonl has them too) and training goes on. At the end the held-back steps,
eval metrics and files are retried for FCFT_TRACKING_RETRY_S (30 s); if the store is still gone the run ends
anyway, saying what was not recorded and the command that records it from the run directory
(`python -m fcft.tracking record RUN_DIR`, collected.py). A run that fails or is interrupted while the store is
gone gets the same note, also in error.json: its MLflow run is never left RUNNING without a word.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.eval.metrics import GENERATE_METRICS, METRICS, generate_scalars
from fcft.tracking import store
from fcft.tracking.lineage import lineage_tags

log = logging.getLogger(__name__)

MAX_PARAMS, MAX_METRICS = 100, 1000  # per MlflowClient.log_batch call
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
STEP_TIMEOUT_S = 5  # one try for a training step's metrics; after a failure they are held back
CALL_TIMEOUT_S = 10  # one try for each call at the run's end
RETRY_PAUSE_S = 2.0
RETRY_SETTING, DEFAULT_RETRY_S = "FCFT_TRACKING_RETRY_S", 30.0


class Tracker:
    """The MLflow run of one fcft run; every call goes to it by id."""

    def __init__(self, client, uri: str, experiment_id: str, run_id: str, name: str):
        self.client, self.uri, self.experiment_id, self.run_id, self.name = client, uri, experiment_id, run_id, name
        self._step_failed = False
        self._unsent: list[tuple[dict, int]] = []  # step metrics held back once the store stopped answering

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
        """One trainer log record, in one try of at most STEP_TIMEOUT_S; never stops training. After a failure
        the steps are kept, not sent (train_log.jsonl has them too): finish() sends them."""
        values = {_train_key(k): v for k, v in logs.items()}
        if self._step_failed:
            self._unsent.append((values, step))
            return
        try:
            with store.bounded(self.uri, STEP_TIMEOUT_S):
                self._log_metrics(values, step)
        except Exception as err:  # a store gone away must not cost a training run
            log.warning(
                "MLflow at %s did not take the train metrics of step %d (%s): training goes on; the steps are "
                "kept and sent when the run ends",
                self.uri,
                step,
                _first_line(err),
            )
            self._step_failed = True
            self._unsent.append((values, step))

    def log_history(self, records: list[dict], logged: Optional[dict] = None) -> None:
        """A finished run's trainer log history (train_log.jsonl), step by step; `logged` ({key: steps}) holds
        what the run already has, which is not sent again."""
        logged = logged or {}
        for record in records:
            step = record.get("step", 0)
            values = {_train_key(k): v for k, v in record.items() if k != "step"}
            self._log_metrics({k: v for k, v in values.items() if step not in logged.get(k, ())}, step)

    def complete(self, run_dir: Path, metrics: Optional[dict], status: str) -> None:
        """Complete this MLflow run from run_dir's files (collected.py): the step and eval metrics it lacks, the
        artifacts, then `status`."""
        run = self.client.get_run(self.run_id)
        history = rundir.read_jsonl(Path(run_dir) / rundir.TRAIN_LOG)
        keys = {_train_key(key) for record in history for key in record if key != "step"}
        logged = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)} for key in keys}
        self.log_history(history, logged)
        if metrics is not None:
            steps = (metrics.get("train") or {}).get("steps") or 0
            evals = _eval_metrics(metrics)
            self._log_metrics({k: v for k, v in evals.items() if k not in run.data.metrics}, steps)
        self._log_files(run_dir)
        self.client.set_terminated(self.run_id, status)

    def finish(self, run_dir: Path, metrics: dict) -> bool:
        """Held-back step metrics, eval metrics and the run directory's files, then FINISHED. A store that doesn't
        answer is retried for FCFT_TRACKING_RETRY_S (default 30 s), then the run ends anyway, saying what was not
        recorded and the command that records it later. Whether everything was recorded; never raises for a
        store that can't be reached."""
        steps = (metrics.get("train") or {}).get("steps") or 0
        parts = [(f"train metrics from step {self._unsent[0][1]}", self._send_unsent)] if self._unsent else []
        parts += [
            ("eval metrics", lambda: self._log_metrics(_eval_metrics(metrics), steps)),
            ("artifacts", lambda: self._log_files(run_dir)),
            ("end (FINISHED)", lambda: self.client.set_terminated(self.run_id, "FINISHED")),
        ]
        left, err = self._send(parts, retry_s())
        if left:
            self._not_recorded(run_dir, left, err)
        return not left

    def fail(self, run_dir: Path, err: BaseException) -> None:
        """The files there are (spec.yaml, error.json...), then FAILED, or KILLED when interrupted (Ctrl-C, a
        signal: any BaseException that is not an Exception); one short try, never raises. When the store doesn't
        answer, error.json notes the MLflow run left open and the command that records it."""
        status = "FAILED" if isinstance(err, Exception) else "KILLED"
        parts = [
            ("artifacts", lambda: self._log_files(run_dir)),
            (f"end ({status})", lambda: self.client.set_terminated(self.run_id, status)),
        ]
        left, problem = [], None
        for part in parts:  # each tried once: the run's end even when its files did not go
            not_done, err_part = self._send([part], 0)
            left, problem = left + not_done, err_part or problem
        if left:
            self._not_recorded(run_dir, left, problem)

    def _send(self, parts: list, patience_s: float) -> tuple[list[str], Optional[Exception]]:
        """Call parts in order, each one try of at most CALL_TIMEOUT_S. A store that doesn't answer is tried again
        every RETRY_PAUSE_S for patience_s; a part the store refuses (an error answer) is skipped. (the names of
        the parts not done, the last error)."""
        deadline = time.monotonic() + patience_s
        parts, refused, err = list(parts), [], None
        while parts:
            try:
                with store.bounded(self.uri, CALL_TIMEOUT_S):
                    parts[0][1]()
                parts.pop(0)
                continue
            except Exception as problem:
                err = problem
            if _answered(err):
                refused.append(parts.pop(0)[0])
            elif time.monotonic() + RETRY_PAUSE_S > deadline:
                break
            else:
                time.sleep(RETRY_PAUSE_S)
        return refused + [name for name, _ in parts], err

    def _send_unsent(self) -> None:
        while self._unsent:
            values, step = self._unsent[0]
            self._log_metrics(values, step)
            self._unsent.pop(0)

    def _not_recorded(self, run_dir: Path, left: list[str], err: Optional[Exception]) -> None:
        """Say what this run's MLflow record lacks and how to complete it; note it in error.json when there is one."""
        command = record_command(run_dir)
        note = {**self.record, "not_recorded": left, "error": _first_line(err), "record_with": command}
        error_file = Path(run_dir) / rundir.ERROR
        error = rundir.read_json(error_file)
        if error is not None:
            rundir.write_json(error_file, {**error, "tracking": note})
        what = "refused them" if _answered(err) else "was unreachable"
        print(
            f"fcft: MLflow at {self.uri} {what} ({_first_line(err)}): this run's {_listed(left)} were "
            f"not recorded (MLflow run {self.run_id} is left open there); record them later with: {command}",
            file=sys.stderr,
            flush=True,
        )

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


def record_command(run_dir: Path) -> str:
    """The command that records (or completes) a run directory's MLflow run: fcft/tracking/__main__.py."""
    return f"python -m fcft.tracking record {shlex.quote(str(Path(run_dir).absolute()))}"


def retry_s() -> float:
    """How long the end of a run keeps trying a store that doesn't answer: $FCFT_TRACKING_RETRY_S, default 30."""
    try:
        return max(0.0, float(os.environ.get(RETRY_SETTING, DEFAULT_RETRY_S)))
    except ValueError:
        return DEFAULT_RETRY_S


def _answered(err: Exception) -> bool:
    """Whether the store answered with an error (a refused request: trying again won't help)."""
    from mlflow.exceptions import RestException

    return isinstance(err, RestException)


def _listed(names: list[str]) -> str:
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _first_line(err: Optional[BaseException]) -> str:
    """An MLflow error in a few words: urllib3's connection errors run to several hundred characters."""
    text = str(err).strip() if err is not None else ""
    if "Connection refused" in text or "Failed to establish a new connection" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text.lower():
        return "no answer in time"
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def start(spec, run_dir: Path, resumes: Optional[dict] = None) -> Optional[Tracker]:
    """Create the MLflow run of `spec` running in run_dir (None with tracking=none); TrackingError if the store
    can't be reached, before anything expensive has started. `resumes`: the running.json of a run killed in
    run_dir (fcft.rundir.RunDir.killed_run): its MLflow run, left RUNNING, ends KILLED and the new run links it."""
    t = spec.tracking
    if not store.tracking_on(t):
        return None
    uri = t.uri
    problem = store.arn_plugin_problem(uri)
    if problem:
        raise store.TrackingError(f"tracking.uri: {problem}")
    name = t.run_name or f"{spec.model.name}-{spec.method.name}-{spec.tuning.name}"
    try:
        client, experiment_id = store.open_experiment(uri, t.experiment)
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
    if resumes and resumes.get("mlflow_run_id") and resumes.get("mlflow_uri") == uri:
        _link_killed(client, resumes["mlflow_run_id"], tracker.run_id, experiment_id)
    where = store.run_url(uri, experiment_id, tracker.run_id) or f"{uri} (browse: mlflow ui --backend-store-uri {uri})"
    print(f"fcft: MLflow run {name} ({tracker.run_id}), experiment {t.experiment}: {where}", flush=True)
    return tracker


def _link_killed(client, killed: str, run_id: str, experiment_id: str) -> None:
    """The killed run's MLflow run ends KILLED (it was left RUNNING) and the resumed run names it; never raises."""
    try:
        if client.get_run(killed).info.status == "RUNNING":
            client.set_terminated(killed, "KILLED")
        client.set_tag(killed, "fcft.resumed_by_run_id", run_id)
        client.set_tag(run_id, "fcft.resumes_run_id", killed)
        note = f"Resumes run [{killed}](#/experiments/{experiment_id}/runs/{killed}), killed in this run directory."
        before = client.get_run(run_id).data.tags.get("mlflow.note.content")
        client.set_tag(run_id, "mlflow.note.content", f"{before}\n\n{note}" if before else note)
    except Exception as err:  # the store lost the old run, or refuses: the new run goes on
        log.warning("MLflow: the killed run %s was not linked to %s: %s", killed, run_id, err)


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


def _eval_metrics(metrics: dict) -> dict:
    """eval/<key> (and <interval>_low/_high) for every metric of METRICS; eval_base/<key> likewise for the
    starting model's score (eval.baseline); generate/<key> for GENERATE_METRICS (eval.generate)."""
    values = {}
    blocks = [("eval", METRICS), ("eval_base", METRICS), ("generate", GENERATE_METRICS)]
    for block, listed in blocks:
        ev = metrics.get(block) or {}
        ev = generate_scalars(ev) if block == "generate" else ev
        values.update({f"{block}/{metric.key}": ev.get(metric.key) for metric in listed if metric.key in ev})
        for metric in listed:
            if metric.interval and ev.get(metric.interval):
                values[f"{block}/{metric.interval}_low"], values[f"{block}/{metric.interval}_high"] = ev[
                    metric.interval
                ]
    return values


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
