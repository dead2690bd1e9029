"""Run as an Amazon SageMaker training job, through the SageMaker Python SDK v3 `ModelTrainer`.

    python -m fcft launcher=sagemaker compute=ml.p4d.24xlarge               # submit, wait, fetch results
    python -m fcft launcher=sagemaker compute=ml.g5.2xlarge launcher.wait=false
    python -m fcft launcher=sagemaker compute=ml.g5.2xlarge launcher.dry_run=true   # print the request only

What a job gets (S3 keys under s3://<bucket>/<prefix>/<job base name>/):
  code channel    fcft's source (fcft/, launchers/, conf/, pyproject.toml, ...) and fcft_job/spec.yaml: the
                  spec with its local paths rewritten to the job's (data -> /opt/ml/input/data/<channel>/<file>,
                  model.path -> /opt/ml/input/data/model, checkpoints -> /opt/ml/checkpoints)
  data channels   one per local file or directory the spec names (data.train_path -> channel `train`, ...);
                  hub datasets and models are passed by id and downloaded in the job
  command         python -m launchers.sagemaker_entry fcft_job/spec.yaml: installs fcft, then runs the worker
                  under `accelerate launch` with one process per GPU of each instance, into /opt/ml/model
  checkpoints     <...>/checkpoints <-> /opt/ml/checkpoints (CheckpointConfig): a restarted spot job resumes
  environment     launcher.environment, MLFLOW_TRACKING_URI (when the job tracks), and the secrets named by
                  launcher.secrets, read from this process's environment at submission. Secrets go into the
                  job's environment only: never into spec.yaml, job.json, the dry-run print or the logs.
  tracking        a job logs its MLflow run to the spec's tracking.uri when it can reach it (an http(s) server
                  that isn't this machine's loopback, a SageMaker MLflow ARN, a database); with a store only
                  this machine has (the embedded SQLite file), the job runs with tracking=none and fcft records
                  its MLflow run here when it collects the outputs (fcft/tracking/, record_collected)
  outputs         <...>/<job name>/output/model.tar.gz: the job's run directory (metrics.json, model/, ...);
                  output.tar.gz beside it: the same without model/

The run directory here gets job.json (the job's name, region, S3 locations and last state), job_spec.yaml
(the spec as shipped) and, once the job is collected (launcher.fetch), its metrics.json and outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import yaml

from fcft import rundir
from fcft.runs import jobs
from fcft.spec import RunSpec, SpecError

JOB_ROOT = "/opt/ml"  # the container's SageMaker directory tree
JOB_SPEC = "fcft_job/spec.yaml"  # in the code channel
ENTRY = "python -m launchers.sagemaker_entry"
CHANNELS = {
    ("data", "train_path"): "train",
    ("data", "pref_path"): "pref",
    ("data", "test_path"): "test",
    ("model", "path"): "model",
}
SOURCE = ("fcft", "launchers", "conf", "pyproject.toml", "README.md", "constraints.txt")
SOURCE_IGNORE = ("__pycache__", "*.pyc", "*.egg-info", ".DS_Store", ".pytest_cache")
FETCH = ("all", "metrics", "none")  # model.tar.gz, output.tar.gz, or only their S3 URIs
# The SageMaker SDK's in-job environment dump masks variables whose names hold one of these words.
MASKED_WORDS = ("SECRET", "PASSWORD", "KEY", "TOKEN", "PRIVATE", "CREDS", "CREDENTIALS")
MAX_RUNTIME_S = 28 * 24 * 3600  # SageMaker's limit for a training job
DONE = {"Completed": False, "Failed": True, "Stopped": True}  # terminal state -> failed?
# Loggers quieted while fcft talks to AWS: botocore logs whole requests (the job's environment included)
# at DEBUG, the SDK its request at DEBUG; their INFO lines (credentials found, config files) are noise here.
QUIET_LOGGERS = {
    "botocore": logging.WARNING,
    "boto3": logging.WARNING,
    "urllib3": logging.WARNING,
    "sagemaker.config": logging.WARNING,
    "sagemaker": logging.INFO,
    "sagemaker.core.utils.utils": logging.INFO,
}


class SageMakerLauncher:
    """Settings are the `launcher.*` keys of conf/launcher/sagemaker.yaml."""

    def __init__(
        self,
        *,
        region: Optional[str] = None,
        role: Optional[str] = None,
        bucket: Optional[str] = None,
        prefix: str = "fcft",
        image_uri: Optional[str] = None,
        framework_version: str = "2.6.0",
        py_version: str = "py312",
        base_job_name: Optional[str] = None,
        wait: bool = True,
        dry_run: bool = False,
        poll_s: float = 30.0,
        fetch: str = "all",
        environment: Optional[dict] = None,
        secrets: tuple | list = ("HF_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"),
        instance_type: Optional[str] = None,
        instance_count: int = 1,
        volume_size_gb: int = 100,
        max_runtime_s: int = 86400,
        use_spot: bool = False,
        max_wait_s: Optional[int] = None,
    ):
        self.region, self.role, self.bucket = region, role, bucket
        self.prefix = prefix.strip("/")
        self.image_uri, self.framework_version, self.py_version = image_uri, framework_version, py_version
        self.base_job_name, self.wait, self.dry_run = base_job_name, wait, dry_run
        self.poll_s, self.fetch = poll_s, fetch
        if environment is not None and not isinstance(environment, dict):
            raise SpecError(f"launcher.environment: a mapping of variable names to values, got {environment!r}")
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.secrets = [secrets] if isinstance(secrets, str) else list(secrets)
        self.instance_type, self.instance_count, self.volume_size_gb = instance_type, instance_count, volume_size_gb
        self.max_runtime_s, self.use_spot, self.max_wait_s = max_runtime_s, use_spot, max_wait_s
        self._clients: dict = {}
        self._check_settings()

    # --- the launcher protocol (launchers/__init__.py) --------------------------------------------------

    def check(self, spec: RunSpec) -> None:
        c = spec.compute
        if self.instance_type is None:
            raise SpecError(
                f"launcher.instance_type: launcher=sagemaker needs a SageMaker instance type and "
                f"compute={c.name} sets none; pick compute=ml.g5.2xlarge, ml.g5.12xlarge, "
                "ml.p4d.24xlarge or ml.p5.48xlarge (or set launcher.instance_type)"
            )
        if spec.trains and c.num_processes is not None:
            spec.method.accumulation_steps(c.num_processes * self.instance_count)  # the global batch must divide
        if c.checkpoint_dir is not None:
            raise SpecError(
                "compute.checkpoint_dir: a SageMaker job checkpoints to /opt/ml/checkpoints, synced "
                "to S3; leave compute.checkpoint_dir null"
            )
        _source_root()
        self._image(self._region(), self.instance_type)

    def launch(self, spec: RunSpec, run_dir: Path) -> Optional[dict]:
        if self.dry_run:
            self.print_request(spec, run_dir)
            return None
        self.submit(spec, run_dir)
        if not self.wait:
            return None
        from fcft.runs.sweep import finish

        try:
            outcome = finish([Path(run_dir)], out=sys.stdout)[0]
        except KeyboardInterrupt:
            raise jobs.RunFailed(
                f"stopped waiting; the job goes on. Collect it later: python -m fcft.runs {run_dir}"
            ) from None
        if not outcome.ok:
            raise jobs.RunFailed(f"SageMaker job {outcome.job}: {outcome.status}")
        return outcome.metrics

    def submit(self, spec: RunSpec, run_dir: Path) -> None:
        """Upload the inputs and create the training job; never waits. Writes run_dir/job.json."""
        run_dir = Path(run_dir)
        session = self._session()
        request: dict = {}
        session.boto_session.events.register(
            "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: request.update(params)
        )
        with self._staged(spec, run_dir) as (trainer_args, channels), _sdk_logging(), _aws_refusals("submit the job"):
            trainer = self._trainer(session, **trainer_args)
            trainer.train(input_data_config=channels, wait=False, logs=False)
        name = request["TrainingJobName"]
        output = f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output"
        rundir.RunDir(run_dir).write_job(
            {
                "launcher": "sagemaker",
                "job_name": name,
                "region": session.boto_region_name,
                "console": f"https://{session.boto_region_name}.console.aws.amazon.com/sagemaker/home"
                f"?region={session.boto_region_name}#/jobs/{name}",
                "model_artifacts": f"{output}/model.tar.gz",
                "output_artifacts": f"{output}/output.tar.gz",
                "checkpoints": request.get("CheckpointConfig", {}).get("S3Uri"),
                "status": "Submitted",
                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "request": self._redacted(request),
            },
        )
        print(f"fcft: submitted SageMaker training job {name} in {session.boto_region_name}", flush=True)

    def status(self, run_dir: Path) -> jobs.JobStatus:
        record = rundir.RunDir(run_dir).job()
        job = self._client(record["region"]).describe_training_job(TrainingJobName=record["job_name"])
        state = job["TrainingJobStatus"]
        failed = DONE.get(state, False)
        reason = job.get("FailureReason") if failed else None
        status = jobs.JobStatus(state, state in DONE, failed, job.get("SecondaryStatus"), reason)
        if record.get("status") != status.describe():
            rundir.RunDir(run_dir).update_job(status=status.describe())
        return status

    def collect(self, run_dir: Path) -> Optional[dict]:
        """Bring a completed job's outputs into run_dir (launcher.fetch decides which); returns its metrics."""
        run_dir = Path(run_dir)
        record = rundir.RunDir(run_dir).job()
        archive = {"all": record["model_artifacts"], "metrics": record["output_artifacts"]}.get(self.fetch)
        if archive is None:
            return None
        s3 = self._client(record["region"], "s3")
        bucket, key = archive[len("s3://") :].split("/", 1)
        with tempfile.TemporaryDirectory(dir=run_dir, prefix=".fetch-") as tmp:
            local = Path(tmp) / "outputs.tar.gz"
            try:
                s3.download_file(bucket, key, str(local))
            except Exception as err:  # botocore ClientError 404, or no such bucket
                raise jobs.RunFailed(
                    f"job {record['job_name']} ended but its outputs can't be fetched from {archive}: {err}"
                ) from None
            _extract(local, run_dir)
        rundir.RunDir(run_dir).update_job(fetched=archive)
        metrics = run_dir / rundir.METRICS
        return json.loads(metrics.read_text()) if metrics.is_file() else None

    def print_request(self, spec: RunSpec, run_dir: Path) -> dict:
        """launcher.dry_run: the CreateTrainingJob request this spec makes, printed; nothing is uploaded or
        submitted (the S3 URIs are where the uploads would go)."""
        with (
            self._staged(spec, Path(run_dir)) as (trainer_args, channels),
            _sdk_logging(),
            _aws_refusals("build the job request"),
        ):
            trainer = self._trainer(_planning_session(self._boto_session(), self.bucket), **trainer_args)
            # The SDK's own train(dry_run=True) validates but uploads the inputs and returns nothing.
            request = self._redacted(trainer._create_training_job_args(input_data_config=channels, boto3=True))
        text = json.dumps(request, indent=2, default=str)
        rundir.write_json(Path(run_dir) / "job_request.json", request)
        print(f"fcft: dry run, nothing uploaded or submitted. CreateTrainingJob request:\n{text}", flush=True)
        return request

    # --- the job ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _staged(self, spec: RunSpec, run_dir: Path):
        """ModelTrainer arguments and input channels for `spec`, with the code channel staged in a temp dir."""
        from sagemaker.core.training.configs import InputData

        local_inputs = {
            channel: getattr(getattr(spec, group), key)
            for (group, key), channel in CHANNELS.items()
            if getattr(getattr(spec, group), key) is not None and "://" not in getattr(getattr(spec, group), key)
        }
        job_spec = job_spec_for(spec, local_inputs)
        if spec.tracking.enabled:
            print(
                f"fcft: the job logs its MLflow run to {job_spec.tracking.uri}"
                if job_spec.tracking.enabled
                else f"fcft: the job can't reach the tracking store {spec.tracking.uri}; its MLflow run is recorded "
                "there when fcft collects the job's outputs",
                flush=True,
            )
        job_spec_text = yaml.safe_dump(job_spec.to_dict(), sort_keys=False)
        rundir.write_text(run_dir / rundir.JOB_SPEC, job_spec_text)
        with tempfile.TemporaryDirectory(prefix="fcft-code-") as code:
            _stage_source(Path(code))
            (Path(code) / JOB_SPEC).parent.mkdir(parents=True)
            (Path(code) / JOB_SPEC).write_text(job_spec_text)
            args = dict(spec=spec, code_dir=code, job_spec=job_spec)
            yield args, [InputData(channel_name=channel, data_source=path) for channel, path in local_inputs.items()]

    def _trainer(self, session, spec: RunSpec, code_dir: str, job_spec: RunSpec):
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
        )
        from sagemaker.train import ModelTrainer

        base = self._base_job_name(spec)
        root = f"s3://{session.default_bucket()}/{self.prefix}/{base}"
        return ModelTrainer(
            sagemaker_session=session,
            role=self.role,
            base_job_name=base,
            input_s3_key_prefix=f"{self.prefix}/{base}",
            training_image=self._image(session.boto_region_name, self.instance_type),
            source_code=SourceCode(
                source_dir=code_dir, command=ENTRY, args=[JOB_SPEC], ignore_patterns=list(SOURCE_IGNORE)
            ),
            compute=Compute(
                instance_type=self.instance_type,
                instance_count=self.instance_count,
                volume_size_in_gb=self.volume_size_gb,
                enable_managed_spot_training=self.use_spot or None,
            ),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=self.max_runtime_s,
                max_wait_time_in_seconds=self.max_wait_s if self.use_spot else None,
            ),
            checkpoint_config=CheckpointConfig(
                s3_uri=f"{root}/checkpoints", local_path=job_spec.compute.checkpoint_dir
            ),
            output_data_config=OutputDataConfig(s3_output_path=root, compression_type="GZIP"),
            environment=self._environment(job_spec),
            hyperparameters=_hyperparameters(spec),
        )

    def _environment(self, job_spec: RunSpec) -> dict:
        env = {**self.environment, "PYTHONUNBUFFERED": "1"}
        if job_spec.tracking.enabled:  # also tells the entry script to install sagemaker-mlflow for an ARN
            env["MLFLOW_TRACKING_URI"] = job_spec.tracking.uri
        for name in self.secrets:
            value = os.environ.get(name) or (_stored_hf_token() if name == "HF_TOKEN" else None)
            if value:
                env[name] = value
        return env

    def _redacted(self, request: dict) -> dict:
        """The request with the secrets' values masked: what may be printed and written."""
        request = json.loads(json.dumps(request, default=str))
        env = request.get("Environment") or {}
        for name in self.secrets:
            if name in env:
                env[name] = "***"
        return request

    def _base_job_name(self, spec: RunSpec) -> str:
        """<base>-<6 hex>: unique per submission, so jobs of one sweep never collide; the SDK appends a
        timestamp, within SageMaker's 63 characters."""
        base = self.base_job_name or f"fcft-{spec.model.name}-{spec.method.name}"
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:40].strip("-")
        return f"{base}-{uuid.uuid4().hex[:6]}"

    # --- AWS ----------------------------------------------------------------------------------------------

    def _region(self) -> str:
        region = self._boto_session().region_name
        if not region:
            raise SpecError(
                "launcher.region: no AWS region: set launcher.region (e.g. us-east-1), AWS_REGION or "
                "AWS_DEFAULT_REGION, or `region` in ~/.aws/config"
            )
        return region

    def _boto_session(self):
        import boto3

        return boto3.Session(region_name=self.region)

    def _session(self):
        from sagemaker.core.helper.session_helper import Session

        with _sdk_logging(), _aws_refusals("open a SageMaker session"):
            return Session(boto_session=self._boto_session(), default_bucket=self.bucket)

    def _client(self, region: str, service: str = "sagemaker"):
        if (region, service) not in self._clients:
            import boto3

            with _sdk_logging():
                self._clients[region, service] = boto3.Session(region_name=region).client(service)
        return self._clients[region, service]

    def _image(self, region: str, instance_type: str) -> str:
        if self.image_uri:
            return self.image_uri
        from sagemaker.core import image_uris

        try:
            return image_uris.retrieve(
                framework="pytorch",
                region=region,
                version=self.framework_version,
                py_version=self.py_version,
                image_scope="training",
                instance_type=instance_type,
            )
        except ValueError as err:
            raise SpecError(
                f"launcher.image_uri: the SageMaker SDK knows no PyTorch {self.framework_version} "
                f"{self.py_version} training image in {region} ({err}); set launcher.image_uri to an "
                "ECR image URI, or launcher.framework_version / launcher.py_version"
            ) from None

    def _check_instance(self) -> None:
        """The job's machines, disk, time limits and spot capacity (set by the compute=ml.* presets)."""
        if self.instance_type is not None and not re.fullmatch(r"ml\.[a-z0-9-]+\.[a-z0-9-]+", self.instance_type):
            raise SpecError(
                f"launcher.instance_type: '{self.instance_type}' is not a SageMaker instance type (like ml.g5.2xlarge)"
            )
        for key in ("instance_count", "volume_size_gb"):
            if getattr(self, key) < 1:
                raise SpecError(f"launcher.{key}: must be >= 1, got {getattr(self, key)}")
        if not 1 <= self.max_runtime_s <= MAX_RUNTIME_S:
            raise SpecError(
                f"launcher.max_runtime_s: must be in [1, {MAX_RUNTIME_S}] (28 days), got {self.max_runtime_s}"
            )
        if self.use_spot and (self.max_wait_s is None or self.max_wait_s < self.max_runtime_s):
            raise SpecError(
                f"launcher.max_wait_s: spot training needs max_wait_s >= max_runtime_s ({self.max_runtime_s}), "
                f"got {self.max_wait_s}"
            )
        if not self.use_spot and self.max_wait_s is not None:
            raise SpecError(
                "launcher.max_wait_s: applies to spot training only: set launcher.use_spot=true or max_wait_s=null"
            )

    def _check_settings(self) -> None:
        self._check_instance()
        if self.fetch not in FETCH:
            raise SpecError(f"launcher.fetch: '{self.fetch}' is not one of {', '.join(FETCH)}")
        if not self.poll_s > 0:
            raise SpecError(f"launcher.poll_s: must be > 0, got {self.poll_s}")
        for name in self.environment:
            if any(word in name.upper() for word in MASKED_WORDS):
                raise SpecError(
                    f"launcher.environment.{name}: looks like a secret, and launcher settings are "
                    f"written to spec.yaml; export {name} in your shell and list it in launcher.secrets"
                )
        for name in self.secrets:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
                raise SpecError(f"launcher.secrets: '{name}' is not an environment variable name")
            if not any(word in name.upper() for word in MASKED_WORDS):
                raise SpecError(
                    f"launcher.secrets: '{name}' would be shown in the job's log (the SageMaker "
                    f"SDK masks only names holding {', '.join(MASKED_WORDS)}); pass it in "
                    "launcher.environment if it is not secret"
                )


