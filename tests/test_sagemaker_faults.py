"""What passes every local check and then fails on billed instances, caught here: AWS's transient errors while a job
runs, a full instance quota, a sweep's parallelism, a failed job's log, the EFA variables, what the job installs,
requests SageMaker's API model would refuse, and a dry run that must need no network and no credentials.
The real SageMaker SDK against moto; AWS's refusals are injected where botocore makes its calls."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from test_sagemaker import BUCKET, REGION, ROLE, botocore_hook, create_requests, sagemaker_spec

from fcft import rundir
from fcft import spec as run_spec
from fcft.runs.launch import make_launcher
from launchers import aws as aws_calls
from launchers import sagemaker_job

moto = pytest.importorskip("moto")
pytest.importorskip("sagemaker.train")

from test_sagemaker import aws  # noqa: E402,F401 -- the fixture: fake credentials, the SDK's settings for moto

pytestmark = pytest.mark.usefixtures("aws")


def refuse(code: str, operation: str, times: int):
    """A botocore `before-call` handler that answers `operation` with AWS error `code` the first `times` calls."""
    calls = {"n": 0}

    def handler(model, **_):
        if model.name != operation or calls["n"] >= times:
            return None
        calls["n"] += 1
        error = {"Error": {"Code": code, "Message": f"{code} (injected)"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return SimpleNamespace(status_code=400, headers={}, raw=None), error

    handler.calls = calls
    return handler


def submitted(tmp_path, *overrides, name="run"):
    spec = sagemaker_spec("compute=ml.g5.2xlarge", "launcher.wait=false", "launcher.poll_s=0.05", *overrides)
    run_dir = tmp_path / name
    run_dir.mkdir()
    run_spec.save(spec, run_dir / rundir.SPEC)
    launcher = make_launcher(spec)
    launcher.launch(spec, run_dir)
    return launcher, run_dir


def backend_job(name: str):
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends["123456789012"][REGION].training_jobs[name]


def test_throttling_and_expired_tokens_while_polling_never_fail_the_job(tmp_path, capsys):
    from fcft.runs.sweep import finish

    with moto.mock_aws():
        launcher, run_dir = submitted(tmp_path, "launcher.fetch=none")
        always = refuse("ThrottlingException", "DescribeTrainingJob", times=10**6)
        with botocore_hook("before-call.sagemaker.DescribeTrainingJob", always):
            status = launcher.status(run_dir)  # every try throttled: the state is unknown, not failed
        assert (status.state, status.done, status.failed) == ("Unknown", False, False)
        assert "ThrottlingException" in status.describe()
        # A sweep's end, polling through two throttles and an expired token, still collects the job.
        throttled = refuse("ThrottlingException", "DescribeTrainingJob", times=2)
        with botocore_hook("before-call.sagemaker.DescribeTrainingJob", throttled):
            expired = refuse("ExpiredTokenException", "DescribeTrainingJob", times=1)
            with botocore_hook("before-call.sagemaker.DescribeTrainingJob", expired):
                (outcome,) = finish([run_dir])
    assert outcome.ok and outcome.status == "Completed", outcome.status
    assert throttled.calls["n"] == 2 and expired.calls["n"] == 1
    assert not (run_dir / rundir.ERROR).exists()


def test_a_full_quota_queues_the_submission_instead_of_failing_it(tmp_path, capsys):
    quota = refuse("ResourceLimitExceeded", "CreateTrainingJob", times=2)
    with moto.mock_aws(), botocore_hook("before-call.sagemaker.CreateTrainingJob", quota):
        launcher, run_dir = submitted(tmp_path)
    assert quota.calls["n"] == 2
    assert rundir.RunDir(run_dir).job()["status"] == "Submitted"
    assert "trying again" in capsys.readouterr().out


def test_max_parallel_submits_the_next_job_as_an_earlier_one_ends(tmp_path, capsys):
    with moto.mock_aws():
        _, first = submitted(tmp_path, name="0")
        running = backend_job(rundir.RunDir(first).job()["job_name"])
        running.training_job_status = "InProgress"  # moto completes jobs at once: SageMaker's part, played here
        polls = {"n": 0}

        def end_after_two_polls(**_):
            polls["n"] += 1
            if polls["n"] == 2:
                running.training_job_status = "Completed"

        with botocore_hook("after-call.sagemaker.DescribeTrainingJob", end_after_two_polls):
            _, second = submitted(tmp_path, "launcher.max_parallel=1", name="1")
    assert polls["n"] >= 3, "the second job was submitted once the first had ended, not before"
    assert rundir.RunDir(second).job()["status"] == "Submitted"
    assert "waiting to submit 1" in capsys.readouterr().out


def test_a_failed_jobs_log_is_saved_and_its_last_lines_printed(tmp_path, capsys):
    import boto3

    with moto.mock_aws():
        launcher, run_dir = submitted(tmp_path)
        name = rundir.RunDir(run_dir).job()["job_name"]
        logs = boto3.client("logs", region_name=REGION)  # what SageMaker writes for the job, played here
        logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1700000000")
        lines = [f"step {i}: loss 1.{i}" for i in range(40)] + ["torch.OutOfMemoryError: CUDA out of memory"]
        now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
        logs.put_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs",
            logStreamName=f"{name}/algo-1-1700000000",
            logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
        )
        job = backend_job(name)
        job.training_job_status, job.failure_reason = "Failed", "AlgorithmError: see the log"
        status = launcher.status(run_dir)
    assert status.failed
    assert (run_dir / rundir.JOB_LOG).read_text().splitlines() == lines
    err = capsys.readouterr().err
    assert "CUDA out of memory" in err and "step 39" in err and "step 5:" not in err, "the tail only"


@pytest.mark.parametrize("preset, efa", [("ml.g5.2xlarge", False), ("ml.p4d.24xlarge", True)])
def test_efa_and_nccl_variables_reach_efa_instances_only(preset, efa):
    spec = sagemaker_spec(f"compute={preset}")
    launcher = make_launcher(spec)
    env = launcher._environment(sagemaker_job.job_spec_for(spec, {}))
    assert ("FI_PROVIDER" in env) == efa and ("NCCL_PROTO" in env) == efa
    assert env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(
    "overrides, extras",
    [
        (("compute=ml.g5.2xlarge", "tuning=qlora"), ["qlora"]),
        (("compute=ml.p4d.24xlarge",), ["deepspeed"]),
        (("compute=ml.g5.2xlarge",), []),
    ],
)
def test_the_job_installs_exactly_what_its_spec_needs_keeping_the_images_torch(tmp_path, overrides, extras):
    from launchers import sagemaker_entry

    spec = sagemaker_spec(*overrides)
    job_spec = sagemaker_job.job_spec_for(spec, {})
    with sagemaker_job.staged(job_spec, {}, tmp_path, place=str) as (code, _):
        from pathlib import Path

        code = Path(code)
        command = sagemaker_entry.install_command(code, code / sagemaker_job.CODE_SPEC, tmp_path, "2.6.0+cu126")
    package = command[-1]
    assert package.endswith(f"[{','.join(extras)}]") if extras else package.endswith("/fcft")
    pins = (tmp_path / "constraints.txt").read_text().splitlines()
    assert "torch==2.6.0+cu126" in pins and sum(p.startswith("torch==") for p in pins) == 1
    assert "bitsandbytes==" in "\n".join(pins), "every other package as tested"


def test_an_arn_tracking_store_brings_its_plugin_into_the_job(monkeypatch):
    from launchers import sagemaker_entry

    assert sagemaker_entry.tracking_packages("arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x")
    assert sagemaker_entry.tracking_packages("http://mlflow.example.com:5000") == []


@pytest.mark.parametrize(
    "preset, extra",
    [
        ("ml.g5.2xlarge", ()),
        ("ml.p4d.24xlarge", ("launcher.use_spot=true", "launcher.max_wait_s=180000")),
        ("ml.g5.12xlarge", ("launcher.subnets=[subnet-0abc1234]", "launcher.security_group_ids=[sg-0abc1234]")),
    ],
)
def test_every_request_is_valid_for_sagemakers_own_api_model(tmp_path, preset, extra):
    with moto.mock_aws(), create_requests() as sent:
        submitted(tmp_path, f"compute={preset}", *extra)
    (request,) = sent
    aws_calls.validate_request(request)  # botocore's SageMaker service model, not only moto, accepts it
    if "launcher.subnets=[subnet-0abc1234]" in extra:
        assert request["VpcConfig"] == {"Subnets": ["subnet-0abc1234"], "SecurityGroupIds": ["sg-0abc1234"]}


def test_the_api_model_check_refuses_what_sagemaker_would(tmp_path):
    with moto.mock_aws(), create_requests() as sent:
        submitted(tmp_path)
    (request,) = sent
    request["Environment"]["NOT A NAME"] = "x" * 600  # SageMaker: names [a-zA-Z_][a-zA-Z0-9_]*, values <= 512
    with pytest.raises(run_spec.SpecError, match="not valid for SageMaker's API"):
        aws_calls.validate_request(request)


@pytest.mark.parametrize(
    "override, message",
    [
        ("launcher.base_job_name=my_job", "launcher.base_job_name: 'my_job' can't start a SageMaker job name"),
        ("launcher.base_job_name=" + "a" * 41, "at most 40 characters"),
        ("launcher.subnets=[subnet-1]", "launcher.subnets / launcher.security_group_ids: a job in a VPC needs both"),
        ("launcher.max_parallel=0", "launcher.max_parallel: must be >= 1"),
    ],
)
def test_settings_sagemaker_would_refuse_are_refused_before_submission(override, message):
    with pytest.raises(run_spec.SpecError, match=message):
        make_launcher(sagemaker_spec("compute=ml.g5.2xlarge", override))


def offline(monkeypatch, tmp_path):
    """No credentials anywhere, and every AWS endpoint a closed port: nothing can be asked of AWS."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)  # the dry run must not need it


