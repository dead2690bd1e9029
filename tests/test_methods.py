"""Every method x tuning pair trains real steps on the tiny model, and exactly the parameters its tuning says:
the trained ones change, every other one stays the same bit for bit."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import compose

from fcft import models
from fcft import spec as run_spec
from fcft.data import formats
from fcft.data.when2call import load_part
from fcft.train.methods import get as get_method
from fcft.train.methods import registry

LINEAR = re.compile(r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")


def _spec(method: str, tuning: str, *extra: str):
    return run_spec.validate(
        compose(
            f"method={method}",
            f"tuning={tuning}",
            "compute=cpu",
            "eval.enabled=false",
            "data.limit=4",
            "method.max_steps=2",
            "method.per_device_train_batch_size=2",
            "method.gradient_accumulation_steps=1",
            "method.learning_rate=1e-3",
            "method.logging_steps=1",
            *extra,
        )
    )


def _base_name(name: str) -> str:
    """A parameter's name in the unwrapped model (PEFT adds a prefix, and `base_layer` for adapted modules)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _expected_trainable(tuning: str, model, run_dir) -> set[str]:
    names = {n for n, _ in model.named_parameters()}
    if tuning == "full":
        return names
    if tuning == "spectrum":
        from fcft.train import spectrum_yaml

        patterns = spectrum_yaml.read(run_dir / "spectrum.yaml")
        return {
            n for n, _ in model.named_parameters(remove_duplicate=False) if any(re.match(p, n) for p in patterns)
        } & names
    linear = {n for n, m in model.named_modules() if LINEAR.match(n)}
    return {f"{module}.lora_{ab}.default.weight" for module in linear for ab in "AB"}


@pytest.mark.parametrize("tuning", ["full", "lora", "qlora", "spectrum"])
@pytest.mark.parametrize("method", sorted(name for name, m in registry().items() if m.trains))
def test_method_trains_exactly_the_tunings_parameters(method, tuning, tmp_path, tiny_dir):
    spec = _spec(method, tuning)
    entry = get_method(method)  # the registry: its data part, its dataset, its trainer
    rows = load_part(spec.data, entry.part, spec.data.limit).rows
    model, tokenizer = models.load(spec, "cpu")
    assert getattr(model, "is_loaded_in_4bit", False) == (tuning == "qlora")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    dataset = entry.dataset(rows, formats.get("qwen2_5"), tokenizer, spec.model.max_length)
    trainer = entry.train(spec, model, tokenizer, dataset, tmp_path, "cpu")

    assert trainer.state.global_step == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    after = dict(trainer.model.named_parameters())
    trainable = {_base_name(n) for n, p in after.items() if p.requires_grad}
    assert trainable == _expected_trainable(tuning, model, tmp_path)
    if tuning == "spectrum":
        assert 0 < len(trainable) < len(before)
    assert {_base_name(n) for n in after} - trainable == set(before) - trainable, "no parameter appears or vanishes"
    for name, param in after.items():
        base = _base_name(name)
        if base in before:
            same = torch.equal(param.detach(), before[base])
            assert same != (base in trainable), f"{base}: {'trained but unchanged' if same else 'frozen but changed'}"
        elif ".lora_B." in name:
            assert param.detach().abs().sum() > 0, f"{name} is still at its zero initialisation"
    if method != "sft":
        _check_reference(trainer, before, adapters=tuning in ("lora", "qlora"))


def _check_reference(trainer, before, adapters: bool):
    """Adapters: the reference is the model with adapters disabled (no copy). Otherwise a frozen starting copy."""
    if adapters:
        assert trainer.ref_model is None
        return
    reference = dict(trainer.ref_model.named_parameters())
    assert set(reference) == set(before)
    assert all(not p.requires_grad and torch.equal(p, before[n]) for n, p in reference.items())


def test_dpo_loss_types_are_trls():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    trl_types = set(re.findall(r"`'(\w+)'`", help_text))
    from fcft.train.methods.preference import LOSS_TYPES

    assert set(LOSS_TYPES) == trl_types - {"exo_pair"}


def test_preference_pairs_are_split_as_the_evaluator_splits(tiny_dir):
    from transformers import AutoTokenizer

    from fcft.data.prepare import pref_dataset, pref_example
    from fcft.data.when2call import DataError

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    fmt = formats.get("qwen2_5")
    rows = load_part(_spec("dpo", "full").data, "train_pref", 6).rows
    dataset = pref_dataset(rows, fmt, tokenizer, max_length=4096)
    assert len(dataset) == len(rows)
    for row, pair in zip(rows, dataset):
        text = pref_example(row, fmt)
        question = row["prompt"][0]["content"]  # When2Call's pairs: one user question
        assert [m["role"] for m in row["prompt"]] == ["user"] and text["prompt"] == fmt.prompt(row["tools"], question)
        assert text["chosen"].endswith(fmt.end_of_turn) and text["rejected"].endswith(fmt.end_of_turn)
        # As lm-eval splits: the prompt alone without its trailing newline, which starts the answer.
        assert tokenizer.decode(pair["prompt_ids"]) == text["prompt"].rstrip()
        assert tokenizer.decode(pair["prompt_ids"] + pair["chosen_ids"]) == text["prompt"] + text["chosen"]
        assert tokenizer.decode(pair["prompt_ids"] + pair["rejected_ids"]) == text["prompt"] + text["rejected"]
        assert tokenizer.decode(pair["chosen_ids"]).startswith("\n")
    lengths = sorted(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in dataset)
    kept = sum(length <= lengths[2] for length in lengths)
    assert len(pref_dataset(rows, fmt, tokenizer, max_length=lengths[2])) == kept < len(rows)  # longer pairs left out
    with pytest.raises(DataError, match="every preference example is longer than model.max_length=16 tokens"):
        pref_dataset(rows, fmt, tokenizer, max_length=16)