def job_spec_for(spec: RunSpec, local_inputs: dict) -> RunSpec:
    """The spec as it runs in the job: local inputs read from their channels, checkpoints to the synced
    directory, the worker run in place (the job itself is the machine), and MLflow tracking only to a store
    the job can reach (else the run is recorded here at collection)."""
    from fcft.spec.options import NoTracking
    from fcft.spec.uris import reachable_from_elsewhere

    groups = {group: dataclasses.asdict(getattr(spec, group)) for group in {group for group, _ in CHANNELS}}
    for (group, key), channel in CHANNELS.items():
        if channel in local_inputs:
            local = Path(local_inputs[channel])
            groups[group][key] = f"{JOB_ROOT}/input/data/{channel}" + ("" if local.is_dir() else f"/{local.name}")
    tracking = spec.tracking
    if tracking.enabled and not reachable_from_elsewhere(tracking.uri):
        tracking = NoTracking()
    return spec.replace(
        **{group: dataclasses.replace(getattr(spec, group), **values) for group, values in groups.items()},
        compute=dataclasses.replace(spec.compute, checkpoint_dir=f"{JOB_ROOT}/checkpoints"),
        launcher={"_target_": "launchers.local.LocalLauncher"},
        tracking=tracking,
    )


def _hyperparameters(spec: RunSpec) -> dict:
    """What the SageMaker console shows for the job: the spec's location and the options and values that
    set the training apart (the job reads its spec file, not these)."""
    plain = spec.to_dict()
    values = {"fcft_spec": f"{JOB_ROOT}/input/data/code/{JOB_SPEC}"}
    values.update({group: str(plain[group]["name"]) for group in ("model", "method", "tuning", "compute")})
    for group in ("method", "tuning"):
        for key, value in plain[group].items():
            if key != "name":
                values[f"{group}.{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return values


def _source_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise SpecError(
            f"launcher: launcher=sagemaker ships fcft's source to the job and {root} is not a source "
            "checkout (no pyproject.toml); install fcft from a clone with pip install -e ."
        )
    return root


def _stage_source(target: Path) -> None:
    root = _source_root()
    for name in SOURCE:
        path = root / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns(*SOURCE_IGNORE))
        elif path.is_file():
            shutil.copy2(path, target / name)