def test_a_dry_run_needs_no_network_and_no_credentials(monkeypatch, tmp_path, capsys):
    offline(monkeypatch, tmp_path)
    spec = run_spec.validate(
        __import__("conftest").compose("launcher=sagemaker", "compute=ml.p4d.24xlarge", "launcher.dry_run=true")
    )
    assert make_launcher(spec).launch(spec, tmp_path) is None
    out = capsys.readouterr().out
    request = json.loads(out.split("CreateTrainingJob request:\n", 1)[1])
    aws_calls.validate_request(request)
    assert request["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge"
    assert "RoleArn is a placeholder: set launcher.role" in out
    assert "SAGEMAKER_VALIDATE_ROLE" not in __import__("os").environ


def test_no_credentials_is_a_message_that_says_how_to_provide_them(monkeypatch, tmp_path):
    from fcft.runs import jobs

    offline(monkeypatch, tmp_path)
    spec = sagemaker_spec("compute=ml.g5.2xlarge", f"launcher.role={ROLE}")
    run_spec.save(spec, tmp_path / rundir.SPEC)
    with pytest.raises(jobs.RunFailed, match="no AWS credentials were found: run `aws configure`"):
        make_launcher(spec).launch(spec, tmp_path)


def test_local_inputs_are_uploaded_once_per_content_for_every_job(tmp_path):
    import boto3

    with moto.mock_aws(), create_requests() as sent:
        submitted(tmp_path, name="0")
        submitted(tmp_path, "method.learning_rate=1e-4", name="1")
        keys = [o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)["Contents"]]
    first, second = (
        {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in r["InputDataConfig"]} for r in sent
    )
    for channel in ("train", "pref", "test"):
        assert first[channel] == second[channel], "both jobs read the one upload"
    assert sum(key.startswith("fcft/inputs/") and key.endswith("/train_sft.jsonl") for key in keys) == 1


