"""The run directory: every file a run writes is named here, and written here atomically (a temporary file or
directory renamed into place), so a reader never sees half a file.

    spec.yaml            the validated spec; `python -m fcft.worker spec.yaml` re-runs it
    metrics.json         {"train", "eval", "data", "tracking"}: written last, so its presence means the run finished
    error.json           only when the run failed: the error's type, message (and traceback)
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
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

SPEC = "spec.yaml"
METRICS = "metrics.json"
ERROR = "error.json"
TRAIN_LOG = "train_log.jsonl"
SPECTRUM = "spectrum.yaml"
MODEL = "model"
EVAL = "eval"
SAMPLES = "eval/samples.jsonl"
CONFUSION = "eval/confusion.png"
REQUESTS = "eval/requests.jsonl"
JOB = "job.json"
JOB_SPEC = "job_spec.yaml"
JOB_REQUEST = "job_request.json"
JOB_LOG = "job.log"
TRAINER = "trainer"
STAGES = "stages.json"
HYDRA = ".hydra"
HYDRA_CONFIG = ".hydra/config.yaml"  # the composed config (with any experiment), as Hydra writes it
HYDRA_OVERRIDES = ".hydra/overrides.yaml"  # the command-line overrides that made the run
SWEEP_TRACKING = "tracking.json"
SWEEP_SUMMARY = "sweep.json"

# The run's files an MLflow run keeps as artifacts (besides eval/).
ARTIFACTS = (SPEC, METRICS, TRAIN_LOG, SPECTRUM, ERROR)


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
        return (self.path / METRICS).is_file() and not (self.path / ERROR).is_file()

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