def _extract(archive: Path, run_dir: Path) -> None:
    """Unpack a job's outputs into run_dir, metrics.json last; the local spec.yaml stays as it is."""
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


def _planning_session(boto_session, bucket: Optional[str]):
    """A SageMaker Session that says where uploads would go and uploads nothing (for launcher.dry_run)."""
    from sagemaker.core.helper.session_helper import Session

    class PlanningSession(Session):
        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            uri = f"s3://{bucket or self.default_bucket()}/{key_prefix}"
            return f"{uri}/{os.path.basename(path)}" if os.path.isfile(path) else uri

        def default_bucket(self):
            return self._default_bucket_name_override or f"sagemaker-{self.boto_region_name}-<account id>"

    return PlanningSession(boto_session=boto_session, default_bucket=bucket)


@contextlib.contextmanager
def _sdk_logging():
    """While fcft talks to AWS: QUIET_LOGGERS at their levels or above, and without the SDK's warning that
    hyperparameters don't reach a `command` (fcft's are for the console; the job reads its spec file)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    moot = _DropMessage("Hyperparameters are set but are not passed")
    for logger, least in zip(loggers, QUIET_LOGGERS.values()):
        logger.setLevel(max(logger.getEffectiveLevel(), least))
        logger.addFilter(moot)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
            logger.removeFilter(moot)


@contextlib.contextmanager
def _aws_refusals(doing: str):
    """Errors from AWS or the SDK (no credentials, access denied, a quota, an unknown role) end the run
    with their message, not a traceback through the SDK."""
    try:
        yield
    except Exception as err:
        from_aws = isinstance(err, ValueError) or type(err).__module__.split(".")[0] in (
            "botocore",
            "boto3",
            "sagemaker",
        )
        if isinstance(err, SpecError) or not from_aws:
            raise
        raise jobs.RunFailed(f"couldn't {doing} on SageMaker: {type(err).__name__}: {err}") from err


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)
