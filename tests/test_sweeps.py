"""Multiruns from the command line on the tiny model: MLflow parent and child runs, the sweep report (report.md,
results.csv, plots), failures, the results-table experiment, the Optuna search, and a real `mlflow server`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import run_cli
from omegaconf import OmegaConf

from fcft.report import report

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = (
    "method.per_device_train_batch_size=2",
    "method.gradient_accumulation_steps=1",
    "method.logging_steps=1",
    "data.limit=8",
    "eval.limit=8",
    "eval.bootstrap_resamples=100",
)


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def children(uri: str, parent: dict) -> list:
    return client(uri).search_runs(
        [parent["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{parent['parent_run_id']}'",
        order_by=["attributes.start_time ASC"],
    )


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]  # past the header and its rule
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.fixture(scope="module", autouse=True)
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1, started first so that it boots (10-30 s) while the tests before the
    one that uses it run."""
    from launchers.processes import free_port

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner process: a faster start
    process = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=open(root / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield f"http://127.0.0.1:{port}", process, root
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def wait_until_up(server) -> str:
    url, process, root = server
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return url
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer in 180 s: {(root / 'server.log').read_text()[-3000:]}")


# --- a 2 x 2 DPO sweep ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpo_grid(tmp_path_factory, tiny_dir):
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "dpo_grid"
    result = run_cli(
        "-m",
        "method=dpo",
        "method.beta=0.1,0.5",
        "method.learning_rate=5e-7,1e-6",
        "method.max_steps=3",
        *SMALL,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


def test_a_sweep_is_one_mlflow_parent_with_its_jobs_as_children(dpo_grid, mlflow_store):
    sweep_dir, _ = dpo_grid
    parent = json.loads((sweep_dir / "tracking.json").read_text())
    runs = children(mlflow_store, parent)
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)
    assert [(r.data.params["method.beta"], r.data.params["method.learning_rate"]) for r in runs] == [
        ("0.1", "5e-07"),
        ("0.1", "1e-06"),
        ("0.5", "5e-07"),
        ("0.5", "1e-06"),
    ]
    store = client(mlflow_store)
    for job, run in enumerate(runs):
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert metrics["tracking"]["run_id"] == run.info.run_id and run.data.tags["fcft.run_dir"] == str(
            sweep_dir / str(job)
        )
        assert run.data.metrics["eval/acc_norm"] == pytest.approx(metrics["eval"]["acc_norm"])
        assert len(store.get_metric_history(run.info.run_id, "train/loss")) == 3
    main = store.get_run(parent["parent_run_id"])
    assert main.info.status == "FINISHED" and main.info.run_name == "dpo_grid" and main.data.metrics["jobs"] == 4
    assert {"report/report.md", "report/results.csv"} <= {
        a.path for a in store.list_artifacts(main.info.run_id, "report")
    }


def test_a_sweep_report_has_every_job_a_csv_and_a_heatmap(dpo_grid):
    sweep_dir, result = dpo_grid
    folder = report.reports_root() / "dpo_grid"
    markdown = (folder / "report.md").read_text()
    assert f"fcft: report in {folder}/report.md" in result.stdout
    assert table_rows(section(markdown, "What was swept")) == [
        ["method.beta", "0.1, 0.5"],
        ["method.learning_rate", "5e-07, 1e-06"],
    ]
    assert "`method=dpo` `method.max_steps=3`" in markdown
    runs = table_rows(section(markdown, "Runs"))
    assert [row[:4] for row in runs] == [
        ["0", "0.1", "5e-07", "finished"],
        ["1", "0.1", "1e-06", "finished"],
        ["2", "0.5", "5e-07", "finished"],
        ["3", "0.5", "1e-06", "finished"],
    ]
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())["eval"]
    low, high = metrics["acc_norm_ci95"]
    assert runs[0][4] == f"{metrics['acc_norm']:.4f} [{low:.4f}, {high:.4f}]"
    assert section(markdown, "Best run").startswith("**") and section(markdown, "Failures") == "None."
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert len(rows) == 4 and rows[3]["method.beta"] == "0.5" and float(rows[3]["acc_norm"]) >= 0
    assert rows[0]["mlflow_run_id"] == json.loads((sweep_dir / "0" / "metrics.json").read_text())["tracking"]["run_id"]
    for name in (
        "acc_norm_method.beta_x_method.learning_rate.png",
        "acc_norm_vs_method.beta.png",
        "acc_norm_vs_method.learning_rate.png",
    ):
        assert (folder / name).read_bytes()[:8] == PNG and f"]({name})" in markdown


