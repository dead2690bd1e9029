"""What a SageMaker training job gets, and what comes back from it.

S3 keys lie under s3://<bucket>/<prefix>/<job base name>/:
  code channel    fcft's source (SOURCE) and CODE_SPEC, the spec as it runs in the job (`job_spec_for`): local
                  paths rewritten to the job's (data -> /opt/ml/input/data/<channel>/<file>, model.path ->
                  /opt/ml/input/data/model, checkpoints -> /opt/ml/checkpoints, synced to <...>/checkpoints)
  data channels   one per file, directory or s3:// URI the spec names (CHANNELS: data, model.path, init_from,
                  the Spectrum file); a local input goes to s3://<bucket>/<prefix>/inputs/<content hash>/ once, and
                  every job of a sweep reads that copy; hub ids are downloaded in the job
  command         ENTRY CODE_SPEC (launchers/sagemaker_entry.py): installs fcft, runs the worker
  environment     launcher.environment, MLFLOW_TRACKING_URI when the job can reach the store (else fcft records
                  the run at collection), and the secrets named by launcher.secrets, read from this process's
                  environment at submission: only ever in the job's environment, masked everywhere else
  outputs         <...>/<job name>/output/model.tar.gz (the job's run directory) and output.tar.gz (without the
                  model), unpacked into the local run directory by `extract`
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import yaml

from fcft import rundir
from fcft.spec import RunSpec, SpecError
from fcft.spec.options import NoTracking

JOB_ROOT = "/opt/ml"  # the container's SageMaker directory tree
CODE_SPEC = f"fcft_job/{rundir.SPEC}"  # the job's spec, in the code channel (sagemaker_entry.py skips fcft_job/)
ENTRY = "python -m launchers.sagemaker_entry"
CHANNELS = {  # the spec's file settings, and the input channel each becomes
    ("data", "train_path"): "train",
    ("data", "pref_path"): "pref",
    ("data", "test_path"): "test",
    ("model", "path"): "model",
    ("model", "chat_template"): "template",
    ("method", "init_from"): "init_from",
    ("tuning", "spectrum_file"): "spectrum",
}
INIT_FROM_ARCHIVE = "init_from"  # under JOB_ROOT: where the entry unpacks an init_from model.tar.gz from S3
SOURCE = ("fcft", "launchers", "conf", "pyproject.toml", "README.md", "constraints.txt")
SOURCE_IGNORE = ("__pycache__", "*.pyc", "*.egg-info", ".DS_Store", ".pytest_cache")
# The SageMaker SDK's in-job environment dump masks variables whose names hold one of these words.
MASKED_WORDS = ("SECRET", "PASSWORD", "KEY", "TOKEN", "PRIVATE", "CREDS", "CREDENTIALS")
EXTRAS = "fcft_job/extras.txt"  # beside CODE_SPEC: the pip extras of fcft the job installs (sagemaker_entry.py)
# Instance types with Elastic Fabric Adapter networking (AWS's list for SageMaker training). The EFA and NCCL
# variables of launcher.environment (the published recipe's, for p4d) go to these only: FI_PROVIDER=efa makes
# NCCL fail on an instance without EFA.
EFA_INSTANCES = frozenset(
    {
        "ml.p4d.24xlarge",
        "ml.p4de.24xlarge",
        "ml.p5.48xlarge",
        "ml.p5e.48xlarge",
        "ml.p5en.48xlarge",
        "ml.p6-b200.48xlarge",
        "ml.g5.48xlarge",
        "ml.g6.48xlarge",
        "ml.g6e.48xlarge",
        "ml.trn1.32xlarge",
        "ml.trn1n.32xlarge",
        "ml.trn2.48xlarge",
    }
)
EFA_VARIABLES = ("FI_", "NCCL_")  # prefixes of the variables that only mean something with EFA


def inputs(spec: RunSpec) -> dict[str, str]:
    """channel -> the local file or directory, or the s3:// URI, a spec's file setting names (hub ids are not
    shipped: the job downloads them; an MLflow run id in init_from was resolved to its run directory)."""
    found = {}
    for (group, key), channel in CHANNELS.items():
        value = getattr(getattr(spec, group), key, None)
        if value is not None:
            found[channel] = value
    record = rundir.RunDir(found["init_from"]).job() if "://" not in found.get("init_from", "://") else None
    if record and record.get("model_artifacts"):  # a SageMaker run: its model.tar.gz in S3, not its local copy
        found["init_from"] = record["model_artifacts"]
    return found


def job_path(channel: str, value: str) -> str:
    """Where the job finds a channel's input: its file in the channel directory, or the directory itself; an
    init_from model.tar.gz (a SageMaker job's output in S3) where the entry unpacks it."""
    where = f"{JOB_ROOT}/input/data/{channel}"
    if "://" in value:
        if channel == "init_from" and value.endswith(".tar.gz"):
            return f"{JOB_ROOT}/{INIT_FROM_ARCHIVE}"
        return where if value.endswith("/") else f"{where}/{value.rstrip('/').rsplit('/', 1)[-1]}"
    return where if Path(value).is_dir() else f"{where}/{Path(value).name}"


def checkpointing(spec: RunSpec, use_spot: bool) -> bool:
    """Whether the job checkpoints (to its directory synced to S3): where it pays, a spot job that may be
    interrupted and restarted, or a spec that asks for it (compute.checkpoint_steps set)."""
    return use_spot or spec.compute.checkpoint_steps is not None


def job_spec_for(spec: RunSpec, given: dict[str, str], use_spot: bool = False) -> RunSpec:
    """The spec as it runs in the job: its `given` inputs read from their channels, checkpoints to the synced
    directory, the worker run in place (the job itself is the machine), and MLflow tracking only to a store
    the job can reach (else the run is recorded here at collection)."""
    from fcft.spec.uris import reachable_from_elsewhere

    changes: dict[str, dict] = {}
    for (group, key), channel in CHANNELS.items():
        if channel in given:
            changes.setdefault(group, {})[key] = job_path(channel, given[channel])
    tracking = spec.tracking
    if tracking.enabled and not reachable_from_elsewhere(tracking.uri):
        tracking = NoTracking()
    return spec.replace(
        **{group: dataclasses.replace(getattr(spec, group), **values) for group, values in changes.items()},
        compute=dataclasses.replace(
            spec.compute, checkpoint_dir=f"{JOB_ROOT}/checkpoints" if checkpointing(spec, use_spot) else None
        ),
        launcher={"_target_": "launchers.local.LocalLauncher"},
        tracking=tracking,
    )


@contextlib.contextmanager
def staged(job_spec: RunSpec, given: dict[str, str], run_dir: Path, place) -> Iterator[tuple[str, list]]:
    """(the code directory, the input channels) of a job: the source and the job's spec staged in a temporary
    directory for the SDK to upload; each input at the S3 URI `place(path or URI)` gives it (a local one uploaded
    once per content). The job's spec is also kept in run_dir (rundir.JOB_SPEC)."""
    from sagemaker.core.training.configs import InputData

    text = yaml.safe_dump(job_spec.to_dict(), sort_keys=False)
    rundir.write_text(Path(run_dir) / rundir.JOB_SPEC, text)
    with tempfile.TemporaryDirectory(prefix="fcft-code-") as code:
        stage_source(Path(code))
        rundir.write_text(Path(code) / CODE_SPEC, text)
        rundir.write_text(Path(code) / EXTRAS, "".join(f"{extra}\n" for extra in extras(job_spec)))
        yield code, [InputData(channel_name=channel, data_source=place(value)) for channel, value in given.items()]


def extras(job_spec: RunSpec) -> list[str]:
    """fcft's pip extras (pyproject.toml) the job needs, and no more: bitsandbytes for 4-bit tunings, DeepSpeed for
    ZeRO-3, lm-eval for eval.backend=lm_eval, the server's packages for eval.generate.source=serve. (The
    sagemaker-mlflow plugin for an ARN comes from MLFLOW_TRACKING_URI: sagemaker_entry.py.)"""
    from fcft.spec.eval_options import EvalBackend, GenerateSource
    from fcft.spec.options import Strategy

    needed = []
    if job_spec.tuning.four_bit:
        needed.append("qlora")
    if job_spec.compute.strategy == Strategy.zero3:
        needed.append("deepspeed")
    if job_spec.eval.enabled and job_spec.eval.mcq and job_spec.eval.backend == EvalBackend.lm_eval:
        needed.append("eval")
    generate = job_spec.eval.generate
    if job_spec.eval.enabled and generate.enabled and generate.source == GenerateSource.serve:
        needed.append("serve")
    return needed


def hyperparameters(spec: RunSpec) -> dict:
    """What the SageMaker console shows for the job: the spec's location and the options and values that
    set the training apart (the job reads its spec file, not these)."""
    plain = spec.to_dict()
    values = {"fcft_spec": f"{JOB_ROOT}/input/data/code/{CODE_SPEC}"}
    values.update({group: str(plain[group]["name"]) for group in ("model", "method", "tuning", "compute")})
    for group in ("method", "tuning"):
        for key, value in plain[group].items():
            if key != "name":
                values[f"{group}.{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return values


def environment(job_spec: RunSpec, plain: dict, secrets: list[str], instance_type: Optional[str]) -> dict:
    """The job's environment: the plain variables (the EFA and NCCL ones on EFA instances only), the tracking URI
    when the job tracks, the secrets' values."""
    if instance_type not in EFA_INSTANCES:
        plain = {name: value for name, value in plain.items() if not name.startswith(EFA_VARIABLES)}
    env = {**plain, "PYTHONUNBUFFERED": "1"}
    if job_spec.tracking.enabled:  # also tells the entry script to install sagemaker-mlflow for an ARN
        env["MLFLOW_TRACKING_URI"] = job_spec.tracking.uri
    for name in secrets:
        value = os.environ.get(name) or (_stored_hf_token() if name == "HF_TOKEN" else None)
        if value:
            env[name] = value
    return env


def redacted(request: dict, secrets: list[str]) -> dict:
    """A CreateTrainingJob request with the secrets' values masked: what may be printed and written."""
    request = json.loads(json.dumps(request, default=str))
    env = request.get("Environment") or {}
    for name in secrets:
        if name in env:
            env[name] = "***"
    return request


def source_root() -> Path:
    """The source checkout shipped to the job; SpecError when fcft wasn't installed from one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise SpecError(
            f"launcher: launcher=sagemaker ships fcft's source to the job and {root} is not a source "
            "checkout (no pyproject.toml); install fcft from a clone with pip install -e ."
        )
    return root


def stage_source(target: Path) -> None:
    root = source_root()
    for name in SOURCE:
        path = root / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns(*SOURCE_IGNORE))
        elif path.is_file():
            shutil.copy2(path, target / name)


def extract(archive: Path, run_dir: Path) -> None:
    """Unpack a job's outputs into run_dir, its metrics last (they mark the run finished); the local spec stays."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.lstrip("./") not in ("", rundir.SPEC)]
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".unpack-"))
        tar.extractall(staging, members=members, filter="data")
    for path in sorted(staging.iterdir(), key=lambda p: p.name == rundir.METRICS):
        target = run_dir / path.name
        if target.is_dir():
            shutil.rmtree(target)
        path.replace(target)
    shutil.rmtree(staging)


def _stored_hf_token() -> Optional[str]:
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()
