"""The run directory: every file a run writes is named here, and written here atomically (a temporary file or
directory renamed into place), so a reader never sees half a file.

    spec.yaml            the validated spec; `python -m fcft.worker spec.yaml` re-runs it
    metrics.json         {"train", "eval", "data", "tracking"}: written last, so its presence means the run finished
    error.json           only when the run failed: the error's type, message (and traceback)
    running.json         while a run is in progress: its pid, host and start (created exclusively, removed at the end)
    train_log.jsonl      the trainer's log history, one record per logging step
    spectrum.yaml        Spectrum runs: the unfrozen-parameter patterns used
    model/               trained weights and tokenizer (a PEFT adapter for LoRA/QLoRA)
    eval/samples.jsonl   per test row: uuid, gold, predicted, predicted_norm, the log-likelihoods
    eval/confusion.png   the 4 x 4 confusion matrix
    eval/requests.jsonl  eval.write_requests=true: per row uuid, prompt, choices, gold index
    job.json             a submitted job (SageMaker): name, region, S3 locations, last state; job_spec.yaml beside it
    job_request.json     launcher.dry_run: the request that would have been sent
    job.log              a failed job's log (SageMaker: its CloudWatch streams)
    trainer/             the trainer's scratch directory (checkpoints go to compute.checkpoint_dir)
    stages.json          a job of an experiment: its stages, each a run directory below it
A sweep directory holds its jobs' run directories and tracking.json (the MLflow parent run) and sweep.json.

`claim` holds a directory for one run: a second run given the same directory is refused at once, naming the first
one's pid, and one that finds another run's outputs (a different spec.yaml) is refused unless told to overwrite;
the old outputs are cleared before the run starts, so a failed run never leaves results that look like its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

SPEC = "spec.yaml"
METRICS = "metrics.json"
ERROR = "error.json"
RUNNING = "running.json"
TRAIN_LOG = "train_log.jsonl"
SPECTRUM = "spectrum.yaml"
MODEL = "model"
EVAL = "eval"
SAMPLES = "eval/samples.jsonl"
CONFUSION = "eval/confusion.png"
REQUESTS = "eval/requests.jsonl"
SERVER_LOG = "eval/server.log"  # eval.generate.source=serve: the server fcft started
GENERATIONS = "eval/generations.jsonl"  # eval.generate: per row, the answer, its calls, outcome and verdict
JOB = "job.json"
JOB_SPEC = "job_spec.yaml"
JOB_REQUEST = "job_request.json"
JOB_LOG = "job.log"
TRAINER = "trainer"
STAGES = "stages.json"
HYDRA = ".hydra"
HYDRA_CONFIG = ".hydra/config.yaml"  # the composed config (with any experiment): fcft writes .hydra/ itself
HYDRA_OVERRIDES = ".hydra/overrides.yaml"  # the command-line overrides that made the run
SWEEP_TRACKING = "tracking.json"
SWEEP_SUMMARY = "sweep.json"

# The run's files an MLflow run keeps as artifacts (besides eval/).
ARTIFACTS = (SPEC, METRICS, TRAIN_LOG, SPECTRUM, ERROR)
# What a run leaves besides spec.yaml and .hydra/: cleared before a run that may replace them.
OUTPUTS = (METRICS, ERROR, TRAIN_LOG, SPECTRUM, MODEL, EVAL, JOB, JOB_SPEC, JOB_REQUEST, TRAINER, STAGES, ".model.tmp")
CLAIM_ENV = "FCFT_RUN_CLAIM"  # the token of the claim this process (or its parent) holds: nested claims pass


class RunDirError(RuntimeError):
    """A directory a run may not use: another run is in progress there, or it holds another run's outputs."""


