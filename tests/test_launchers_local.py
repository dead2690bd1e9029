"""The local launcher in several processes (DDP over gloo, DeepSpeed ZeRO-3) on the CPU, compute presets and
their validation, checkpoint resume, and a local sweep whose failing jobs don't stop the others."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import CONF_DIR, compose, run_cli

from fcft import rundir
from fcft import spec as run_spec
from fcft.data import SAMPLE_DIR
from fcft.runs.launch import build, make_launcher
from launchers.processes import Machines, worker_command

# Same global batch of 4 in every run: 1 process x 2 per device x 2 accumulation, 2 processes x 2 x 1.
# Tiny data, a few steps, a learning rate that moves the loss, one log record per step.
SAME_BATCH = (
    "method.per_device_train_batch_size=2",
    "method.global_batch_size=4",
    "method.max_steps=3",
    "method.learning_rate=1e-3",
    "method.warmup_ratio=0",
    "method.logging_steps=1",
    "data.limit=16",
)


def losses(run_dir):
    return [r["loss"] for r in rundir.read_jsonl(run_dir / rundir.TRAIN_LOG) if "loss" in r]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_dir):
    from fcft import worker

    run_dir = tmp_path_factory.mktemp("one")
    spec = run_spec.validate(compose("compute=cpu", *SAME_BATCH, "eval.enabled=false"))
    metrics = worker.run(spec, run_dir)
    assert metrics["train"]["processes"] == 1 and metrics["train"]["global_batch_size"] == 4
    return run_dir


@pytest.mark.parametrize("compute", ["cpu_ddp2", "cpu_zero3"])
def test_two_processes_follow_the_one_process_loss_curve(compute, one_process, tmp_path, capfd):
    spec = run_spec.validate(compose(f"compute={compute}", *SAME_BATCH, "eval.limit=2"))
    run_spec.save(spec, tmp_path / rundir.SPEC)
    metrics = make_launcher(spec).launch(spec, tmp_path)
    assert metrics["train"]["processes"] == 2  # accelerate really started two
    assert metrics["train"]["global_batch_size"] == 4 and metrics["train"]["steps"] == 3
    expected = losses(one_process)
    assert len(expected) == 3 and expected[0] != pytest.approx(expected[-1], abs=1e-3)  # the loss moved
    assert losses(tmp_path) == pytest.approx(expected, rel=1e-4)
    # Rank 0 alone wrote the run directory and evaluated, once.
    assert metrics["eval"]["n"] == 2 and len(rundir.read_jsonl(tmp_path / rundir.SAMPLES)) == 2
    assert (tmp_path / rundir.MODEL / "model.safetensors").is_file() and not list(tmp_path.glob(".*tmp"))
    out, err = capfd.readouterr()
    assert "2 processes (" in out and "x 2 per device x 1 accumulation = global batch 4" in out
    assert "terminate called" not in err  # each rank left the process group before it exited


def test_training_resumes_from_the_latest_checkpoint(tmp_path, tiny_dir):
    from fcft import worker

    common = (
        "compute=cpu",
        f"compute.checkpoint_dir={tmp_path / 'checkpoints'}",
        "compute.checkpoint_steps=2",
        "method.logging_steps=1",
        "method.per_device_train_batch_size=2",
        "method.gradient_accumulation_steps=1",
        "method.lr_scheduler_type=constant",
        "data.limit=16",
        "eval.enabled=false",
    )
    first = worker.run(run_spec.validate(compose(*common, "method.max_steps=2")), tmp_path / "first")
    assert first["train"]["steps"] == 2 and (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    again = worker.run(run_spec.validate(compose(*common, "method.max_steps=4")), tmp_path / "again")
    assert again["train"]["steps"] == 4 and (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    # Steps 1-2 were not trained again: their records come from the checkpoint's state, unchanged.
    assert losses(tmp_path / "again")[:2] == losses(tmp_path / "first")


def test_worker_command_for_each_strategy(tmp_path):
    spec = run_spec.validate(compose("compute=cpu"))
    assert worker_command(spec, tmp_path / "spec.yaml", 1) == [
        sys.executable,
        "-m",
        "fcft.worker",
        str(tmp_path / "spec.yaml"),
    ]
    zero3 = run_spec.validate(compose("launcher=sagemaker", "compute=ml.p4d.24xlarge", "model.dtype=bfloat16"))
    command = worker_command(zero3, tmp_path / "spec.yaml", 8, Machines(2, 1, "algo-1", 29500), run_dir=tmp_path)
    flags = dict(zip(command[3:-5:2], command[4:-5:2]))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert flags["--config_file"].endswith("launchers/configs/deepspeed_zero3.yaml")
    assert (flags["--num_processes"], flags["--num_machines"], flags["--machine_rank"]) == ("16", "2", "1")
    assert (flags["--main_process_ip"], flags["--main_process_port"], flags["--mixed_precision"]) == (
        "algo-1",
        "29500",
        "bf16",
    )
    assert command[-5:] == ["-m", "fcft.worker", str(tmp_path / "spec.yaml"), "--run-dir", str(tmp_path)]


def test_sagemaker_entry_reads_the_job_machines(tmp_path, monkeypatch):
    import launchers.sagemaker_entry as entry

    (tmp_path / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]})
    )
    monkeypatch.setattr(entry, "CONFIG_DIR", tmp_path)
    assert entry.machines() == Machines(count=2, rank=1, main_ip="algo-1", port=29500)
    assert entry.tracking_packages("arn:aws:sagemaker:us-east-1:1:mlflow-tracking-server/x") == [
        "sagemaker-mlflow>=0.1"
    ]
    assert entry.tracking_packages("http://mlflow.example.com") == [] and entry.tracking_packages("") == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("compute.num_processes=2",), "compute.strategy: 'none' runs one process but compute.num_processes is 2"),
        (("compute=cpu_ddp2", "compute.num_processes=0"), "compute.num_processes: must be >= 1, or null"),
        (
            ("compute=cpu_ddp2", "method.global_batch_size=6"),
            "method.global_batch_size: 6 is not a multiple of per_device_train_batch_size x processes = 8 x 2 = 16",
        ),
        (
            ("launcher.instance_count=2",),
            "launcher.instance_count: not a setting of launcher=local; launcher=sagemaker takes it",
        ),
        (
            ("compute.instance_count=2",),
            "compute.instance_count: now the SageMaker launcher's: launcher.instance_count",
        ),  # the launcher's, since spec v2
        (("compute.strategy=zero4",), "Invalid value 'zero4', expected one of [none, ddp, zero3]"),
    ],
)
def test_compute_combinations_that_cannot_work_are_refused(overrides, message):
    from hydra.errors import ConfigCompositionException

    with pytest.raises((run_spec.SpecError, ConfigCompositionException)) as err:
        make_launcher(run_spec.validate(compose(*overrides)))
    assert message in str(err.value.__cause__ or err.value)


SAGEMAKER_PRESETS = sorted(path.stem for path in (CONF_DIR / "compute").glob("ml.*.yaml"))


@pytest.mark.parametrize("preset", SAGEMAKER_PRESETS)
def test_a_sagemaker_preset_is_refused_by_the_local_launcher_and_taken_by_sagemaker(preset):
    """A compute=ml.* preset sets the SageMaker launcher's instance settings: launcher=local names the launcher
    that takes them; launcher=sagemaker gets the preset's instance (the launcher group composes after compute)."""
    with pytest.raises(
        run_spec.SpecError,
        match="launcher.instance_type: not a setting of launcher=local; launcher=sagemaker takes it",
    ):
        make_launcher(run_spec.validate(compose(f"compute={preset}")))
    launcher = build(run_spec.validate(compose("launcher=sagemaker", f"compute={preset}")).launcher)
    assert launcher.instance_type == preset and launcher.instance_count == 1 and not launcher.use_spot
    spot = ("launcher.use_spot=true", "launcher.max_wait_s=180000")
    assert build(run_spec.validate(compose("launcher=sagemaker", f"compute={preset}", *spot)).launcher).use_spot


def test_gpu_presets_need_a_gpu_here():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(run_spec.SpecError, match=r"compute.accelerator: 'cuda' \(compute=gpu\) needs a CUDA GPU"):
        make_launcher(run_spec.validate(compose("compute=gpu")))


def test_a_failing_job_does_not_stop_the_sweep_and_is_reported(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"uuid": "x"}\n')
    good = SAMPLE_DIR / "test.jsonl"
    result = run_cli(
        "-m",
        "method=none",
        "eval.limit=2",
        f"data.test_path={broken},/nonexistent.jsonl,{good}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    summary = rundir.read_json(tmp_path / "sweep" / rundir.SWEEP_SUMMARY)["jobs"]
    assert [job["ok"] for job in summary] == [False, False, True]
    assert summary[0]["status"].startswith("DataError: ") and "line 1" in summary[0]["status"]
    assert "data.test_path: file /nonexistent.jsonl does not exist" in summary[1]["status"]
    assert rundir.RunDir(tmp_path / "sweep" / "1").failed and not (tmp_path / "sweep" / "1" / rundir.SPEC).exists()
    assert summary[2]["metrics"]["eval"]["n"] == 2
    assert "1 of 3 jobs succeeded" in result.stdout and "DataError" in result.stdout
