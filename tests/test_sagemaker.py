"""The SageMaker launcher: the real SageMaker SDK v3 against moto (in-process, or a moto server on 127.0.0.1
for the command line). A job's CreateTrainingJob request is read where botocore hands it to the wire."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, compose

from fcft import rundir
from fcft import spec as run_spec
from fcft.runs import jobs
from fcft.runs.launch import make_launcher

pytest.importorskip("sagemaker.train")
moto = pytest.importorskip("moto")

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/FcftSageMaker"
BUCKET = "fcft-test-bucket"
SECRET = "hf_do_not_leak_0123456789"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312"
SAGEMAKER = ("launcher=sagemaker", f"launcher.role={ROLE}", f"launcher.bucket={BUCKET}")


@pytest.fixture
def aws(tmp_path, monkeypatch):
    """Fake credentials and the settings the SDK needs to run against moto; HF_TOKEN is a secret to guard."""
    settings = tmp_path / "sagemaker-config.yaml"
    settings.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "SAGEMAKER_VALIDATE_ROLE": "false",  # moto has no iam:SimulatePrincipalPolicy
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(settings),
        "HF_TOKEN": SECRET,
    }
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@contextmanager
def botocore_hook(event: str, handler):
    """Register `handler` for `event` on every botocore session created meanwhile (as moto does)."""
    from botocore.handlers import BUILTIN_HANDLERS

    BUILTIN_HANDLERS.append((event, handler))
    try:
        yield
    finally:
        BUILTIN_HANDLERS.remove((event, handler))


@contextmanager
def create_requests():
    """Every CreateTrainingJob request sent meanwhile (moto drops Environment, so read it here)."""
    sent: list[dict] = []
    with botocore_hook("provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(params)):
        yield sent


def sagemaker_spec(*overrides):
    return run_spec.validate(compose(*SAGEMAKER, *overrides))


def s3_objects(bucket=BUCKET, client=None):
    import boto3

    s3 = client or boto3.client("s3", region_name=REGION)
    return {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }


def assert_no_secret(*texts, run_dir=None, objects=None):
    for text in texts:
        assert SECRET not in text
    for path in run_dir.rglob("*") if run_dir else ():
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for key, body in (objects or {}).items():
        assert SECRET.encode() not in body, key


def test_submit_sends_the_request_the_spec_describes(aws, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # the SDK and botocore log whole requests at DEBUG
    spec = sagemaker_spec(
        "compute=ml.p4d.24xlarge",
        "launcher.wait=false",
        "launcher.use_spot=true",
        "launcher.max_wait_s=180000",
        "method.learning_rate=1e-4",
    )
    with moto.mock_aws(), create_requests() as sent:
        launcher = make_launcher(spec)
        assert launcher.launch(spec, tmp_path) is None
        objects = s3_objects()
    (request,) = sent
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 1, "VolumeSizeInGB": 96}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 90000, "MaxWaitTimeInSeconds": 180000}
    assert request["EnableManagedSpotTraining"] is True
    base = request["TrainingJobName"].rsplit("-", 1)[0]
    assert base.startswith("fcft-tiny-sft-")
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/fcft/{base}/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/fcft/{base}"
    hps = request["HyperParameters"]
    assert hps["fcft_spec"] == "/opt/ml/input/data/code/fcft_job/spec.yaml" and hps["method.learning_rate"] == "0.0001"
    assert request["Environment"]["HF_TOKEN"] == SECRET and request["Environment"]["NCCL_DEBUG"] == "WARN"

    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert set(channels) == {"train", "pref", "test", "code", "sm_drivers"}
    assert re.search(r"/fcft/inputs/[0-9a-f]{16}/train_sft\.jsonl$", channels["train"]), "uploaded once per content"
    for channel in ("train", "pref", "test"):  # the local files were uploaded where the channel points
        assert channels[channel].split(f"s3://{BUCKET}/", 1)[1] in objects
    code_prefix = channels["code"].split(f"s3://{BUCKET}/", 1)[1] + "/"
    code = {key[len(code_prefix) :] for key in objects if key.startswith(code_prefix)}
    assert {
        "fcft/spec/__init__.py",
        "launchers/sagemaker_entry.py",
        "conf/config.yaml",
        "pyproject.toml",
        "constraints.txt",
        "fcft_job/spec.yaml",
    } <= code
    assert not [p for p in code if p.startswith(("tests/", ".git", "outputs/")) or "__pycache__" in p]
    assert algorithm["ContainerEntrypoint"] == ["/bin/bash"]
    job_spec = run_spec.OmegaConf.create(objects[code_prefix + "fcft_job/spec.yaml"].decode())
    assert job_spec.data.train_path == "/opt/ml/input/data/train/train_sft.jsonl"
    assert job_spec.data.test_path == "/opt/ml/input/data/test/test.jsonl"
    assert job_spec.compute.checkpoint_dir == "/opt/ml/checkpoints"
    assert job_spec.launcher._target_ == "launchers.local.LocalLauncher"
    assert job_spec.method.learning_rate == 1e-4

    assert (tmp_path / rundir.JOB_SPEC).read_bytes() == objects[code_prefix + "fcft_job/spec.yaml"]  # kept here
    record = rundir.RunDir(tmp_path).job()
    assert record["job_name"] == request["TrainingJobName"] and record["region"] == REGION
    assert record["model_artifacts"] == f"s3://{BUCKET}/fcft/{base}/{request['TrainingJobName']}/output/model.tar.gz"
    assert record["request"]["Environment"]["HF_TOKEN"] == "***"
    out = capsys.readouterr()
    assert request["TrainingJobName"] in out.out
    assert_no_secret(out.out, out.err, caplog.text, run_dir=tmp_path, objects=objects)


def test_dry_run_prints_the_request_and_submits_nothing(aws, tmp_path, capsys):
    spec = sagemaker_spec("compute=ml.g5.2xlarge", "launcher.dry_run=true")
    with moto.mock_aws():
        import boto3

        assert make_launcher(spec).launch(spec, tmp_path) is None
        assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
        assert boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"] == []
    out = capsys.readouterr().out
    request = json.loads(out.split("CreateTrainingJob request:\n", 1)[1])
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["Environment"]["HF_TOKEN"] == "***"
    assert json.loads((tmp_path / rundir.JOB_REQUEST).read_text()) == request
    assert not (tmp_path / rundir.JOB).exists()
    assert_no_secret(out, run_dir=tmp_path)


def tarball(files: dict) -> bytes:
    """A .tar.gz of {name: JSON-able content or text}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            payload = (content if isinstance(content, str) else json.dumps(content)).encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def simulate_job(job_root: Path, request: dict, s3) -> None:
    """Play SageMaker's part for a created job: download its channels into <job_root>/input/data, run its
    command in the code channel (as sm_train.sh does), upload /opt/ml/model and /opt/ml/output/data."""
    for channel in request["InputDataConfig"]:
        bucket, prefix = channel["DataSource"]["S3DataSource"]["S3Uri"][5:].split("/", 1)
        for key in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]:
            relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[1]
            target = job_root / "input" / "data" / channel["ChannelName"] / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
    env = {
        **os.environ,
        **request["Environment"],
        "SM_MODEL_DIR": str(job_root / "model"),
        "SM_OUTPUT_DIR": str(job_root / "output"),
        "SM_OUTPUT_DATA_DIR": str(job_root / "output" / "data"),
        "SM_INPUT_CONFIG_DIR": str(job_root / "input" / "config"),
    }
    env.pop("PYTHONPATH", None)
    code = job_root / "input" / "data" / "code"
    source = json.loads((job_root / "input" / "data" / "sm_drivers" / "sourcecode.json").read_text())
    command = [sys.executable if w == "python" else w for w in source["command"].split()] + source["args"]
    result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = f"{request['OutputDataConfig']['S3OutputPath']}/{request['TrainingJobName']}/output"
    bucket, key = output[5:].split("/", 1)
    for name, folder in (("model.tar.gz", job_root / "model"), ("output.tar.gz", job_root / "output" / "data")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        s3.put_object(Bucket=bucket, Key=f"{key}/{name}", Body=buffer.getvalue())


def test_job_runs_from_what_was_uploaded_and_its_results_come_back(aws, tmp_path, monkeypatch, tiny_dir, capsys):
    """End to end: submit (wait=true), play the job from the S3 uploads with the entry script, fetch."""
    import launchers.sagemaker_job as sagemaker_job

    job_root = tmp_path / "opt" / "ml"
    monkeypatch.setattr(sagemaker_job, "JOB_ROOT", str(job_root))  # the container's /opt/ml, here
    spec = sagemaker_spec(
        "compute=ml.g5.2xlarge",
        "compute.accelerator=cpu",
        "launcher.poll_s=0.1",  # played on this CPU
        "method.max_steps=2",
        "method.per_device_train_batch_size=2",
        "method.gradient_accumulation_steps=1",
        "data.limit=16",
        "eval.limit=4",
        f"model.path={tiny_dir}",
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_spec.save(spec, run_dir / rundir.SPEC)
    with moto.mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name=REGION)
        with botocore_hook(
            "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: simulate_job(job_root, params, s3)
        ):
            metrics = make_launcher(spec).launch(spec, run_dir)
    assert metrics["train"]["steps"] == 2 and metrics["eval"]["n"] == 4
    assert rundir.RunDir(run_dir).metrics() == metrics
    assert (run_dir / rundir.MODEL / "model.safetensors").is_file() and (run_dir / rundir.SAMPLES).is_file()
    assert run_spec.load(run_dir / rundir.SPEC) == spec  # the local spec is kept, not the job's
    job_spec = run_spec.load(job_root / "model" / rundir.SPEC)  # the job read its inputs from its channels
    assert job_spec.model.path == f"{job_root}/input/data/model" and job_spec.data.train_path.startswith(str(job_root))
    # The job could not reach this machine's SQLite store: its MLflow run was recorded here when collected.
    assert job_spec.tracking.name == "none" and len(metrics["tracking"]["run_id"]) == 32
    record = rundir.RunDir(run_dir).job()
    assert record["status"] == "Completed" and record["fetched"] == record["model_artifacts"]
    out = capsys.readouterr().out
    assert record["job_name"] in out and "Completed" in out
    assert_no_secret(out, run_dir=run_dir)


def test_a_failed_job_raises_with_its_failure_reason(aws, tmp_path, capsys):
    spec = sagemaker_spec("compute=ml.g5.2xlarge", "launcher.poll_s=0.1")
    run_spec.save(spec, tmp_path / rundir.SPEC)  # as the command line does before launching
    from moto.sagemaker.models import sagemaker_backends

    def fail(http_response, **_):  # SageMaker's verdict on the job, set in moto's backend
        job = next(iter(sagemaker_backends["123456789012"][REGION].training_jobs.values()))
        job.training_job_status, job.secondary_status = "Failed", "Failed"
        job.failure_reason = "AlgorithmError: CUDA out of memory"

    with moto.mock_aws(), botocore_hook("after-call.sagemaker.CreateTrainingJob", fail):
        with pytest.raises(jobs.RunFailed, match="CUDA out of memory"):
            make_launcher(spec).launch(spec, tmp_path)
    assert rundir.RunDir(tmp_path).error()["type"] == "JobFailed"
    assert "Failed" in rundir.RunDir(tmp_path).job()["status"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("compute=cpu",), "launcher.instance_type: launcher=sagemaker needs a SageMaker instance type"),
        (("compute=ml.g5.2xlarge", "launcher.fetch=everything"), "launcher.fetch: 'everything' is not one of all"),
        (
            ("compute=ml.g5.2xlarge", "+launcher.environment.HF_TOKEN=x"),
            "launcher.environment.HF_TOKEN: looks like a secret",
        ),
        (
            ("compute=ml.g5.2xlarge", "launcher.secrets=[WANDB_ENTITY]"),
            "launcher.secrets: 'WANDB_ENTITY' would be shown",
        ),
        (
            ("compute=ml.g5.2xlarge", "launcher.py_version=py27"),
            "launcher.image_uri: the SageMaker SDK knows no PyTorch",
        ),
        (
            ("compute=ml.g5.2xlarge", "compute.checkpoint_dir=/tmp/ck"),
            "compute.checkpoint_dir: a SageMaker job checkpoints",
        ),
        (
            ("compute=ml.g5.2xlarge", "+launcher.instance=ml.p5"),
            "launcher.instance: not a setting of launcher=sagemaker; its settings: base_job_name, bucket",
        ),
        (
            ("compute=ml.g5.12xlarge", "compute.num_processes=4", "launcher.instance_count=2")
            + ("method.per_device_train_batch_size=1", "method.global_batch_size=4"),
            "method.global_batch_size: 4 is not a multiple of per_device_train_batch_size x processes = 1 x 8 = 8",
        ),
        (
            ("compute=ml.g5.2xlarge", "launcher.instance_count=2"),
            "launcher.instance_count: 2 machines run 2 processes and compute.strategy 'none' runs one",
        ),
        # The instance settings (the compute=ml.* presets') are the SageMaker launcher's own.
        (
            ("compute=ml.g5.2xlarge", "launcher.use_spot=true"),
            "launcher.max_wait_s: spot training needs max_wait_s >= max_runtime_s (86400), got None",
        ),
        (("compute=ml.g5.2xlarge", "launcher.use_spot=true", "launcher.max_wait_s=600"), "got 600"),
        (("compute=ml.g5.2xlarge", "launcher.max_wait_s=90000"), "launcher.max_wait_s: applies to spot training only"),
        (
            ("compute=ml.g5.2xlarge", "launcher.instance_type=p4d.24xlarge"),
            "launcher.instance_type: 'p4d.24xlarge' is not a SageMaker instance type",
        ),
        (("compute=ml.g5.2xlarge", "launcher.max_runtime_s=0"), "launcher.max_runtime_s: must be in [1, 2419200]"),
        (("compute=ml.g5.2xlarge", "launcher.instance_count=0"), "launcher.instance_count: must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_sent(aws, overrides, message):
    with pytest.raises(run_spec.SpecError, match=re.escape(message)):
        make_launcher(sagemaker_spec(*overrides))


def test_no_region_is_a_clear_error(aws, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(run_spec.SpecError, match="launcher.region: no AWS region"):
        make_launcher(sagemaker_spec("compute=ml.g5.2xlarge"))


# --- the command line against a moto server -----------------------------------------------------------------


@pytest.fixture
def moto_server(aws):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    import requests

    requests.post(f"http://{host}:{port}/moto-api/reset", timeout=10)  # the server's state lives in this process
    server.stop()


def cli(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run(
        [sys.executable, "-m", "fcft", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_submits_one_job_to_the_endpoint(moto_server, tmp_path):
    import boto3

    result = cli(
        moto_server, *SAGEMAKER, "compute=ml.p4d.24xlarge", "launcher.wait=false", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_server)
    (summary,) = client.list_training_jobs()["TrainingJobSummaries"]
    job = client.describe_training_job(TrainingJobName=summary["TrainingJobName"])
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge" and job["ResourceConfig"]["InstanceCount"] == 1
    assert {c["ChannelName"] for c in job["InputDataConfig"]} == {"train", "pref", "test", "code", "sm_drivers"}
    assert job["HyperParameters"]["fcft_spec"] == "/opt/ml/input/data/code/fcft_job/spec.yaml"
    assert "CheckpointConfig" not in job, "a job checkpoints where it pays: spot, or compute.checkpoint_steps set"
    record = rundir.RunDir(tmp_path).job()
    assert record["job_name"] == summary["TrainingJobName"]
    assert f"python -m fcft.runs {tmp_path}" in result.stdout
    assert_no_secret(result.stdout, result.stderr, run_dir=tmp_path)

    # Later, the job has finished (moto: at once) and left its run directory: collect it.
    bucket, key = record["model_artifacts"][5:].split("/", 1)
    boto3.client("s3", region_name=REGION, endpoint_url=moto_server).put_object(
        Bucket=bucket,
        Key=key,
        Body=tarball(
            {
                rundir.METRICS: {"train": {"loss": 1.25}, "eval": {"acc_norm": 0.5}},
                rundir.SPEC: "the job's own: not to replace the local one",
            }
        ),
    )
    spec_before = (tmp_path / rundir.SPEC).read_text()
    collected = subprocess.run(
        [sys.executable, "-m", "fcft.runs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": moto_server},
        timeout=300,
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert rundir.RunDir(tmp_path).metrics()["eval"]["acc_norm"] == 0.5
    assert (tmp_path / rundir.SPEC).read_text() == spec_before
    assert "1 of 1 jobs succeeded" in collected.stdout and "acc_norm 0.5000" in collected.stdout


def test_cli_sweep_submits_every_job_then_reports_each(moto_server, tmp_path, monkeypatch):
    """-m with four jobs: all submitted without waiting; at the multirun's end one has failed on SageMaker,
    three are collected, and a fifth job with an invalid value is reported without stopping the others."""
    import boto3
    from moto.sagemaker.models import SageMakerModelBackend

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    create = SageMakerModelBackend.create_training_job

    def play_job(backend, training_job_name, hyper_parameters, *args, **kwargs):
        """SageMaker's part, in the server: the job with lr 4e-4 fails, the others leave outputs."""
        job = create(backend, training_job_name, hyper_parameters, *args, **kwargs)
        if hyper_parameters["method.learning_rate"] == "0.0004":
            job.training_job_status, job.failure_reason = "Failed", "AlgorithmError: loss is NaN"
            return job
        metrics = {"train": {"loss": 1.5, "steps": 3}, "eval": {"acc_norm": 0.25, "n": 48}, "data": {}}
        bucket, key = job.model_artifacts["S3ModelArtifacts"][5:].split("/", 1)
        s3.put_object(
            Bucket=bucket, Key=key.replace("model.tar.gz", "output.tar.gz"), Body=tarball({rundir.METRICS: metrics})
        )
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", play_job)
    result = cli(
        moto_server,
        "-m",
        *SAGEMAKER,
        "compute=ml.g5.2xlarge",
        "launcher.wait=false",
        "launcher.poll_s=0.1",
        "launcher.fetch=metrics",
        "method.learning_rate=1e-4,2e-4,3e-4,4e-4,-1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    client = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_server)
    assert len(client.list_training_jobs()["TrainingJobSummaries"]) == 4
    summary = {Path(j["run_dir"]).name: j for j in json.loads((tmp_path / rundir.SWEEP_SUMMARY).read_text())["jobs"]}
    assert [summary[str(i)]["ok"] for i in range(5)] == [True, True, True, False, False]
    assert "loss is NaN" in summary["3"]["status"] and "method.learning_rate: must be > 0" in summary["4"]["status"]
    assert summary["0"]["metrics"]["eval"]["acc_norm"] == 0.25
    assert rundir.RunDir(tmp_path / "0").metrics()["train"]["loss"] == 1.5
    assert "3 of 5 jobs succeeded" in result.stdout and "loss is NaN" in result.stdout
    assert "Completed" in result.stdout and "job states" in result.stdout
    assert_no_secret(result.stdout, result.stderr, run_dir=tmp_path)
