"""Composition of every config group combination, and every validation error, before any model loads."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from conftest import CONF_DIR, compose, run_cli
from omegaconf import OmegaConf

from fcft import spec as run_spec
from fcft.data import SAMPLE_DIR

GROUPS = ("model", "method", "tuning", "compute", "launcher", "data", "eval", "tracking", "experiment")
OPTIONS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in GROUPS}
WHAT = ("model", "method", "tuning", "data", "eval")  # what a run does
# Where it runs: each compute preset with the launcher that runs it (ml.* instance types on SageMaker).
WHERE = [(c, "sagemaker" if c.startswith("ml.") else "local") for c in OPTIONS["compute"]]
OFFLINE_STAND_INS = [
    f"data.{k}={SAMPLE_DIR}/{f}"
    for k, f in (("train_path", "train_sft.jsonl"), ("pref_path", "train_pref.jsonl"), ("test_path", "test.jsonl"))
]


def test_every_group_has_its_documented_options():
    assert {"tiny", "qwen3_0.6b", "qwen3_1.7b", "llama3.2_3b"} <= set(OPTIONS["model"])
    assert {"none", "sft", "dpo", "mpo"} <= set(OPTIONS["method"])
    assert {"full", "lora", "qlora", "spectrum"} <= set(OPTIONS["tuning"])
    assert {"sample", "when2call"} <= set(OPTIONS["data"])
    assert "local" in OPTIONS["launcher"] and "local" in OPTIONS["compute"] and "default" in OPTIONS["eval"]
    assert {"sagemaker"} <= set(OPTIONS["launcher"])
    assert {"mlflow", "none"} <= set(OPTIONS["tracking"]) and {"results_table", "dpo_search"} <= set(
        OPTIONS["experiment"]
    )
    assert {
        "cpu",
        "cpu_ddp2",
        "cpu_zero3",
        "gpu",
        "gpu_zero3",
        "ml.g5.2xlarge",
        "ml.p4d.24xlarge",
        "ml.p5.48xlarge",
    } <= set(OPTIONS["compute"])


def _combinations() -> list[tuple[str, ...]]:
    """Every model x method x tuning combination; data and eval options take turns, so each appears."""
    crossed, turns = WHAT[:3], WHAT[3:]
    combos = []
    for i, head in enumerate(itertools.product(*(OPTIONS[g] for g in crossed))):
        combos.append(head + tuple(OPTIONS[g][i % len(OPTIONS[g])] for g in turns))
    return combos


@pytest.mark.parametrize("combo", _combinations(), ids="-".join)
def test_every_group_combination_composes_into_a_valid_spec(combo, tiny_dir):
    choices = dict(zip(WHAT, combo))
    # Offline stand-ins for what the real options fetch from the hub: the tiny model's files, the sample data.
    cfg = compose(*(f"{g}={o}" for g, o in choices.items()), f"model.path={tiny_dir}", *OFFLINE_STAND_INS)
    spec = run_spec.validate(cfg)
    assert spec.model.name == choices["model"]
    assert spec.method.name == choices["method"]
    assert spec.tuning.name == choices["tuning"]
    assert spec.data.name == choices["data"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.method.name = "other"


@pytest.mark.parametrize("compute, launcher", WHERE)
def test_every_compute_preset_composes_with_its_launcher(compute, launcher):
    import torch

    from fcft.runs.launch import make_launcher

    cfg = compose(f"compute={compute}", f"launcher={launcher}")
    spec = run_spec.validate(cfg)
    assert spec.compute.name == compute and spec.launcher["_target_"].startswith(f"launchers.{launcher}.")
    if launcher == "local" and spec.compute.accelerator == "cuda" and not torch.cuda.is_available():
        with pytest.raises(run_spec.SpecError, match="needs a CUDA GPU"):
            make_launcher(spec)  # the local launcher checks the machine it runs on
    if launcher == "sagemaker":
        assert spec.launcher["instance_type"] == compute, "an ml.* preset sets the SageMaker launcher's instance"


def test_real_models_keep_their_hub_ids_and_recipe_values():
    cfg = compose("model=qwen3_0.6b")
    assert cfg.model.hub_id == "Qwen/Qwen3-0.6B" and cfg.model.dtype == "bfloat16" and cfg.model.max_length == 2048
    assert compose("model=llama3.2_3b").model.hub_id == "meta-llama/Llama-3.2-3B-Instruct"
    method = compose("model=qwen3_0.6b", "method=sft").method  # the recipe's; the tiny model has its own
    assert (method.learning_rate, method.lr_scheduler_type, method.warmup_ratio) == (5e-5, "cosine", 0.1)
    assert (method.gradient_accumulation_steps, method.seed) == (2, 42)


def test_spec_file_round_trips(tmp_path):
    spec = run_spec.validate(compose("method.max_steps=3", "tuning=lora"))
    path = run_spec.save(spec, tmp_path / "spec.yaml")
    assert run_spec.load(path) == spec
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be renamed away"


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    (tmp_path / "test.jsonl").write_text((SAMPLE_DIR / "test.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    spec = run_spec.validate(compose("data.test_path=test.jsonl"))
    assert spec.data.test_path == str(tmp_path / "test.jsonl")


@pytest.mark.parametrize(
    "override, message",
    [
        ("+method.foo=1", "method.foo: not a setting of method=sft; its settings: batching, global_batch_size,"),
        ("+foo=1", "foo: unknown key; the spec's groups are model, method, tuning"),
        ("+model.extra.deep=1", "model.extra: not a setting"),
        ("method.learning_rat=1", "method.learning_rat: not a setting of method=sft (did you mean 'learning_rate'?)"),
        (
            "tuning=full tuning.top_percent=150",
            "tuning.top_percent: not a setting of tuning=full; tuning=spectrum takes it",
        ),
        (
            "model=qwen3_0.6b",
            "model.hub_id: 'Qwen/Qwen3-0.6B' is not in the local hub cache and HF_HUB_OFFLINE is set: "
            "set model.path=DIR",
        ),
        ("model.path=/nonexistent/model", "model.path=/nonexistent/model is not a model directory"),
        ("data.test_path=/nonexistent/test.jsonl", "data.test_path: file /nonexistent/test.jsonl does not exist"),
        ("data.train_path=/nonexistent/train.jsonl", "data.train_path: file /nonexistent/train.jsonl does not exist"),
        ("data=when2call", "data.hub_id: 'nvidia/When2Call' is not in the local hub cache"),
        ("method.max_steps=0", "method.max_steps: must be -1"),
        ("method.learning_rate=-1", "method.learning_rate: must be > 0"),
        ("model.dtype=float8", "model.dtype: 'float8' is not one of float32, bfloat16, float16"),
        (
            "data.format=chatml",
            "data.format: unknown format 'chatml'; valid formats: blog, chat_template, llama3_2, qwen2_5",
        ),
        ("eval.format=chatml", "eval.format: unknown format 'chatml'"),
        ("tuning=lora tuning.lora_dropout=1.5", "tuning.lora_dropout: must be in [0, 1)"),
        ("method=none eval.enabled=false", "method=none only evaluates"),
        ("eval.bootstrap_resamples=0", "eval.bootstrap_resamples: must be >= 1"),
        ("compute=cpu model.attn_implementation=flash_attention_2", "flash_attention_2 needs a CUDA GPU"),
        ("method=sft method.beta=0.1", "method.beta: not a setting of method=sft; method=dpo, kto, mpo take it"),
        (
            "method=sft method.loss_type=[sigmoid]",
            "method.loss_type: not a setting of method=sft; method=dpo, kto, mpo",
        ),
        ("method=none method.learning_rate=1e-5", "method.learning_rate: not a setting of method=none; method=dpo,"),
        ("method=dpo method.beta=0", "method.beta: dpo needs beta > 0"),
        (
            "method=dpo method.loss_type=[sigmoidd]",
            "method.loss_type: unknown loss type 'sigmoidd'; valid: sigmoid, hinge",
        ),
        ("method=dpo method.loss_type=[exo_pair]", "unknown loss type 'exo_pair'"),
        ("method=dpo method.loss_type=[]", "method.loss_type: dpo needs a list of loss types"),
        (
            "method=mpo method.loss_weights=[0.8,0.2]",
            "method.loss_weights: 2 weights for 3 loss types ['sigmoid', 'bco_pair', 'sft']",
        ),
        (
            "method=dpo method.init_from=/nonexistent/run",
            "method.init_from: '/nonexistent/run' is neither a run directory nor an MLflow run id",
        ),
        (
            "method=dpo method.init_from=3f2a9c",
            "is neither a run directory nor an MLflow run id (32 hexadecimal characters",
        ),
        ("method=dpo data.pref_path=null", "data.pref_path: is null and data.hub_id is null"),
        ("method=mpo data.pref_path=/nonexistent.jsonl", "data.pref_path: file /nonexistent.jsonl does not exist"),
        (
            "tuning=full tuning.load_in_4bit=true",
            "tuning.load_in_4bit: not a setting of tuning=full; tuning=qlora takes it",
        ),
        (
            "tuning=spectrum tuning.load_in_4bit=true",
            "tuning.load_in_4bit: not a setting of tuning=spectrum; tuning=qlora takes it",
        ),
        (
            "tuning=qlora tuning.load_in_4bit=false",
            "tuning.load_in_4bit: tuning=qlora loads the base weights in 4 bits; "
            "for LoRA on full-precision weights use tuning=lora",
        ),
        ("tuning=qlora tuning.bnb_4bit_quant_type=int4", "tuning.bnb_4bit_quant_type: 'int4' is not one of nf4, fp4"),
        ("tuning=qlora tuning.lora_r=0", "tuning.lora_r: lora_r and lora_alpha must be >= 1"),
        ("tuning=spectrum tuning.top_percent=0", "tuning.top_percent: must be in (0, 100], got 0.0"),
        ("tuning=spectrum tuning.top_percent=100.5", "tuning.top_percent: must be in (0, 100], got 100.5"),
        (
            "tuning=spectrum tuning.spectrum_file=/nonexistent.yaml",
            "tuning.spectrum_file: /nonexistent.yaml does not exist",
        ),
        (
            "tuning=lora tuning.spectrum_file=/nonexistent.yaml",
            "tuning.spectrum_file: not a setting of tuning=lora; tuning=spectrum takes it",
        ),
        ("tracking.uri=ftp://example.com", "tracking.uri: 'ftp://example.com' is not a tracking URI fcft can use"),
        (
            "tracking.uri=/tmp/mlruns",
            "tracking.uri: '/tmp/mlruns' is not a tracking URI fcft can use; give http(s)://host:port",
        ),
        (
            "tracking.uri=https://me:hunter2@mlflow.example.com",
            "tracking.uri: holds a password, and the spec is written to disk",
        ),
        (
            "tracking.uri=arn:aws:sagemaker:us-east-1:123:mlflow-tracking-server/x",
            "tracking.uri: 'arn:aws:sagemaker:us-east-1:123:mlflow-tracking-server/x' is not a SageMaker MLflow ARN",
        ),
        ("tracking.parent_run_id=abc", "tracking.parent_run_id: 'abc' is not an MLflow run id"),
    ],
)
def test_validation_errors_name_the_key_and_what_is_valid(override, message):
    with pytest.raises(run_spec.SpecError) as err:
        run_spec.validate(compose(*override.split()))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "method.learning_rate=abc",
            "method.learning_rate: Value 'abc' of type 'str' could not be converted to Float",
        ),
        ("tuning.name=qlorra", "tuning.name: unknown tuning 'qlorra'; valid: full, lora, qlora, spectrum"),
        ("eval.backend=lm_evl", "eval.backend: Invalid value 'lm_evl', expected one of [fcft, lm_eval]"),
        ("compute.num_processes=two", "compute.num_processes: Value 'two' of type 'str' could not be converted"),
    ],
)
def test_type_errors_name_the_key(override, message):
    with pytest.raises(run_spec.SpecError) as err:
        run_spec.validate(compose(override))
    assert message in str(err.value)


def test_a_spec_written_before_per_option_schemas_still_loads(tmp_path):
    """Version 1 spec.yaml files (one flat schema per group, instance settings under compute) load as version 2."""
    v1 = CONF_DIR.parent / "tests" / "data" / "spec_v1"
    loaded = {}
    for path in sorted(v1.glob("*.yaml")):
        text = path.read_text().replace("@SAMPLE_DIR@", str(SAMPLE_DIR)).replace("@TMP@", str(tmp_path))
        (tmp_path / path.name).write_text(text)
        loaded[path.stem] = run_spec.load(tmp_path / path.name)
    sft, dpo, sagemaker = loaded["sft_spectrum"], loaded["dpo_lora"], loaded["sagemaker_spot"]
    assert (sft.method.name, sft.tuning.top_percent, sft.method.max_steps) == ("sft", 50.0, 3)
    assert not hasattr(sft.method, "beta"), "DPO's keys of a version 1 SFT spec are dropped"
    assert (dpo.tuning.name, dpo.tuning.lora_r, dpo.method.beta, dpo.tracking.enabled) == ("lora", 16, 0.1, False)
    assert sagemaker.launcher["instance_type"] == "ml.p4d.24xlarge" and sagemaker.launcher["use_spot"] is True
    assert sagemaker.launcher["max_wait_s"] == 180000 and not hasattr(sagemaker.compute, "instance_type")
    assert list(sagemaker.method.loss_type) == ["sigmoid", "bco_pair", "sft"]
    resaved = run_spec.load(run_spec.save(sagemaker, tmp_path / "again.yaml"))
    assert resaved == sagemaker and resaved.version == run_spec.VERSION


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["method.learning_rat=1"],
            "method.learning_rat: not a setting of method=sft (did you mean 'learning_rate'?)",
        ),
        (["method.learning_rate=abc"], "could not be converted to Float"),
        (
            ["model=qwen3_06b"],
            "model: no option 'qwen3_06b' (did you mean 'qwen3_0.6b'?); options: llama3.2_3b, qwen3_0.6b",
        ),
        (["+method.foo=1"], "fcft: invalid config: method.foo: not a setting of method=sft"),
        (["modle=tiny"], "fcft: invalid config: modle: unknown key (did you mean 'model'?)"),
        (
            ["compute=ml.g5.2xlarge"],
            "launcher.instance_type: not a setting of launcher=local; launcher=sagemaker takes it",
        ),
        (["model=qwen3_0.6b"], "set model.path=DIR to a local copy, or go online"),
        (["data.test_path=/nonexistent.jsonl"], "data.test_path: file /nonexistent.jsonl does not exist"),
        (["launcher._target_=launchers.nope.Launcher"], "launcher._target_: can't import 'launchers.nope.Launcher'"),
        (["+launcher.bogus=1"], "launcher.bogus: not a setting of launcher=local; its settings: none"),
    ],
)
def test_cli_rejects_bad_input_with_a_message_and_nonzero_exit(args, message, tmp_path):
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run" / "spec.yaml").exists(), "nothing is written for an invalid config"


def test_cfg_job_prints_the_composed_config_without_running():
    result = run_cli("--cfg", "job", "method.max_steps=7")
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout).method.max_steps == 7
