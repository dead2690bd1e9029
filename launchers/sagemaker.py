"""Run as an Amazon SageMaker training job, through the SageMaker Python SDK v3 `ModelTrainer`.

    python -m fcft launcher=sagemaker compute=ml.p4d.24xlarge               # submit, wait, fetch results
    python -m fcft launcher=sagemaker compute=ml.g5.2xlarge launcher.wait=false
    python -m fcft launcher=sagemaker compute=ml.g5.2xlarge launcher.dry_run=true   # print the request only

The launcher's settings are conf/launcher/sagemaker.yaml's keys, and the instance settings the compute=ml.*
presets set. What the job gets and gives back is in sagemaker_job.py, the AWS plumbing in aws.py. The run
directory here gets the job's record (rundir.JOB), the spec as shipped (rundir.JOB_SPEC) and, once the job is
collected (launcher.fetch), its outputs.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.runs import jobs
from fcft.spec import RunSpec, SpecError
from fcft.spec.options import Strategy
from launchers import aws
from launchers.sagemaker_job import (
    CODE_SPEC,
    ENTRY,
    MASKED_WORDS,
    SOURCE_IGNORE,
    environment,
    extract,
    hyperparameters,
    job_spec_for,
    local_inputs,
    redacted,
    source_root,
    staged,
)

FETCH = {"all": "model_artifacts", "metrics": "output_artifacts", "none": None}  # which archive collect() fetches
MAX_RUNTIME_S = 28 * 24 * 3600  # SageMaker's limit for a training job
DONE = {"Completed": False, "Failed": True, "Stopped": True}  # terminal state -> failed?


class SageMakerLauncher:
    """Settings are the `launcher.*` keys of conf/launcher/sagemaker.yaml and the compute=ml.* presets."""

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
        self._clients = aws.Clients()
        self._check_instance()
        self._check_settings()

    # --- the launcher protocol (fcft/runs/launch.py: Launcher, RemoteLauncher) ---------------------------------

    def check(self, spec: RunSpec) -> None:
        c = spec.compute
        if self.instance_type is None:
            raise SpecError(
                f"launcher.instance_type: launcher=sagemaker needs a SageMaker instance type and "
                f"compute={c.name} sets none; pick compute=ml.g5.2xlarge, ml.g5.12xlarge, "
                "ml.p4d.24xlarge or ml.p5.48xlarge (or set launcher.instance_type)"
            )
        if self.instance_count > 1 and c.strategy == Strategy.none:
            raise SpecError(
                f"launcher.instance_count: {self.instance_count} machines run {self.instance_count} processes and "
                f"compute.strategy 'none' runs one; pick a compute preset with strategy ddp or zero3 "
                "(compute=ml.g5.12xlarge, ...), or launcher.instance_count=1"
            )
        if spec.trains and c.num_processes is not None:
            spec.method.accumulation_steps(c.num_processes * self.instance_count)  # the global batch must divide
        if c.checkpoint_dir is not None:
            raise SpecError(
                "compute.checkpoint_dir: a SageMaker job checkpoints to /opt/ml/checkpoints, synced "
                "to S3; leave compute.checkpoint_dir null"
            )
        source_root()
        self._image(aws.region_of(aws.boto_session(self.region)))

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
        """Upload the inputs and create the training job; never waits. Writes the job's record into run_dir."""
        session = aws.sagemaker_session(self.region, self.bucket)
        request: dict = {}
        session.boto_session.events.register(
            "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: request.update(params)
        )
        with self._staged(spec, Path(run_dir)) as (job, channels), aws.aws_refusals("submit the job"):
            self._trainer(session, spec, *job).train(input_data_config=channels, wait=False, logs=False)
        name, region = request["TrainingJobName"], session.boto_region_name
        output = f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{name}/output"
        rundir.RunDir(run_dir).write_job(
            {
                "launcher": "sagemaker",
                "job_name": name,
                "region": region,
                "console": f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}",
                "model_artifacts": f"{output}/model.tar.gz",
                "output_artifacts": f"{output}/output.tar.gz",
                "checkpoints": request.get("CheckpointConfig", {}).get("S3Uri"),
                "status": "Submitted",
                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "request": redacted(request, self.secrets),
            },
        )
        print(f"fcft: submitted SageMaker training job {name} in {region}", flush=True)

    def status(self, run_dir: Path) -> jobs.JobStatus:
        record = rundir.RunDir(run_dir).job()
        job = self._clients.get(record["region"]).describe_training_job(TrainingJobName=record["job_name"])
        state = job["TrainingJobStatus"]
        failed = DONE.get(state, False)
        reason = job.get("FailureReason") if failed else None
        status = jobs.JobStatus(state, state in DONE, failed, job.get("SecondaryStatus"), reason)
        if record.get("status") != status.describe():
            rundir.RunDir(run_dir).update_job(status=status.describe())
        return status

    def collect(self, run_dir: Path) -> Optional[dict]:
        """Bring a completed job's outputs into run_dir (launcher.fetch decides which); returns its metrics."""
        run = rundir.RunDir(run_dir)
        record = run.job()
        if FETCH[self.fetch] is None:
            return None
        archive = record[FETCH[self.fetch]]
        bucket, key = archive[len("s3://") :].split("/", 1)
        with tempfile.TemporaryDirectory(dir=run.path, prefix=".fetch-") as tmp:
            local = Path(tmp) / "outputs.tar.gz"
            try:
                self._clients.get(record["region"], "s3").download_file(bucket, key, str(local))
            except Exception as err:  # botocore ClientError 404, or no such bucket
                raise jobs.RunFailed(
                    f"job {record['job_name']} ended but its outputs can't be fetched from {archive}: {err}"
                ) from None
            extract(local, run.path)
        run.update_job(fetched=archive)
        return run.metrics()

    def print_request(self, spec: RunSpec, run_dir: Path) -> dict:
        """launcher.dry_run: the CreateTrainingJob request this spec makes, printed and kept in run_dir; nothing is
        uploaded or submitted (the S3 URIs are where the uploads would go)."""
        with self._staged(spec, Path(run_dir)) as (job, channels), aws.aws_refusals("build the job request"):
            trainer = self._trainer(aws.planning_session(self.region, self.bucket), spec, *job)
            # The SDK's own train(dry_run=True) validates but uploads the inputs and returns nothing.
            request = redacted(trainer._create_training_job_args(input_data_config=channels, boto3=True), self.secrets)
        rundir.write_json(Path(run_dir) / rundir.JOB_REQUEST, request)
        text = json.dumps(request, indent=2, default=str)
        print(f"fcft: dry run, nothing uploaded or submitted. CreateTrainingJob request:\n{text}", flush=True)
        return request

    # --- the job ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _staged(self, spec: RunSpec, run_dir: Path):
        """((the code directory, the job's spec), the input channels) for `spec`, staged meanwhile; the SDK's
        logging quieted."""
        local = local_inputs(spec)
        job_spec = job_spec_for(spec, local)
        if spec.tracking.enabled:
            print(
                f"fcft: the job logs its MLflow run to {job_spec.tracking.uri}"
                if job_spec.tracking.enabled
                else f"fcft: the job can't reach the tracking store {spec.tracking.uri}; its MLflow run is recorded "
                "there when fcft collects the job's outputs",
                flush=True,
            )
        with staged(job_spec, local, run_dir) as (code_dir, channels), aws.sdk_logging():
            yield (code_dir, job_spec), channels

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
            training_image=self._image(session.boto_region_name),
            source_code=SourceCode(
                source_dir=code_dir, command=ENTRY, args=[CODE_SPEC], ignore_patterns=list(SOURCE_IGNORE)
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
            hyperparameters=hyperparameters(spec),
        )

    def _environment(self, job_spec: RunSpec) -> dict:
        return environment(job_spec, self.environment, self.secrets)

    def _image(self, region: str) -> str:
        if self.image_uri:
            return self.image_uri
        return aws.pytorch_image(region, self.instance_type, self.framework_version, self.py_version)

    def _base_job_name(self, spec: RunSpec) -> str:
        """<base>-<6 hex>: unique per submission, so jobs of one sweep never collide; the SDK appends a
        timestamp, within SageMaker's 63 characters."""
        base = self.base_job_name or f"fcft-{spec.model.name}-{spec.method.name}"
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:40].strip("-")
        return f"{base}-{uuid.uuid4().hex[:6]}"

    # --- settings ----------------------------------------------------------------------------------------------

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
        if self.fetch not in FETCH:
            raise SpecError(f"launcher.fetch: '{self.fetch}' is not one of {', '.join(FETCH)}")
        if not self.poll_s > 0:
            raise SpecError(f"launcher.poll_s: must be > 0, got {self.poll_s}")
        for name in self.environment:
            if any(word in name.upper() for word in MASKED_WORDS):
                raise SpecError(
                    f"launcher.environment.{name}: looks like a secret, and launcher settings are "
                    f"written to {rundir.SPEC}; export {name} in your shell and list it in launcher.secrets"
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
