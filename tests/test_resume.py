"""Resume that gives the same result: a run killed at any point (SIGKILL, or cut off mid-checkpoint) and started
again with the same command continues from its newest complete checkpoint and ends bit-equal to a run that was
never interrupted; a finished run started again trains no further."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from fcft.train.args import checkpoint_problem

STEPS = 8
COMMON = (
    "tracking=none",
    "compute=cpu",
    f"method.max_steps={STEPS}",
    "compute.checkpoint_steps=2",
    "method.logging_steps=1",
    "method.per_device_train_batch_size=2",
    "method.gradient_accumulation_steps=1",
    "data.limit=32",
    "eval.limit=8",
)


def train(run_dir: Path, checkpoints: Path) -> subprocess.CompletedProcess:
    result = run_cli(*COMMON, f"compute.checkpoint_dir={checkpoints}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir: Path) -> bytes:
    return (run_dir / "model" / "model.safetensors").read_bytes()


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("resume-reference")
    train(root / "run", root / "checkpoints")
    return root / "run", root / "checkpoints"


def test_a_killed_run_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    run_dir, checkpoints = tmp_path / "run", tmp_path / "checkpoints"
    where = (f"compute.checkpoint_dir={checkpoints}", f"hydra.run.dir={run_dir}")
    command = [sys.executable, "-m", "fcft", *COMMON, *where]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (checkpoints / "checkpoint-4" / "trainer_state.json").is_file() and time.time() < deadline:
        assert process.poll() is None, "the run ended before it was killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists() and (run_dir / "running.json").is_file()

    train(run_dir, checkpoints)  # the same command again
    summary = metrics(run_dir)["train"]
    assert summary["steps"] == STEPS and summary["resumed_from_step"] >= 4
    assert weights(run_dir) == weights(reference)
    assert metrics(run_dir)["eval"] == metrics(reference)["eval"]
    assert summary["loss"] == pytest.approx(metrics(reference)["train"]["loss"], rel=1e-4)
    assert summary["runtime_s"] > 0 and not (run_dir / "running.json").exists()


def test_a_checkpoint_cut_off_mid_write_is_skipped_for_the_one_before(uninterrupted, tmp_path):
    reference, reference_checkpoints = uninterrupted
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(reference_checkpoints, checkpoints)
    newest, before = checkpoints / f"checkpoint-{STEPS}", checkpoints / f"checkpoint-{STEPS - 2}"
    assert checkpoint_problem(newest) is None and checkpoint_problem(before) is None
    with open(newest / "model.safetensors", "r+b") as handle:  # a kill while the weights were being written
        handle.truncate(handle.seek(0, 2) // 2)
    assert "model.safetensors" in checkpoint_problem(newest)
    scratch = tmp_path / "no-optimizer"
    shutil.copytree(before, scratch)
    (scratch / "optimizer.pt").unlink()  # resuming would silently restart the optimizer
    assert "optimizer.pt" in checkpoint_problem(scratch)

    run_dir = tmp_path / "run"
    train(run_dir, checkpoints)
    assert metrics(run_dir)["train"]["resumed_from_step"] == STEPS - 2
    assert weights(run_dir) == weights(reference)
    assert metrics(run_dir)["eval"] == metrics(reference)["eval"]


def test_a_finished_run_started_again_trains_no_further(uninterrupted):
    reference, checkpoints = uninterrupted
    before = weights(reference)
    result = train(reference, checkpoints)  # the same command, same directory: the same run again
    summary = metrics(reference)["train"]
    assert summary["steps"] == STEPS and summary["resumed_from_step"] == STEPS, result.stdout[-2000:]
    assert not (checkpoints / f"checkpoint-{STEPS + 1}").exists()
    assert weights(reference) == before
