"""The run contract end to end on the tiny model: CLI -> spec.yaml -> launcher -> worker -> run directory."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from fcft import spec as run_spec
from fcft.data.formats import CATEGORIES


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_dir):
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "method.max_steps=5")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_cli_run_leaves_the_contract_files(sft_run):
    run_dir, result = sft_run
    for name in (
        "spec.yaml",
        "metrics.json",
        "eval/samples.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "train_log.jsonl",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 5 and metrics["train"]["loss"] > 0
    assert (
        set(metrics["eval"])
        == {
            "acc",
            "acc_norm",
            "acc_norm_ci95",
            "macro_f1",
            "macro_f1_ci95",
            "n",
            "format",
            "tool_hallucination_rate",
            "confusion",
            "backend",
        }
        and metrics["eval"]["n"] == 48
    )
    samples = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 48
    assert {"uuid", "gold", "predicted", "loglikelihoods"} <= set(samples[0])
    assert all(len(s["loglikelihoods"]) == 4 and s["gold"] in CATEGORIES for s in samples)
    acc = sum(s["predicted"] == s["gold"] for s in samples) / len(samples)
    assert metrics["eval"]["acc"] == pytest.approx(acc)
    assert str(run_dir) in result.stdout and "acc_norm" in result.stdout
    assert not (run_dir / "error.json").exists() and not list(run_dir.glob(".*.tmp"))


def test_worker_reruns_the_spec_to_the_same_metrics(sft_run, tmp_path):
    run_dir, _ = sft_run
    result = run_cli(str(run_dir / "spec.yaml"), "--run-dir", str(tmp_path), module="fcft.worker")
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((run_dir / "metrics.json").read_text())
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["eval"] == first["eval"]
    assert again["train"]["loss"] == first["train"]["loss"]
    assert run_spec.load(tmp_path / "spec.yaml") == run_spec.load(run_dir / "spec.yaml")


def test_saved_model_reloads_and_evaluates_alone(sft_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = sft_run
    AutoTokenizer.from_pretrained(run_dir / "model")
    AutoModelForCausalLM.from_pretrained(run_dir / "model")
    result = run_cli("method=none", f"model.path={run_dir / 'model'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())["eval"]
    reloaded = json.loads((tmp_path / "metrics.json").read_text())
    assert reloaded["train"] == {} and not (tmp_path / "model").exists()
    assert reloaded["eval"] == trained  # every metric, the intervals and the confusion matrix


def test_lora_run_saves_an_adapter_that_peft_loads(tmp_path, tiny_dir):
    from peft import AutoPeftModelForCausalLM

    from fcft import worker

    spec = run_spec.validate(
        _compose("tuning=lora", "method.max_steps=2", "eval.limit=4", "data.limit=32", "compute=cpu")
    )
    metrics = worker.run(spec, tmp_path)
    assert metrics["train"]["steps"] == 2 and metrics["eval"]["n"] == 4
    assert (tmp_path / "model" / "adapter_config.json").is_file()
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "model")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_failed_run_leaves_error_json_and_no_metrics(tmp_path, tiny_dir):
    from fcft import worker
    from fcft.data.when2call import DataError

    bad = tmp_path / "test.jsonl"
    bad.write_text('{"uuid": "x"}\n')
    spec = run_spec.validate(_compose("method=none", f"data.test_path={bad}"))
    with pytest.raises(DataError, match="line 1: missing field"):
        worker.run(spec, tmp_path / "run")
    error = json.loads((tmp_path / "run" / "error.json").read_text())
    assert error["type"] == "DataError" and "line 1" in error["message"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_multirun_runs_one_job_per_value(tmp_path):
    result = run_cli(
        "-m", "method.learning_rate=1e-4,5e-4", "method.max_steps=3", "eval.limit=8", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rates = sorted(run_spec.load(tmp_path / str(i) / "spec.yaml").method.learning_rate for i in (0, 1))
    assert rates == [1e-4, 5e-4]
    for i in (0, 1):
        assert json.loads((tmp_path / str(i) / "metrics.json").read_text())["train"]["steps"] == 3


def _compose(*overrides):
    from conftest import compose

    return compose(*overrides)
