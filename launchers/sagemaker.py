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
import itertools
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
from launchers.job_log import JobLog
from launchers.sagemaker_job import (
    CODE_SPEC,
    ENTRY,
    SOURCE_IGNORE,
    environment,
    extract,
    hyperparameters,
    inputs,
    job_spec_for,
    redacted,
    source_root,
    staged,
)
from launchers.sagemaker_settings import GPUS, check_settings

CALL_TRIES = 5  # tries of one AWS call on transient errors
QUOTA_WAIT_S = 300  # the longest wait between tries when the account's instance quota is in use
TERMINAL = ("Completed", "Failed", "Stopped")  # job.json's status starts with one of these: the job is over
FETCH = {"all": "model_artifacts", "metrics": "output_artifacts", "none": None}  # which archive collect() fetches
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
        max_parallel: Optional[int] = None,
        subnets: Optional[list] = None,
        security_group_ids: Optional[list] = None,
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
        self.max_parallel = max_parallel
        self.subnets, self.security_group_ids = list(subnets or []), list(security_group_ids or [])
        self._clients = aws.Clients()
        self._streaming = False
        self._log = JobLog(self._call)
        check_settings(self)

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
        gpus = GPUS.get(self.instance_type)
        if gpus is not None and c.num_processes is not None and c.num_processes > gpus and c.accelerator != "cpu":
            raise SpecError(
                f"compute.num_processes: {c.num_processes} processes per machine, and {self.instance_type} has "
                f"{gpus} GPU{'s' if gpus > 1 else ''}: set compute.num_processes={gpus} or null (one per GPU), or "
                "pick a larger instance type"
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

        self._streaming = True  # one job waited on here: its log streams to the terminal
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

        def checked(params, **_):  # the request as botocore is about to send it, held to SageMaker's API model
            aws.validate_request(params)
            request.update(params)

        session.boto_session.events.register("provide-client-params.sagemaker.CreateTrainingJob", checked)
        self._wait_for_a_slot(Path(run_dir))
        staging = self._staged(spec, Path(run_dir), session)
        with aws.aws_refusals("submit the job"), staging as (job, channels):
            trainer = self._trainer(session, spec, *job)
            for attempt in itertools.count(1):
                try:
                    trainer.train(input_data_config=channels, wait=False, logs=False)
                    break
                except Exception as err:
                    if aws.error_code(err) != "ResourceLimitExceeded" and not aws.transient(err):
                        raise
                    wait = max(self.poll_s, aws.backoff(attempt, QUOTA_WAIT_S))
                    print(
                        f"fcft: SageMaker says not now ({aws.error_code(err) or type(err).__name__}: the account's "
                        f"{self.instance_type} quota is in use, or AWS is busy); trying again in {wait:.0f} s "
                        "(launcher.max_parallel caps how many jobs a sweep runs at once)",
                        flush=True,
                    )
                    time.sleep(wait)
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
        """The job's state. A transient AWS error (throttling, an expired token, the network) is tried again with
        backoff and a fresh client, then reported as state Unknown, not done: a later poll asks again. A failed
        job's log tail is saved to run_dir (rundir.JOB_LOG) and printed."""
        run = rundir.RunDir(run_dir)
        record = run.job()
        try:
            job = self._call(record["region"], "describe_training_job", TrainingJobName=record["job_name"])
        except Exception as err:
            if not aws.transient(err):
                raise
            return jobs.JobStatus(
                "Unknown", False, detail=f"can't get its state for now: {aws.error_code(err) or err}"
            )
        state = job["TrainingJobStatus"]
        failed = DONE.get(state, False)
        reason = job.get("FailureReason") if failed else None
        status = jobs.JobStatus(state, state in DONE, failed, job.get("SecondaryStatus"), reason)
        if record.get("status") != status.describe():
            run.update_job(status=status.describe())
        if self._streaming:
            self._log.stream(run.path, record)
        if failed:
            self._log.save(run.path, record)
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
        planning = aws.planning_session(self.region, self.bucket)
        staging = self._staged(spec, Path(run_dir), planning, upload=False)
        with staging as (job, channels), aws.aws_refusals("build the job request"), aws.offline_role_check():
            trainer = self._trainer(planning, spec, *job, role=self._dry_run_role)
            # The SDK's own train(dry_run=True) validates but uploads the inputs and returns nothing.
            request = trainer._create_training_job_args(input_data_config=channels, boto3=True)
        aws.validate_request(request)
        request = redacted(request, self.secrets)
        if self.role is None:
            print(
                "fcft: RoleArn is a placeholder: set launcher.role (or FCFT_SAGEMAKER_ROLE) to your SageMaker "
                "execution role",
                flush=True,
            )
        rundir.write_json(Path(run_dir) / rundir.JOB_REQUEST, request)
        text = json.dumps(request, indent=2, default=str)
        print(f"fcft: dry run, nothing uploaded or submitted. CreateTrainingJob request:\n{text}", flush=True)
        return request

    # --- AWS calls that may have to wait -------------------------------------------------------------------------

    def _call(self, region: str, operation: str, service: str = "sagemaker", **params):
        """One AWS call, tried again on transient errors (throttling, expired token, network) with backoff, jitter
        and a fresh client (re-reading refreshed credentials); the last error is raised."""
        for attempt in range(1, CALL_TRIES + 1):
            try:
                return getattr(self._clients.get(region, service), operation)(**params)
            except Exception as err:
                if not aws.transient(err) or attempt == CALL_TRIES:
                    raise
                self._clients.drop(region, service)
                time.sleep(aws.backoff(attempt, self.poll_s))

    def _wait_for_a_slot(self, run_dir: Path) -> None:
        """launcher.max_parallel: wait until fewer than that many jobs of this sweep (run_dir's siblings) run."""
        if not self.max_parallel:
            return
        siblings = [d for d in run_dir.parent.iterdir() if d != run_dir and (d / rundir.JOB).is_file()]
        told = False
        while True:
            running = [
                d for d in siblings if not (rundir.RunDir(d).job() or {}).get("status", "").startswith(TERMINAL)
            ]
            running = [d for d in running if not self.status(d).done]
            if len(running) < self.max_parallel:
                return
            if not told:
                print(
                    f"fcft: {len(running)} jobs of this sweep are running (launcher.max_parallel="
                    f"{self.max_parallel}); waiting to submit {run_dir.name}",
                    flush=True,
                )
                told = True
            time.sleep(self.poll_s)

    @property
    def _dry_run_role(self) -> str:
        """launcher.role, or for a dry run without one a placeholder ARN (the SDK would look the role up on AWS)."""
        return self.role or "arn:aws:iam::111122223333:role/set-launcher.role"

    # --- the job ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _staged(self, spec: RunSpec, run_dir: Path, session, upload: bool = True):
        """((the code directory, the job's spec), the input channels) for `spec`, staged meanwhile (local inputs
        uploaded once per content, unless `upload` is false: a dry run); the SDK's logging quieted."""
        given = inputs(spec)
        job_spec = job_spec_for(spec, given, self.use_spot)

        def place(value: str) -> str:
            if "://" in value:
                return value
            s3 = session.boto_session.client("s3") if upload else None
            return aws.upload_once(s3, session.default_bucket(), self.prefix, Path(value))

        if spec.tracking.enabled:
            print(
                f"fcft: the job logs its MLflow run to {job_spec.tracking.uri}"
                if job_spec.tracking.enabled
                else f"fcft: the job can't reach the tracking store {spec.tracking.uri}; its MLflow run is recorded "
                "there when fcft collects the job's outputs",
                flush=True,
            )
        with staged(job_spec, given, run_dir, place) as (code_dir, channels), aws.sdk_logging():
            yield (code_dir, job_spec), channels

    def _trainer(self, session, spec: RunSpec, code_dir: str, job_spec: RunSpec, role: Optional[str] = None):
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            Networking,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
        )
        from sagemaker.train import ModelTrainer

        base = self._base_job_name(spec)
        root = f"s3://{session.default_bucket()}/{self.prefix}/{base}"
        return ModelTrainer(
            sagemaker_session=session,
            role=role or self.role,
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
            )
            if job_spec.compute.checkpoint_dir
            else None,
            output_data_config=OutputDataConfig(s3_output_path=root, compression_type="GZIP"),
            environment=self._environment(job_spec),
            hyperparameters=hyperparameters(spec),
            networking=Networking(subnets=self.subnets, security_group_ids=self.security_group_ids)
            if self.subnets
            else None,
        )

    def _environment(self, job_spec: RunSpec) -> dict:
        return environment(job_spec, self.environment, self.secrets, self.instance_type)

    def _image(self, region: str) -> str:
        if self.image_uri:
            return self.image_uri
        return aws.pytorch_image(region, self.instance_type, self.framework_version, self.py_version)

    def _base_job_name(self, spec: RunSpec) -> str:
        """<base>-<6 hex>: unique per submission, so jobs of one sweep never collide; the SDK appends a
        timestamp, within SageMaker's 63 characters."""
        base = self.base_job_name or re.sub(r"[^a-zA-Z0-9-]+", "-", f"fcft-{spec.model.name}-{spec.method.name}")
        base = base.strip("-")[:40].strip("-")
        return f"{base}-{uuid.uuid4().hex[:6]}"
