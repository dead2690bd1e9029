"""MLflow tracking on a real SQLite store (the session's, tests/conftest.py): a run's params, metrics, artifacts and
end state, no secrets, init_from as a run id, the embedded store, remote jobs' tracking, and the checks of an
experiment's stages (tracking.uri's checks are with the others in test_config.py; stores that fail, in
test_tracking_faults.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose
from omegaconf import OmegaConf

from fcft import rundir, tracking
from fcft import spec as run_spec
from fcft.spec.hydra_schema import ExperimentSpec

SECRET = "mlflow_secret_do_not_leak_42"
SMALL = (
    "compute=cpu",
    "method.max_steps=2",
    "method.logging_steps=1",
    "method.per_device_train_batch_size=2",
    "method.gradient_accumulation_steps=1",
    "data.limit=8",
    "eval.limit=4",
    "eval.bootstrap_resamples=50",
)


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_files(store, run_id, path=None) -> list[str]:
    found = []
    for item in store.list_artifacts(run_id, path):
        found += artifact_files(store, run_id, item.path) if item.is_dir else [item.path]
    return found


def default_store_state() -> dict:
    """When the working directory's embedded store (mlflow.db, mlruns/) last changed; None where it is absent
    (a Quickstart `python -m fcft` before the tests leaves one)."""
    paths = (ROOT / "mlflow.db", ROOT / "mlruns")
    return {path.name: path.stat().st_mtime_ns if path.exists() else None for path in paths}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_dir, mlflow_store):
    """One SFT run in this process, with secrets in the environment that must not reach MLflow; also the
    working directory's embedded store before and after it."""
    from fcft import worker

    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    saved = {k: os.environ.get(k) for k in ("HF_TOKEN", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(HF_TOKEN=SECRET, MLFLOW_TRACKING_PASSWORD=SECRET)
    try:
        spec = run_spec.validate(compose(*SMALL, "tracking.run_name=tracked-sft", "+tracking.tags.purpose=test"))
        run_dir.mkdir()
        run_spec.save(spec, run_dir / rundir.SPEC)
        store_before = default_store_state()
        metrics = worker.run(spec, run_dir)
        store_after = default_store_state()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return run_dir, metrics, spec, (store_before, store_after)


def test_a_run_records_its_spec_metrics_and_files(tracked_run, mlflow_store):
    run_dir, metrics, spec, (store_before, store_after) = tracked_run
    store = client(mlflow_store)
    run = store.get_run(metrics["tracking"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked-sft"
    assert metrics["tracking"]["uri"] == mlflow_store and spec.tracking.uri == mlflow_store
    # params: the spec, flattened
    params = run.data.params
    assert params["model.name"] == "tiny" and params["method.max_steps"] == "2" and params["eval.limit"] == "4"
    assert float(params["method.learning_rate"]) == spec.method.learning_rate and params["tuning.name"] == "full"
    assert "tuning.lora_target_modules" not in params, "only the keys of the chosen option (tuning=full)"
    # train metrics at every logging step, eval metrics at the end
    losses = [m.value for m in store.get_metric_history(run.info.run_id, "train/loss")]
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([r["loss"] for r in logged if "loss" in r]) and len(losses) == 2
    ev = metrics["eval"]
    assert run.data.metrics["eval/acc_norm"] == pytest.approx(ev["acc_norm"])
    assert run.data.metrics["eval/macro_f1_ci95_high"] == pytest.approx(ev["macro_f1_ci95"][1])
    assert run.data.metrics["eval/n"] == 4 and "train_loss" in run.data.metrics
    tags = run.data.tags
    assert tags["fcft.run_dir"] == str(run_dir) and tags["fcft.method"] == "sft" and tags["purpose"] == "test"
    # artifacts, in mlruns/ beside the SQLite file, not in the working directory
    files = artifact_files(store, run.info.run_id)
    assert {"spec.yaml", "metrics.json", "train_log.jsonl", "eval/samples.jsonl", "eval/confusion.png"} <= set(files)
    assert run.info.artifact_uri.startswith(f"file://{mlflow_store[len('sqlite:///') :].rsplit('/', 1)[0]}/mlruns/")
    assert store_after == store_before  # the working directory's embedded store was not touched
    # no secret in params, tags or artifacts
    texts = [json.dumps(params), json.dumps(tags)]
    local = Path(run.info.artifact_uri[len("file://") :])
    texts += [p.read_bytes().decode("utf-8", "replace") for p in local.rglob("*") if p.is_file()]
    assert all(SECRET not in text for text in texts)


def test_a_failing_run_ends_failed_with_its_error_and_bad_data_fails_before_any_mlflow_run(tmp_path, mlflow_store):
    from fcft import worker
    from fcft.data.when2call import DataError

    store = client(mlflow_store)

    def runs_of(run_dir):
        experiment = store.get_experiment_by_name("fcft")
        where = f"tags.`fcft.run_dir` = '{run_dir}'"
        return store.search_runs([experiment.experiment_id], filter_string=where) if experiment else []

    # Bad data is found before the MLflow run is created: error.json, and nothing in the store.
    broken = tmp_path / "test.jsonl"
    broken.write_text('{"uuid": "x"}\n')
    bad_data = tmp_path / "bad-data"
    spec = run_spec.validate(compose("method=none", f"data.test_path={broken}"))
    with pytest.raises(DataError):
        worker.run(spec, bad_data)
    assert rundir.RunDir(bad_data).error()["type"] == "DataError" and runs_of(bad_data) == []

    # A failure once the run has started (weights that don't load) ends its MLflow run FAILED, with its files.
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")  # passes the reachability check, fails to load
    failing = tmp_path / "failing"
    spec = run_spec.validate(compose("method=none", f"model.path={weights}", "eval.limit=2"))
    failing.mkdir()
    run_spec.save(spec, failing / rundir.SPEC)  # as the command line does
    with pytest.raises(ValueError, match="config"):
        worker.run(spec, failing)
    (run,) = runs_of(failing)
    assert run.info.status == "FAILED"
    assert {"spec.yaml", "error.json"} <= set(artifact_files(store, run.info.run_id))


def test_init_from_takes_an_mlflow_run_id(tracked_run, mlflow_store, tmp_path):
    run_dir, metrics, _, _ = tracked_run
    run_id = metrics["tracking"]["run_id"]
    for given in (run_id, f"runs:/{run_id}"):
        spec = run_spec.validate(compose("method=dpo", f"method.init_from={given}"), find_run=tracking.run_dir_of)
        assert spec.method.init_from == str(run_dir)
    store = client(mlflow_store)
    experiment = store.get_experiment_by_name("fcft").experiment_id
    untagged = store.create_run(experiment).info.run_id
    gone = store.create_run(experiment, tags={"fcft.run_dir": str(tmp_path / "gone")}).info.run_id
    cases = [
        ("0" * 32, [], f"no MLflow run {'0' * 32} in {mlflow_store}"),
        (untagged, [], "has no fcft.run_dir tag: fcft did not record it"),
        (gone, [], f"recorded its run directory {tmp_path / 'gone'}, which is not on this machine"),
        (run_id, ["tracking=none"], "is an MLflow run id and can't be looked up here"),
    ]
    for init_from, extra, message in cases:
        with pytest.raises(run_spec.SpecError) as err:
            cfg = compose("method=dpo", f"method.init_from={init_from}", *extra)
            run_spec.validate(cfg, find_run=tracking.run_dir_of)
        assert str(err.value).startswith("method.init_from: ") and message in str(err.value)


def test_the_embedded_store_and_tracking_none_need_no_mlflow(tmp_path):
    """Validation resolves the default store without creating it or importing mlflow (kept ~1 s)."""
    code = (
        "import sys; from omegaconf import OmegaConf; from hydra import compose, initialize_config_dir; "
        "from fcft import spec; from fcft.spec.hydra_schema import register_schema; register_schema(); "
        "ctx = initialize_config_dir(config_dir=sys.argv[1], version_base='1.3'); ctx.__enter__(); "
        "a = spec.validate(compose('config')); b = spec.validate(compose('config', ['tracking=none'])); "
        "print(a.tracking.uri, b.tracking.name, getattr(b.tracking, 'uri', None), 'mlflow' in sys.modules)"
    )
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "conf")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [f"sqlite:///{tmp_path}/mlflow.db", "none", "None", "False"]
    assert list(tmp_path.iterdir()) == []  # created on first use only


def test_a_sagemaker_job_tracks_where_it_can_else_it_is_recorded_here(tracked_run, mlflow_store, tmp_path):
    from launchers.sagemaker import SageMakerLauncher, job_spec_for

    server = "http://mlflow.example.com:5000"
    remote = job_spec_for(run_spec.validate(compose("compute=ml.g5.2xlarge", f"tracking.uri={server}")), {})
    assert remote.tracking.name == "mlflow" and remote.tracking.uri == server
    assert SageMakerLauncher()._environment(remote)["MLFLOW_TRACKING_URI"] == server
    local = job_spec_for(run_spec.validate(compose("compute=ml.g5.2xlarge")), {})
    assert local.tracking.name == "none" and "MLFLOW_TRACKING_URI" not in SageMakerLauncher()._environment(local)

    # A job that could not track: its collected outputs are recorded here, once.
    run_dir, metrics, _, _ = tracked_run
    collected = tmp_path / "collected"
    shutil.copytree(run_dir, collected, ignore=shutil.ignore_patterns("model"))
    untracked = {k: v for k, v in metrics.items() if k != "tracking"}
    (collected / "metrics.json").write_text(json.dumps(untracked))
    tracking.record_collected(collected)
    recorded = json.loads((collected / "metrics.json").read_text())["tracking"]
    store = client(mlflow_store)
    run = store.get_run(recorded["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["fcft.run_dir"] == str(collected)
    assert len(store.get_metric_history(run.info.run_id, "train/loss")) == 2
    assert run.data.metrics["eval/acc_norm"] == pytest.approx(metrics["eval"]["acc_norm"])
    tracking.record_collected(collected)  # already recorded: nothing new
    assert json.loads((collected / "metrics.json").read_text())["tracking"] == recorded
    runs = store.search_runs([run.info.experiment_id], filter_string=f"tags.`fcft.run_dir` = '{collected}'")
    assert len(runs) == 1


def test_experiment_stages_are_checked():
    from fcft.runs import stages

    def experiment(*stage_list, columns=None):  # as Hydra composes it, on the schema
        return OmegaConf.merge(
            OmegaConf.structured(ExperimentSpec),
            {"name": "x", "stages": list(stage_list), "table": {"columns": columns} if columns else None},
        )

    cases = [
        (experiment(), "experiment.stages: experiment 'x' lists no stages"),
        (experiment({"name": "a"}, {"name": "a"}), "experiment.stages[1].name: 'a' must be a unique directory name"),
        (
            experiment({"name": "dpo", "init_from": "sft"}, {"name": "sft"}),
            "experiment.stages[0].init_from: 'sft' is not an earlier stage",
        ),
        (experiment({"name": "a"}, columns={"b": "B"}), "experiment.table.columns: 'b' is not a stage; stages: a"),
    ]
    for config, message in cases:
        with pytest.raises(run_spec.SpecError, match=message.replace("[", r"\[")):
            stages.check(config)
    with pytest.raises(run_spec.SpecError, match="experiment: 'results_table' runs several stages"):
        run_spec.validate(compose("+experiment=results_table"))