def write_text(path: Path, text: str) -> Path:
    """Write `text` to path atomically; its folder is created."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_jsonl(path: Path, records) -> Path:
    return write_text(path, "".join(json.dumps(record, default=str) + "\n" for record in records))


def read_json(path: Path) -> Optional[dict]:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file ([] when it is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # ranks writing one file don't collide
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A fresh temporary directory beside `path` to fill; it replaces `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the directory from everyone else
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDir:
    """One run's directory: where each of its files lies, and reading and writing the JSON ones."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def finished(self) -> bool:
        """metrics.json (written last), no error.json, and no run in progress."""
        return self.not_finished() is None

    def not_finished(self) -> Optional[str]:
        """Why the directory holds no finished run (in progress, failed, interrupted, never started), or None."""
        running = self.running()
        if running is not None:
            return f"{self.path} holds a run in progress ({describe(running)})"
        failure = self.error()
        if failure is not None or (self.path / ERROR).is_file():
            failure = failure or {}
            return f"{self.path} holds a failed run ({failure.get('type', 'error')}: {failure.get('message', '')})"
        if not (self.path / METRICS).is_file():
            marker = read_json(self.path / RUNNING)
            if marker is not None:
                return f"{self.path} holds a run that was stopped before it finished ({describe(marker)})"
            return f"{self.path} holds no finished run (no {METRICS})"
        return None

    def note_running(self, **fields) -> None:
        """Add `fields` (e.g. the MLflow run's id) to the running.json of the run in progress here."""
        record = read_json(self.path / RUNNING)
        if record is not None:
            write_json(self.path / RUNNING, {**record, **fields})

    def killed_run(self) -> Optional[dict]:
        """The running.json of a run killed here (SIGKILL, a lost machine) that this run's claim replaced, or None."""
        return (read_json(self.path / RUNNING) or {}).get("replaced")

    def running(self) -> Optional[dict]:
        """running.json's record (pid, host, start) when its process still runs, else None."""
        record = read_json(self.path / RUNNING)
        return record if record is not None and _alive(record) else None

    @property
    def failed(self) -> bool:
        return (self.path / ERROR).is_file()

    def metrics(self) -> Optional[dict]:
        return read_json(self.path / METRICS)

    def write_metrics(self, metrics: dict) -> Path:
        return write_json(self.path / METRICS, metrics)

    def error(self) -> Optional[dict]:
        return read_json(self.path / ERROR)

    def write_error(
        self, err: BaseException | str, kind: Optional[str] = None, traceback: Optional[str] = None
    ) -> Path:
        """error.json: the error's type (or `kind`), its message, and the traceback when there is one."""
        record = {"type": kind or type(err).__name__, "message": str(err)}
        if traceback:
            record["traceback"] = traceback
        return write_json(self.path / ERROR, record)

    def job(self) -> Optional[dict]:
        return read_json(self.path / JOB)

    def write_job(self, record: dict) -> Path:
        return write_json(self.path / JOB, record)

    def update_job(self, **changes) -> dict:
        record = {**(self.job() or {}), **changes}
        self.write_job(record)
        return record


def describe(record: dict) -> str:
    """A running.json record in words: pid, host and start."""
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("start", 0)))
    return f"pid {record.get('pid')} on {record.get('host')} since {start}"


def _alive(record: dict) -> bool:
    """Whether the process a running.json names still runs (one on another host is taken to run)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def same_spec(path: Path, spec: dict) -> bool:
    """Whether the spec.yaml at path is `spec` (plain data): the same run. The sweep's parent run id may differ."""
    import yaml

    try:
        old = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False

    def comparable(data) -> dict:
        data = json.loads(json.dumps(data, default=str))  # tuples and enums as YAML reads them back
        if isinstance(data.get("tracking"), dict):
            data["tracking"].pop("parent_run_id", None)
        return data

    return isinstance(old, dict) and comparable(old) == comparable(spec)


@contextlib.contextmanager
def claim(path: Path, spec: Optional[dict] = None, overwrite: bool = False) -> Iterator[RunDir]:
    """Hold `path` for one run while the block runs: running.json (pid, host, start) is created exclusively and
    removed at the end. RunDirError when a live run holds it (naming its pid), or when it holds another run's
    outputs (its spec.yaml isn't `spec`) and not `overwrite`; otherwise the old outputs (OUTPUTS) are cleared.
    `spec`: the new run's spec as plain data; None: the directory's own spec.yaml (the same run again). A claim
    nested in one this process or its parent holds (the in-process worker, accelerate's ranks) passes through."""
    run_dir = RunDir(path)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUNNING
    held = read_json(marker)
    if held is not None and held.get("token") and held.get("token") == os.environ.get(CLAIM_ENV):
        yield run_dir
        return
    token = uuid.uuid4().hex
    _take(marker, {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(), "token": token})
    previous = os.environ.get(CLAIM_ENV)
    try:
        present = [name for name in OUTPUTS if (run_dir / name).exists()]
        if present and spec is not None and not overwrite and not same_spec(run_dir / SPEC, spec):
            raise RunDirError(
                f"{run_dir.path} holds another run's outputs ({', '.join(present)}); choose another directory "
                "(hydra.run.dir=...), or add overwrite=true to replace them"
            )
        for name in present:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        os.environ[CLAIM_ENV] = token
        yield run_dir
    finally:
        if previous is None:
            os.environ.pop(CLAIM_ENV, None)
        else:
            os.environ[CLAIM_ENV] = previous
        if (read_json(marker) or {}).get("token") == token:
            marker.unlink(missing_ok=True)


def _take(marker: Path, record: dict) -> None:
    """Create running.json with `record`, atomically and only if absent (a hard link fails on an existing name);
    a marker whose process has ended is replaced. RunDirError naming the live run that holds it."""
    tmp = marker.with_name(f".{marker.stem}.{os.getpid()}.{record['token']}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    try:
        for _ in range(2):
            try:
                os.link(tmp, marker)
                return
            except FileExistsError:
                held = read_json(marker)
                if held is not None and _alive(held):
                    raise RunDirError(
                        f"{marker.parent} is in use by another run ({describe(held)}); wait for it to end or "
                        f"choose another directory (if that process no longer runs, delete {marker})"
                    ) from None
                if held is not None:  # left by a run that was killed: kept in the new marker, for its MLflow run
                    record["replaced"] = {key: value for key, value in held.items() if key != "replaced"}
                    tmp.write_text(json.dumps(record) + "\n")
                marker.unlink(missing_ok=True)
        raise RunDirError(f"{marker.parent}: could not create {marker.name}; another run is starting there")
    finally:
        tmp.unlink(missing_ok=True)
