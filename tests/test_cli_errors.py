"""One error style for `python -m fcft` and `python -m fcft.worker`: one line naming the key, file or row, and an
exit status: 2 for bad input, 1 for a failed run, 130 for Ctrl-C, 143 for SIGTERM (FCFT_DEBUG=1 adds the
traceback). And what must never reach Hydra's files: a password, an option that doesn't exist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

QUICK = ("tracking=none", "compute=cpu", "method.max_steps=1", "data.limit=8", "eval.limit=2")


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("fcft:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory, tiny_dir):
    """A validated spec.yaml of a quick run, for the worker's command line."""
    from conftest import compose

    from fcft import spec as run_spec

    folder = tmp_path_factory.mktemp("spec")
    run_spec.save(run_spec.validate(compose(*QUICK)), folder / "spec.yaml")
    return folder


@pytest.mark.parametrize("module", ["fcft", "fcft.worker"])
def test_a_bad_data_row_is_one_line_and_status_2(module, spec_dir, tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"uuid": "x"}\n')
    if module == "fcft":
        result = run_cli(*QUICK, f"data.test_path={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    else:
        from omegaconf import OmegaConf

        spec = OmegaConf.load(spec_dir / "spec.yaml")
        spec.data.test_path = str(bad)
        OmegaConf.save(spec, tmp_path / "spec.yaml")
        result = run_cli(str(tmp_path / "spec.yaml"), "--run-dir", str(tmp_path / "run"), module=module)
    assert result.returncode == 2
    line = one_line(result)
    assert str(bad) in line and "line 1" in line
    error = json.loads((tmp_path / "run" / "error.json").read_text())
    assert error["type"] == "DataError" and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("module", ["fcft", "fcft.worker"])
def test_a_missing_file_is_one_line_and_status_2(module, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    if module == "fcft":
        result = run_cli(*QUICK, f"data.test_path={missing}", f"hydra.run.dir={tmp_path / 'run'}")
    else:
        result = run_cli(str(missing), module=module)
    assert result.returncode == 2 and str(missing) in one_line(result)


def test_debug_flag_adds_the_traceback(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text("{not json\n")
    env = {**os.environ, "FCFT_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fcft", *QUICK, f"data.test_path={bad}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" in result.stderr and "fcft: bad data:" in result.stderr


def test_an_unreachable_store_is_one_line_and_status_2(tmp_path):
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    where = ("tracking.uri=http://127.0.0.1:1", f"hydra.run.dir={tmp_path}")
    command = [sys.executable, "-m", "fcft", *QUICK[1:], *where]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "127.0.0.1:1" in one_line(result)
    assert not (tmp_path / "metrics.json").exists()


def test_a_password_in_tracking_uri_never_reaches_the_run_directory(tmp_path):
    for args, env in (
        (["tracking.uri=http://me:hunter2secret@127.0.0.1:5000"], {}),
        ([], {"MLFLOW_TRACKING_URI": "http://me:hunter2secret@127.0.0.1:5000"}),
    ):
        command = [sys.executable, "-m", "fcft", *args, f"hydra.run.dir={tmp_path / 'run'}"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
        assert result.returncode == 2 and "password" in one_line(result)
        assert "hunter2secret" not in result.stderr + result.stdout
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and "hunter2secret" in p.read_text(errors="replace")]
    assert not (tmp_path / "run").exists() and not leaked


def test_an_unknown_option_names_the_one_meant():
    result = run_cli("model=qwen3_06b")
    assert result.returncode == 2
    line = one_line(result)
    assert "model: no option 'qwen3_06b' (did you mean 'qwen3_0.6b'?)" in line and "tiny_llama" in line
    assert run_cli("-m", "method=sft,dpoo").returncode == 2


def start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """A run long enough to be stopped on the way (its training begins within seconds)."""
    command = [sys.executable, "-m", "fcft", *QUICK, "method.max_steps=400", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(process: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.time() + 120
    while not (run_dir / "running.json").is_file() and time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(4)  # into the worker: data, model, trainer


def test_ctrl_c_ends_with_130_and_error_json(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_training(process, run_dir)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert json.loads((run_dir / "error.json").read_text())["type"] == "KeyboardInterrupt"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "running.json").exists()


def test_sigterm_ends_like_ctrl_c_with_143_and_a_second_run_is_refused_meanwhile(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_training(process, run_dir)
    second = run_cli(*QUICK, f"hydra.run.dir={run_dir}")  # the same directory while the first runs
    assert second.returncode == 2 and f"pid {process.pid}" in one_line(second)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "fcft: terminated (SIGTERM)" in stderr
    assert json.loads((run_dir / "error.json").read_text())["type"] == "Terminated"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "running.json").exists()