def test_a_report_rebuilds_from_the_run_directories(dpo_grid, tmp_path):
    sweep_dir, _ = dpo_grid
    assert report.main([str(sweep_dir), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "report.md").read_text() == (
        report.reports_root() / "dpo_grid" / "report.md"
    ).read_text()
    assert (tmp_path / "again" / "results.csv").read_text() == (
        report.reports_root() / "dpo_grid" / "results.csv"
    ).read_text()
    assert report.main([str(tmp_path / "nothing")]) == 2 and report.main([str(tmp_path / "again")]) == 2


# --- the published results table, on three tiny models -------------------------------------------------------


@pytest.fixture(scope="module")
def results_table(tmp_path_factory, tiny_dir):
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "results_table"
    result = run_cli(
        "-m",
        "+experiment=results_table",
        "model=tiny,tiny_llama,tiny_blog",
        "data=sample",
        "method.max_steps=2",
        *SMALL,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


def test_results_table_runs_base_sft_and_dpo_from_sft_per_model(results_table, mlflow_store):
    sweep_dir, _ = results_table
    for job, model in enumerate(("tiny", "tiny_llama", "tiny_blog")):
        stages = json.loads((sweep_dir / str(job) / "stages.json").read_text())["stages"]
        assert [s["name"] for s in stages] == ["base", "sft", "dpo"]
        specs = {s: OmegaConf.load(sweep_dir / str(job) / s / "spec.yaml") for s in ("base", "sft", "dpo")}
        assert {s: (str(c.model.name), str(c.method.name), str(c.tuning.name)) for s, c in specs.items()} == {
            "base": (model, "none", "full"),
            "sft": (model, "sft", "spectrum"),
            "dpo": (model, "dpo", "full"),
        }
        assert specs["dpo"].method.init_from == str(sweep_dir / str(job) / "sft")
        assert (sweep_dir / str(job) / "sft" / "spectrum.yaml").is_file()
    parent = json.loads((sweep_dir / "tracking.json").read_text())
    runs = {(r.data.tags["fcft.model"], r.data.tags["fcft.stage"]): r for r in children(mlflow_store, parent)}
    assert len(runs) == 9 and all(r.info.status == "FINISHED" for r in runs.values())
    sft, dpo = runs["tiny_llama", "sft"], runs["tiny_llama", "dpo"]
    assert dpo.data.tags["fcft.init_from_run_id"] == sft.info.run_id
    assert f"(#/experiments/{sft.info.experiment_id}/runs/{sft.info.run_id})" in dpo.data.tags["mlflow.note.content"]


def test_results_table_report_prints_the_published_layout(results_table):
    sweep_dir, result = results_table
    markdown = (report.reports_root() / "results_table" / "report.md").read_text()
    table = section(markdown, "Results table")
    ours, secondary, published = (table_rows(part) for part in table.split("### ")[1:4])
    header = "| Model | Base | Spectrum SFT | Spectrum SFT + DPO |"
    assert table.count(header) == 3 and header in result.stdout
    assert [row[0] for row in ours] == ["tiny", "tiny_llama", "tiny_blog"] and all(len(row) == 4 for row in ours)
    dpo = json.loads((sweep_dir / "1" / "dpo" / "metrics.json").read_text())["eval"]
    assert (
        ours[1][3]
        == f"{100 * dpo['acc_norm']:.2f}% [{100 * dpo['acc_norm_ci95'][0]:.1f}, {100 * dpo['acc_norm_ci95'][1]:.1f}]"
    )
    assert secondary[1][3].startswith(f"F1 {dpo['macro_f1']:.3f} [") and "halluc. " in secondary[1][3]
    assert published == [
        ["Llama-3.2-3B-Instruct", "46.50%", "53.41%", "62.67%"],
        ["Qwen3-0.6B", "47.64%", "56.10%", "62.02%"],
        ["Qwen3-1.7B", "41.57%", "60.43%", "71.06%"],
    ]
    assert len(table_rows(section(markdown, "Runs"))) == 9


# --- the Optuna search --------------------------------------------------------------------------------------


def test_optuna_search_maximises_eval_acc_norm(tmp_path, tiny_dir):
    sweep_dir = tmp_path / "dpo_search"
    result = run_cli(
        "-m",
        "+experiment=dpo_search",
        "hydra.sweeper.n_trials=2",
        "method.max_steps=1",
        *SMALL,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    scores = {}
    for job in ("0", "1"):
        overrides = dict(
            o.split("=", 1) for o in OmegaConf.load(sweep_dir / job / ".hydra" / "overrides.yaml") if "=" in o
        )
        assert (
            0.01 <= float(overrides["method.beta"]) <= 0.5 and 1e-7 <= float(overrides["method.learning_rate"]) <= 1e-5
        )
        scores[job] = (json.loads((sweep_dir / job / "metrics.json").read_text())["eval"]["acc_norm"], overrides)
    value, overrides = max(scores.values(), key=lambda s: s[0])
    assert best.best_value == value == max(s[0] for s in scores.values())
    assert float(overrides["method.beta"]) == pytest.approx(best.best_params["method.beta"])
    assert len(table_rows(section((report.reports_root() / "dpo_search" / "report.md").read_text(), "Runs"))) == 2


# --- failures, tracked on a real MLflow server --------------------------------------------------------------


def test_failed_jobs_are_reported_with_their_reason_and_the_others_finish(mlflow_server, tmp_path, tiny_dir):
    """Jobs 0 and 1: a value validation refuses; job 3: an error while training (its checkpoint directory holds
    a file where step 1's checkpoint goes); job 2 finishes. Tracked on `mlflow server`."""
    url = wait_until_up(mlflow_server)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "checkpoint-1").write_text("in the way\n")
    sweep_dir = tmp_path / "failures"
    result = run_cli(
        "-m",
        "method=dpo",
        "method.beta=-1,0.1",
        f"compute.checkpoint_dir=null,{checkpoints}",
        "compute.checkpoint_steps=1",
        "method.max_steps=1",
        *SMALL,
        f"tracking.uri={url}",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "x-mlflow-sm-tracking-server-arn" not in result.stderr and "request headers" not in result.stderr
    markdown = (report.reports_root() / "failures" / "report.md").read_text()
    failures = section(markdown, "Failures").splitlines()
    assert len(failures) == 3
    assert all("SpecError: method.beta: dpo needs beta > 0" in line for line in failures[:2])
    assert failures[2].startswith(f"- **3** (method.beta=0.1, compute.checkpoint_dir={checkpoints}): FileExistsError")
    traceback = json.loads((sweep_dir / "3" / "error.json").read_text())["traceback"]
    assert "_inner_training_loop" in traceback  # it failed during training, not before
    assert [row[3] for row in table_rows(section(markdown, "Runs"))] == ["failed", "failed", "finished", "failed"]

    parent = json.loads((sweep_dir / "tracking.json").read_text())
    assert parent["uri"] == url
    runs = children(url, parent)
    assert [(r.data.tags["fcft.run_dir"], r.info.status) for r in runs] == [
        (str(sweep_dir / "2"), "FINISHED"),
        (str(sweep_dir / "3"), "FAILED"),
    ]
    store = client(url)
    assert "error.json" in {a.path for a in store.list_artifacts(runs[1].info.run_id)}
    assert store.get_run(parent["parent_run_id"]).info.status == "FAILED"