def test_s3_inputs_and_a_sagemaker_runs_model_reach_the_job_as_channels(tmp_path):
    sft_output = "s3://fcft-test-bucket/fcft/fcft-tiny-sft-abc123/fcft-tiny-sft-abc123-2026/output/model.tar.gz"
    data = "s3://fcft-test-bucket/data/train_pref.jsonl"
    spec = sagemaker_spec(
        "compute=ml.g5.2xlarge", "method=dpo", f"method.init_from={sft_output}", f"data.pref_path={data}"
    )
    assert spec.method.init_from == sft_output and spec.data.pref_path == data  # kept as URIs, not local paths
    job_spec = sagemaker_job.job_spec_for(spec, sagemaker_job.inputs(spec))
    assert job_spec.method.init_from == f"{sagemaker_job.JOB_ROOT}/init_from"  # where the entry unpacks the archive
    assert job_spec.data.pref_path == f"{sagemaker_job.JOB_ROOT}/input/data/pref/train_pref.jsonl"
    with moto.mock_aws(), create_requests() as sent:
        import boto3

        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        run_spec.save(spec, run_dir / rundir.SPEC)
        launcher = make_launcher(spec)
        launcher.submit(spec, run_dir)
    (request,) = sent
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["init_from"] == sft_output and channels["pref"] == data, "no download and re-upload"
    with pytest.raises(run_spec.SpecError, match="launcher=local reads local files"):
        make_launcher(run_spec.validate(__import__("conftest").compose("method=dpo", f"data.pref_path={data}")))
    with pytest.raises(run_spec.SpecError, match="a URI must be s3://BUCKET/KEY"):
        run_spec.validate(__import__("conftest").compose("data.train_path=gs://bucket/train.jsonl"))


