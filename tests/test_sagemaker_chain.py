"""The published recipe as SageMaker jobs: SFT, then DPO from the SFT job's model in S3, and the results-table
experiment's stages as jobs collected into its table. The real SageMaker SDK against moto; each job is played
from what was uploaded (channels, entry script, spec) by tests/test_sagemaker.py's `simulate_job`."""

from __future__ import annotations

import shutil

import pytest
from conftest import CONF_DIR
from test_sagemaker import REGION, SAGEMAKER, botocore_hook, simulate_job

from fcft import rundir
from fcft import spec as run_spec
from fcft.runs.launch import make_launcher
from launchers import aws as aws_calls

moto = pytest.importorskip("moto")
pytest.importorskip("sagemaker.train")

from test_sagemaker import aws  # noqa: E402,F401 -- the fixture: fake credentials, the SDK's settings for moto

pytestmark = pytest.mark.usefixtures("aws")


def played_jobs(job_root, monkeypatch):
    """A CreateTrainingJob hook that plays each job in a clean job root, and the requests it saw (each checked
    against SageMaker's API model)."""
    import boto3

    import launchers.sagemaker_job as sagemaker_job

    monkeypatch.setattr(sagemaker_job, "JOB_ROOT", str(job_root))  # the container's /opt/ml, here
    seen: list[dict] = []

    def play(params, **_):
        aws_calls.validate_request(params)
        seen.append(params)
        shutil.rmtree(job_root, ignore_errors=True)  # a fresh container for every job
        simulate_job(job_root, params, boto3.client("s3", region_name=REGION))

    return play, seen


def tiny_job(tiny_dir, *overrides):
    return (
        *SAGEMAKER,
        "compute=ml.g5.2xlarge",
        "compute.accelerator=cpu",
        "launcher.poll_s=0.1",
        "method.max_steps=2",
        "method.per_device_train_batch_size=2",
        "method.gradient_accumulation_steps=1",
        "data.limit=8",
        "eval.limit=4",
        f"model.path={tiny_dir}",
        *overrides,
    )


def launched(cfg, run_dir):
    """Validate, write spec.yaml and launch, as the command line does; the run's metrics."""
    spec = run_spec.validate(cfg)
    run_dir.mkdir()
    run_spec.save(spec, run_dir / rundir.SPEC)
    return make_launcher(spec).launch(spec, run_dir)


def test_sft_then_dpo_as_two_jobs_the_dpo_job_starting_from_the_sft_jobs_model_in_s3(tmp_path, tiny_dir, monkeypatch):
    from conftest import compose

    play, seen = played_jobs(tmp_path / "opt" / "ml", monkeypatch)
    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    with moto.mock_aws(), botocore_hook("provide-client-params.sagemaker.CreateTrainingJob", play):
        sft_metrics = launched(compose(*tiny_job(tiny_dir, "method=sft")), sft_dir)
        dpo_metrics = launched(compose(*tiny_job(tiny_dir, "method=dpo", f"method.init_from={sft_dir}")), dpo_dir)
    sft_model = rundir.RunDir(sft_dir).job()["model_artifacts"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in seen[1]["InputDataConfig"]}
    assert channels["init_from"] == sft_model, "the DPO job reads the SFT job's S3 output: no download, no re-upload"
    job_spec = run_spec.load(dpo_dir / rundir.JOB_SPEC)
    assert job_spec.method.init_from == f"{tmp_path / 'opt' / 'ml'}/init_from"  # where the entry unpacked it
    assert sft_metrics["train"]["steps"] == 2 and dpo_metrics["train"]["steps"] == 2
    assert dpo_metrics["train"]["init_from"] == job_spec.method.init_from and dpo_metrics["eval"]["n"] == 4


def test_the_results_table_runs_its_stages_as_jobs_and_collects_them_into_its_table(tmp_path, tiny_dir, monkeypatch):
    from hydra import compose, initialize_config_dir

    from fcft.report.rows import read as read_row
    from fcft.report.table import results_table
    from fcft.runs import outcomes, stages
    from fcft.spec.hydra_schema import register_schema

    play, seen = played_jobs(tmp_path / "opt" / "ml", monkeypatch)
    overrides = ["+experiment=results_table", *tiny_job(tiny_dir, "data=sample"), "model=tiny"]  # as Hydra's task
    register_schema()
    job_dir = tmp_path / "0"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        experiment = compose(config_name="config", overrides=overrides).experiment
        with moto.mock_aws(), botocore_hook("provide-client-params.sagemaker.CreateTrainingJob", play):
            stages.run(experiment, job_dir, overrides)
    results = [outcomes.read(d) for d in outcomes.job_run_dirs(job_dir)]
    assert [o.stage for o in results] == ["base", "sft", "dpo"] and all(o.ok for o in results), results
    assert len(seen) == 3, "one SageMaker job per stage"
    dpo_channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in seen[2]["InputDataConfig"]}
    assert dpo_channels["init_from"] == rundir.RunDir(job_dir / "sft").job()["model_artifacts"]
    table = results_table([read_row(o) for o in results])
    (row,) = [line for line in table.splitlines() if line.startswith("| tiny |")][:1]
    assert row.count("%") >= 3, f"a score in every column: {row}"
