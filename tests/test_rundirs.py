"""Run directories that can't mix runs: a run refuses a directory holding another run's outputs (unless
overwrite=true, or it is the same spec again), clears them when it may, marks itself in progress (running.json),
and a failed run leaves error.json and nothing that looks like results. An interrupted sweep is picked up by the
same command: finished jobs are kept, the rest run, and its report lists every planned job."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_cli

from fcft import rundir
from fcft.runs import outcomes

QUICK = ("tracking=none", "compute=cpu", "method.max_steps=1", "data.limit=8", "eval.limit=2")


def test_claim_refuses_a_live_run_and_replaces_a_dead_ones_marker(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with rundir.claim(tmp_path, {"a": 1}):  # this process holds it...
            record = json.loads((tmp_path / "running.json").read_text())
            assert record["pid"] and record["host"] and record["start"]
            marker = (tmp_path / "running.json").read_text()
        assert not (tmp_path / "running.json").exists()
        (tmp_path / "running.json").write_text(marker.replace(str(record["pid"]), str(sleeper.pid)))
        with pytest.raises(rundir.RunDirError, match=f"pid {sleeper.pid}"):  # ...then another live process
            with rundir.claim(tmp_path, {"a": 1}):
                pass
        assert "running" in outcomes.read(tmp_path).status and not rundir.RunDir(tmp_path).finished
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "stopped before it finished" in rundir.RunDir(tmp_path).not_finished()
    with rundir.claim(tmp_path, {"a": 1}):  # its process ended: the marker is taken over
        assert json.loads((tmp_path / "running.json").read_text())["pid"] != sleeper.pid


def test_outputs_of_another_spec_are_refused_unless_overwrite_and_cleared_when_allowed(tmp_path):
    rundir.write_text(tmp_path / "spec.yaml", "model: {name: tiny}\ntracking: {parent_run_id: a}\n")
    rundir.write_json(tmp_path / "metrics.json", {"eval": {}})
    (tmp_path / "model").mkdir()
    with pytest.raises(rundir.RunDirError, match=r"another run's outputs \(metrics.json, model\).*overwrite=true"):
        with rundir.claim(tmp_path, {"model": {"name": "other"}}):
            pass
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "running.json").exists()
    with rundir.claim(tmp_path, {"model": {"name": "tiny"}, "tracking": {"parent_run_id": "b"}}):  # same run again
        assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "model").exists()
    rundir.write_json(tmp_path / "error.json", {"type": "X"})
    with rundir.claim(tmp_path, {"model": {"name": "other"}}, overwrite=True):
        assert not (tmp_path / "error.json").exists()


def test_a_failed_rerun_leaves_no_stale_results_and_no_start_for_init_from(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    assert run_cli(*QUICK, f"hydra.run.dir={run_dir}").returncode == 0
    assert rundir.RunDir(run_dir).finished and (run_dir / "model").is_dir()

    other = run_cli(*QUICK, "method.learning_rate=1e-3", f"hydra.run.dir={run_dir}")
    assert other.returncode == 2 and "overwrite=true" in other.stderr
    assert (
        rundir.RunDir(run_dir).finished and "learning_rate: 0.01" in (run_dir / "spec.yaml").read_text()
    )  # the tiny sft

    bad = tmp_path / "test.jsonl"
    bad.write_text('{"uuid": "x"}\n')
    failed = run_cli(*QUICK, f"data.test_path={bad}", f"hydra.run.dir={run_dir}", "overwrite=true")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert (run_dir / "error.json").is_file()
    for stale in ("metrics.json", "model", "eval", "train_log.jsonl", "running.json"):
        assert not (run_dir / stale).exists(), stale
    assert "failed run (DataError" in rundir.RunDir(run_dir).not_finished()  # what init_from must refuse


def test_an_interrupted_sweep_is_finished_by_the_same_command(tmp_path, tiny_dir):
    sweep = ("-m", "method.learning_rate=1e-4,5e-4,1e-3", *QUICK, f"hydra.sweep.dir={tmp_path}")
    assert run_cli(*sweep).returncode == 0
    # As if interrupted in job 1: job 1 killed mid-run, job 2 never started.
    (tmp_path / "1" / "metrics.json").unlink()
    (tmp_path / "1" / "running.json").write_text(json.dumps({"pid": 99999999, "host": _host(), "start": 0}))
    subprocess.run(["rm", "-r", str(tmp_path / "2")], check=True)
    kept = (tmp_path / "0" / "metrics.json").stat().st_mtime_ns

    states = [outcomes.read(d) for d in outcomes.run_dirs(tmp_path)]
    assert [o.status.split(" (")[0] for o in states] == ["finished", "stopped before it finished", "not started"]
    assert "method.learning_rate=0.001" in states[2].overrides  # as Hydra writes it in the job's overrides.yaml

    again = run_cli(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "job 0 finished in an earlier start of this sweep; kept" in again.stdout
    assert (tmp_path / "0" / "metrics.json").stat().st_mtime_ns == kept
    assert all(rundir.RunDir(tmp_path / str(n)).finished for n in range(3))
    assert "3 of 3 jobs succeeded" in again.stdout


def _host() -> str:
    import socket

    return socket.gethostname()