def test_the_entry_unpacks_an_init_from_archive_where_the_jobs_spec_expects_it(tmp_path, monkeypatch):
    import io
    import tarfile

    from launchers import sagemaker_entry

    channel = tmp_path / "opt" / "ml" / "input" / "data" / "init_from"
    channel.mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in ((rundir.SPEC, "model: {name: tiny}\n"), (f"{rundir.MODEL}/config.json", "{}")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    (channel / "model.tar.gz").write_bytes(buffer.getvalue())
    monkeypatch.setattr(sagemaker_entry, "CONFIG_DIR", tmp_path / "opt" / "ml" / "input" / "config")
    sagemaker_entry.unpack_init_from()
    unpacked = tmp_path / "opt" / "ml" / "init_from"
    assert (unpacked / rundir.SPEC).is_file() and (unpacked / rundir.MODEL / "config.json").is_file()


@pytest.mark.parametrize(
    "overrides, machine, expected",
    [
        (
            ("compute=ml.p4d.24xlarge", "launcher.instance_count=2", "compute.num_processes=8"),
            "algo-2",
            [
                "--config_file",
                "deepspeed_zero3.yaml",
                "--num_processes 16",
                "--num_machines 2",
                "--machine_rank 1",
                "--main_process_ip algo-1",
                "--mixed_precision no",
            ],
        ),
        (("compute=ml.g5.2xlarge", "tuning=qlora"), "algo-1", []),
    ],
)
def test_the_entry_launches_the_worker_as_the_spec_and_machines_say(
    tmp_path, monkeypatch, overrides, machine, expected
):
    from launchers import sagemaker_entry

    spec = sagemaker_spec(*overrides)
    job_spec = sagemaker_job.job_spec_for(spec, {})  # its inputs where they lie here
    spec_path = run_spec.save(job_spec, tmp_path / "spec.yaml")
    config = tmp_path / "input" / "config"
    hosts = [f"algo-{i + 1}" for i in range(spec.launcher.get("instance_count", 1))]  # as SageMaker writes it
    rundir.write_json(config / "resourceconfig.json", {"current_host": machine, "hosts": hosts})
    monkeypatch.setattr(sagemaker_entry, "CONFIG_DIR", config)
    command, where = sagemaker_entry.plan(spec_path)
    text = " ".join(command)
    assert text.endswith(f"-m fcft.worker {spec_path} --run-dir {sagemaker_entry.MODEL_DIR}")
    for part in expected:
        assert part in text, (part, text)
    if not expected:  # one process: the worker itself, no accelerate
        assert "accelerate" not in text


def test_a_request_sagemaker_would_refuse_is_refused_before_it_is_sent(tmp_path):
    import boto3

    with moto.mock_aws():
        with pytest.raises(run_spec.SpecError, match=r"Environment.LONG: 600 characters, at most 512"):
            submitted(tmp_path, "+launcher.environment.LONG=" + "x" * 600)
        assert boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"] == []


def test_a_local_spectrum_file_reaches_the_job_as_a_channel(tmp_path):
    patterns = tmp_path / "unfrozen.yaml"
    patterns.write_text("unfrozen_parameters:\n- ^lm_head.weight$\n")
    spec = sagemaker_spec("compute=ml.g5.2xlarge", "tuning=spectrum", f"tuning.spectrum_file={patterns}")
    given = sagemaker_job.inputs(spec)
    assert given["spectrum"] == str(patterns)
    job_spec = sagemaker_job.job_spec_for(spec, given)
    assert job_spec.tuning.spectrum_file == f"{sagemaker_job.JOB_ROOT}/input/data/spectrum/unfrozen.yaml"
