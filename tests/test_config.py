"""Composition of every config group combination, and every validation error, before any model loads."""

from __future__ import annotations

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
    assert OmegaConf.is_readonly(spec)


@pytest.mark.parametrize("compute, launcher", WHERE)
def test_every_compute_preset_composes_with_its_launcher(compute, launcher):
    import torch

    cfg = compose(f"compute={compute}", f"launcher={launcher}")
    if cfg.compute.accelerator == "cuda" and cfg.compute.instance_type is None and not torch.cuda.is_available():
        with pytest.raises(run_spec.SpecError, match="needs a CUDA GPU"):
            run_spec.validate(cfg)
        return
    spec = run_spec.validate(cfg)
    assert spec.compute.name == compute and spec.launcher._target_.startswith(f"launchers.{launcher}.")


def test_real_models_keep_their_hub_ids_and_recipe_values():
    cfg = compose("model=qwen3_0.6b")
    assert cfg.model.hub_id == "Qwen/Qwen3-0.6B" and cfg.model.dtype == "bfloat16" and cfg.model.max_length == 2048
    assert compose("model=llama3.2_3b").model.hub_id == "meta-llama/Llama-3.2-3B-Instruct"
    method = compose("method=sft").method
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
        ("+method.foo=1", "unknown key 'method.foo': valid keys under 'method' are"),
        ("+foo=1", "unknown key 'foo'"),
        ("+model.extra.deep=1", "unknown key 'model.extra'"),
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
        ("data.format=chatml", "data.format: unknown format 'chatml'; valid formats: blog, llama3_2, qwen2_5"),
        ("eval.format=chatml", "eval.format: unknown format 'chatml'"),
        ("tuning=lora tuning.lora_dropout=1.5", "tuning.lora_dropout: must be in [0, 1)"),
        ("method=none eval.enabled=false", "method=none only evaluates"),
        ("eval.bootstrap_resamples=0", "eval.bootstrap_resamples: must be >= 1"),
        ("compute=cpu model.attn_implementation=flash_attention_2", "flash_attention_2 needs a CUDA GPU"),
        ("method=sft method.beta=0.1", "method.beta: only the preference methods (dpo, mpo) take it; method is sft"),
        ("method=sft method.loss_type=[sigmoid]", "method.loss_type: only the preference methods"),
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
            "method.init_from: '3f2a9c' is neither a run directory nor an MLflow run id (32 hexadecimal",
        ),
        ("method=dpo data.pref_path=null", "data.pref_path: is null and data.hub_id is null"),
        ("method=mpo data.pref_path=/nonexistent.jsonl", "data.pref_path: file /nonexistent.jsonl does not exist"),
        (
            "tuning=full tuning.load_in_4bit=true",
            "tuning.load_in_4bit: 4-bit weights can't be trained directly, so tuning=full can't use them",
        ),
        (
            "tuning=spectrum tuning.load_in_4bit=true",
            "tuning=spectrum can't use them; QLoRA trains LoRA adapters on 4-bit weights: use tuning=qlora",
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
            "tuning.spectrum_file: only tuning=spectrum reads it; tuning is lora",
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
        ("method.learning_rat=1", "Key 'learning_rat' not in 'MethodSpec'"),
        ("method.learning_rate=abc", "Value 'abc' of type 'str' could not be converted to Float"),
        ("tuning.name=qlorra", "Invalid value 'qlorra', expected one of [full, lora, qlora, spectrum]"),
        ("eval.backend=lm_evl", "Invalid value 'lm_evl', expected one of [fcft, lm_eval]"),
    ],
)
def test_type_and_key_errors_come_from_the_schema(override, message):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose(override)
    assert message in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    "args, message",
    [
        (["method.learning_rat=1"], "Key 'learning_rat' not in 'MethodSpec'"),
        (["method.learning_rate=abc"], "could not be converted to Float"),
        (
            ["model=qwen3_06b"],
            "Could not find 'model/qwen3_06b'\n\nAvailable options in 'model':\n\tllama3.2_3b\n\tqwen3_0.6b",
        ),
        (["+method.foo=1"], "fcft: invalid config: unknown key 'method.foo'"),
        (["model=qwen3_0.6b"], "set model.path=DIR to a local copy, or go online"),
        (["data.test_path=/nonexistent.jsonl"], "data.test_path: file /nonexistent.jsonl does not exist"),
        (["launcher._target_=launchers.nope.Launcher"], "launcher._target_: can't import 'launchers.nope.Launcher'"),
        (["+launcher.bogus=1"], "unknown key 'launcher.bogus' for launchers.local.LocalLauncher"),
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
