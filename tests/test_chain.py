"""SFT -> DPO chaining with method.init_from: from the command line, from the weights the previous run saved
(adapters merged, chains of adapter runs included), and the refusals at validation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import compose, run_cli
from omegaconf import OmegaConf
from safetensors.torch import load_file

from fcft import models, rundir
from fcft import spec as run_spec

SMALL = (
    "method.max_steps=2",
    "method.per_device_train_batch_size=2",
    "method.gradient_accumulation_steps=1",
    "data.limit=4",
    "eval.limit=4",
)


@pytest.fixture(scope="module")
def cli_chain(tmp_path_factory, tiny_dir):
    """`python -m fcft model=tiny method=sft tuning=spectrum`, then `method=dpo method.init_from=<that run>`."""
    root = tmp_path_factory.mktemp("chain")
    sft, dpo = root / "sft", root / "dpo"
    result = run_cli("model=tiny", "method=sft", "tuning=spectrum", *SMALL, f"hydra.run.dir={sft}")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("model=tiny", "method=dpo", f"method.init_from={sft}", *SMALL, f"hydra.run.dir={dpo}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sft, dpo


def test_cli_chain_runs_and_records_its_lineage(cli_chain):
    sft, dpo = cli_chain
    assert (sft / "spectrum.yaml").is_file() and (dpo / "model" / "model.safetensors").is_file()
    metrics = json.loads((dpo / "metrics.json").read_text())
    assert metrics["train"]["init_from"] == str(sft) and metrics["train"]["steps"] == 2
    assert metrics["data"]["train"]["source"].endswith("train_pref.jsonl") and metrics["eval"]["n"] == 4
    assert run_spec.load(dpo / "spec.yaml").method.init_from == str(sft)


def test_dpo_starts_from_the_sft_weights_not_the_base(cli_chain, tiny_dir):
    sft, dpo = cli_chain
    model, tokenizer = models.load(run_spec.load(dpo / "spec.yaml"), "cpu")
    start = dict(model.named_parameters())
    saved, base = load_file(sft / "model" / "model.safetensors"), load_file(tiny_dir / "model.safetensors")
    assert set(saved) <= set(start)
    assert all(torch.equal(start[name], saved[name]) for name in saved)
    trained = [name for name in saved if not torch.equal(saved[name], base[name])]
    assert "model.embed_tokens.weight" in trained and len(trained) < len(saved)  # Spectrum froze the rest
    assert tokenizer.name_or_path == str(sft / "model")


def _lora_delta(run_dir, module: str, scale: float) -> torch.Tensor:
    adapter = load_file(run_dir / "model" / "adapter_model.safetensors")
    a = adapter[f"base_model.model.{module}.lora_A.weight"]
    b = adapter[f"base_model.model.{module}.lora_B.weight"]
    return scale * b @ a


def test_adapter_runs_merge_along_the_chain(tmp_path, tiny_dir):
    """LoRA SFT -> LoRA DPO from it -> starting from that DPO run: base + SFT adapter + DPO adapter."""
    lora = ("tuning=lora", "method.learning_rate=1e-2", "eval.enabled=false", "compute=cpu", *SMALL)
    _run(tmp_path / "sft", "method=sft", *lora)
    _run(tmp_path / "dpo", "method=dpo", f"method.init_from={tmp_path / 'sft'}", *lora)

    module, scale = "model.layers.0.self_attn.q_proj", 32 / 16  # lora_alpha / lora_r
    base = load_file(tiny_dir / "model.safetensors")[f"{module}.weight"]
    expected = base + _lora_delta(tmp_path / "sft", module, scale) + _lora_delta(tmp_path / "dpo", module, scale)
    start, _ = models.load(run_spec.validate(compose("method=mpo", f"method.init_from={tmp_path / 'dpo'}")), "cpu")
    merged = start.get_parameter(f"{module}.weight").detach()
    assert not torch.allclose(merged, base, atol=1e-4)
    torch.testing.assert_close(merged, expected, atol=1e-6, rtol=1e-5)

    # QLoRA from the same run: the merged weights, quantized to 4 bits as they load.
    import bitsandbytes.functional as bnbf

    quantized, _ = models.load(
        run_spec.validate(compose("method=dpo", "tuning=qlora", f"method.init_from={tmp_path / 'dpo'}")), "cpu"
    )
    assert quantized.is_loaded_in_4bit
    weight = quantized.get_submodule(module).weight
    restored = bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    assert (restored - expected).norm() < (restored - base).norm()


def _run(run_dir, *overrides: str) -> None:
    """What `python -m fcft OVERRIDES hydra.run.dir=RUN_DIR` does, in this process."""
    from fcft import worker

    spec = run_spec.validate(compose(*overrides))
    run_dir.mkdir(parents=True)
    run_spec.save(spec, run_dir / rundir.SPEC)
    worker.run(spec, run_dir)


def test_init_from_is_checked_at_validation(cli_chain, tmp_path):
    sft, _ = cli_chain
    (tmp_path / "empty").mkdir()
    cases = [
        (f"method.init_from={tmp_path / 'empty'}", "has no model/ to start from"),
        (f"method.init_from={sft / 'model'}", f"is a model directory; pass the run directory that holds it ({sft})"),
    ]
    for override, message in cases:
        with pytest.raises(run_spec.SpecError) as err:
            run_spec.validate(compose("method=dpo", override))
        assert str(err.value).startswith("method.init_from: ") and message in str(err.value)
    with pytest.raises(
        run_spec.SpecError, match="trained model 'tiny' but this run names model 'qwen3_0.6b': add model=tiny"
    ):
        run_spec.validate(
            compose("method=dpo", "model=qwen3_0.6b", f"model.path={sft / 'model'}", f"method.init_from={sft}")
        )


def test_init_from_needs_no_hub_for_full_weights_but_the_base_of_an_adapter(cli_chain, tmp_path):
    sft, _ = cli_chain
    # A run of a hub model (offline here): its saved weights are all this run needs.
    hub_run = tmp_path / "hub-run"
    shutil.copytree(sft, hub_run)
    spec = OmegaConf.load(hub_run / "spec.yaml")
    spec.model.name, spec.model.embedded, spec.model.hub_id = "qwen3_0.6b", False, "Qwen/Qwen3-0.6B"
    OmegaConf.save(spec, hub_run / "spec.yaml")
    assert run_spec.validate(
        compose("method=dpo", "model=qwen3_0.6b", f"method.init_from={hub_run}")
    ).method.init_from == str(hub_run)
    # An adapter run merges into its base: that base must be reachable.
    (hub_run / "model" / "adapter_config.json").write_text("{}")
    with pytest.raises(
        run_spec.SpecError,
        match=f"method.init_from: {hub_run} holds an adapter for weights that can't be reached: "
        "model.hub_id: 'Qwen/Qwen3-0.6B' is not in the local hub cache",
    ):
        run_spec.validate(compose("method=dpo", "model=qwen3_0.6b", f"method.init_from={hub_run}"))
