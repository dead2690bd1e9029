"""Tracking when things go wrong (issue 15: nothing lost, nothing stale, nothing leaked): first runs racing to
create the embedded store, a store half set up, a refused connection, an MLflow server killed mid-run (the run
goes on and ends; `python -m fcft.tracking record` records it later), and a run interrupted while its store is
gone. Real stores throughout: SQLite files and a real `mlflow server`."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, compose, run_cli
from test_tracking import SMALL

from fcft import rundir, tracking
from fcft import spec as run_spec
from fcft.tracking import store
from fcft.tracking.run import Tracker

REFUSED = "http://127.0.0.1:1"
# test_tracking's small run, with room (10 steps) to kill the server after the first logged one
TRAIN = tuple("method.max_steps=10" if o.startswith("method.max_steps=") else o for o in SMALL)
RETRY_S = 4  # FCFT_TRACKING_RETRY_S for the killed-server run (30 by default)


def client(uri):
    from mlflow import MlflowClient

    for name in store.QUIET_LOGGERS:  # the sagemaker-mlflow plugin's warning on every http call
        logging.getLogger(name).setLevel(logging.ERROR)
    return MlflowClient(tracking_uri=uri)


def _open_at(uri: str, start_at: float, results) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        results.put(store.open_experiment(uri, "fcft")[1])
    except BaseException as err:
        results.put(f"{type(err).__name__}: {err}")


def test_first_runs_starting_at_once_share_one_store_and_a_half_set_up_one_is_reported(tmp_path):
    """Unlocked, 4 processes creating a fresh SQLite store at once fail with 'duplicate column name: step' or
    'table ... already exists'; under the store's lock all succeed, with one experiment."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (imported once, before the fork)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.5
    processes = [context.Process(target=_open_at, args=(uri, start_at, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert len(set(outcomes)) == 1 and outcomes[0].isdigit(), outcomes
    names = [e.name for e in client(uri).search_experiments()]
    assert sorted(names) == ["Default", "fcft"]
    assert (tmp_path / "mlflow.db.lock").is_file()

    # A store whose set-up stopped halfway (schema version behind, tables missing) is reported, never touched.
    half = tmp_path / "half" / "mlflow.db"
    half.parent.mkdir()
    shutil.copy(tmp_path / "mlflow.db", half)
    with sqlite3.connect(half) as db:
        db.execute("DROP TABLE logged_models")
        db.execute("UPDATE alembic_version SET version_num = 'cfd24bdc0731'")
    before = half.read_bytes()
    with pytest.raises(tracking.TrackingError) as err:
        store.open_experiment(f"sqlite:///{half}", "fcft")
    message = str(err.value)
    assert f"the MLflow store {half} was left half set up (schema version cfd24bdc0731 of " in message
    assert f"move it aside (mv {half} {half}.broken) and run again" in message and "was not touched" in message
    assert half.read_bytes() == before


def test_a_refused_connection_stops_the_run_within_seconds(tmp_path):
    from fcft import worker

    spec = run_spec.validate(compose("method=none", f"tracking.uri={REFUSED}"))
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as err:
        worker.run(spec, tmp_path)
    elapsed = time.monotonic() - started
    assert str(err.value) == (
        f"tracking: nothing answers at {REFUSED} (connection refused); start the server, fix tracking.uri, or run "
        "with tracking=none (MLflow's own retries: MLFLOW_HTTP_REQUEST_MAX_RETRIES)"
    )
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert json.loads((tmp_path / "error.json").read_text())["type"] == "TrackingError"
    assert not (tmp_path / "eval").exists()


class Terminated(BaseException):
    """As fcft.runs.jobs.Terminated: SIGTERM raised into the run."""


def test_an_interrupted_run_ends_killed_and_a_gone_store_leaves_a_note(tmp_path, mlflow_store, capsys):
    from launchers.processes import free_port

    spec = run_spec.validate(compose("method=none"))
    cases = [(KeyboardInterrupt(), "KILLED"), (SystemExit(143), "KILLED"), (Terminated(), "KILLED")]
    cases += [(RuntimeError("broken"), "FAILED")]
    for i, (err, status) in enumerate(cases):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        run_spec.save(spec, run_dir / rundir.SPEC)
        rundir.RunDir(run_dir).write_error(err)
        tracker = tracking.start(spec, run_dir)
        tracker.fail(run_dir, err)
        assert client(mlflow_store).get_run(tracker.run_id).info.status == status, type(err).__name__
        assert "tracking" not in json.loads((run_dir / "error.json").read_text())

    # The store is gone as the run is interrupted: one short try, then a note in error.json and on stderr.
    gone = f"http://127.0.0.1:{free_port()}"
    run_dir = tmp_path / "gone"
    rundir.RunDir(run_dir).write_error(KeyboardInterrupt())
    tracker = Tracker(client(gone), gone, "1", "0" * 32, "gone")
    started = time.monotonic()
    tracker.fail(run_dir, KeyboardInterrupt())
    assert time.monotonic() - started < 5
    note = json.loads((run_dir / "error.json").read_text())["tracking"]
    command = f"python -m fcft.tracking record {run_dir}"
    assert note["run_id"] == "0" * 32 and note["uri"] == gone and note["record_with"] == command
    assert note["not_recorded"] == ["artifacts", "end (KILLED)"]
    assert f"fcft: MLflow at {gone} was unreachable" in capsys.readouterr().err

    # Recorded later, in a store that answers (the noted run is not there: a run is created), ended KILLED.
    run_spec.save(spec, run_dir / rundir.SPEC)
    done = tracking.record(run_dir, uri=mlflow_store)
    assert done.startswith(f"{run_dir}: recorded in MLflow run ") and "(created, KILLED)" in done
    run_id = done.split("MLflow run ")[1].split()[0]
    assert client(mlflow_store).get_run(run_id).info.status == "KILLED"
    assert "tracking" not in json.loads((run_dir / "error.json").read_text())  # the note is no longer true
    assert tracking.record(run_dir, uri=mlflow_store).endswith(f"MLflow run {run_id} (KILLED), nothing new")


def serve(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port with its store in root (as tests/test_sweeps.py's fixture starts it)."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "a")
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def logged_losses(db: Path) -> int:
    """How many train/loss values the server's store holds (read straight from its SQLite file)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM metrics WHERE key = 'train/loss'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_server_killed_mid_run_costs_the_run_nothing_and_the_run_is_recorded_later(tmp_path, tiny_dir):
    """The server dies after the first logged step: training goes on, the run ends (exit 0, metrics.json
    complete) a few seconds after an untracked one would, naming the command that records it; once the same store
    is served again (here at another port: the old one is still refused as the run ends), that command completes
    the MLflow run, and a second call does nothing new."""
    from test_sweeps import wait_until_up

    from launchers.processes import free_port

    root, port = tmp_path / "server", free_port()
    root.mkdir()
    url = f"http://127.0.0.1:{port}"
    server = serve(root, port)
    try:
        started = time.monotonic()  # an untracked run, while the server boots
        untracked = run_cli(*TRAIN, "tracking=none", f"hydra.run.dir={tmp_path / 'untracked'}")
        untracked_s = time.monotonic() - started
        assert untracked.returncode == 0, untracked.stderr[-3000:]
        wait_until_up((url, server, root))

        run_dir = tmp_path / "tracked"
        env = {**os.environ, "FCFT_TRACKING_RETRY_S": str(RETRY_S)}
        command = [sys.executable, "-m", "fcft", *TRAIN, f"tracking.uri={url}", f"hydra.run.dir={run_dir}"]
        started = time.monotonic()
        job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while logged_losses(root / "server.db") == 0 and job.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.02)
        stop(server)
        logged_at_kill = logged_losses(root / "server.db")
        moved_port = free_port()  # the same store served again, at another address, booting as the run ends
        server = serve(root, moved_port)
        output, _ = job.communicate(timeout=180)
        tracked_s = time.monotonic() - started
        moved = wait_until_up((f"http://127.0.0.1:{moved_port}", server, root))
        recorded = run_cli("record", str(run_dir), str(run_dir), f"--uri={moved}", module="fcft.tracking")
        mlflow = client(moved)
        run = mlflow.get_run(json.loads((run_dir / "metrics.json").read_text())["tracking"]["run_id"])
        losses = mlflow.get_metric_history(run.info.run_id, "train/loss")
        files = {item.path for item in mlflow.list_artifacts(run.info.run_id)}
    finally:
        stop(server)
    print(f"untracked {untracked_s:.1f} s, server killed mid-run {tracked_s:.1f} s")
    assert job.returncode == 0, output[-3000:]
    assert 1 <= logged_at_kill < 10, "the server was killed mid-training"
    assert tracked_s < 90 and tracked_s < untracked_s + RETRY_S + 15, (tracked_s, untracked_s)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 10 and metrics["eval"]["n"] == 4
    run_id = metrics["tracking"]["run_id"]
    command = f"python -m fcft.tracking record {run_dir}"
    assert f"fcft: MLflow at {url} was unreachable" in output and command in output
    assert output.count("did not take the train metrics") == 1, "one warning, not one per step"

    assert recorded.returncode == 0, recorded.stderr[-3000:]
    first, second = recorded.stdout.splitlines()[-2:]  # the same directory twice: the second call finds it done
    assert first.startswith(f"fcft: {run_dir}: recorded in MLflow run {run_id} (FINISHED)")
    assert second.startswith(f"fcft: {run_dir}: already recorded in MLflow run {run_id} (FINISHED), nothing new")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/acc_norm"] == pytest.approx(metrics["eval"]["acc_norm"])
    assert sorted(m.step for m in losses) == list(range(1, 11))
    assert {"spec.yaml", "metrics.json", "train_log.jsonl", "eval"} <= files
    assert json.loads((run_dir / "metrics.json").read_text())["tracking"]["uri"] == moved


def test_a_run_killed_in_its_directory_is_ended_killed_and_linked_by_the_run_that_resumes_it(tmp_path, mlflow_store):
    """SIGKILL leaves the MLflow run RUNNING and running.json behind: the next run there ends it and links it."""
    import socket

    from mlflow import MlflowClient

    from fcft import worker

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("fcft") or client.get_experiment(client.create_experiment("fcft"))
    killed = client.create_run(experiment.experiment_id, run_name="killed").info.run_id
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "run"
    rundir.write_json(
        run_dir / rundir.RUNNING,
        {
            "pid": int(gone.stdout),
            "host": socket.gethostname(),
            "start": 0,
            "token": "dead",
            "mlflow_run_id": killed,
            "mlflow_uri": mlflow_store,
        },
    )
    spec = run_spec.validate(compose("method=none", "eval.limit=2"))
    metrics = worker.run(spec, run_dir)
    resumed = client.get_run(metrics["tracking"]["run_id"])
    assert client.get_run(killed).info.status == "KILLED"
    assert resumed.data.tags["fcft.resumes_run_id"] == killed and resumed.info.status == "FINISHED"
    assert client.get_run(killed).data.tags["fcft.resumed_by_run_id"] == resumed.info.run_id
    assert not (run_dir / rundir.RUNNING).exists()
