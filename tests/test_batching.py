"""method.batching and method.use_liger: length-grouped batches train for real and pad less than random ones on the
same rows; padding_free and Liger are refused, naming the key and what they need, where they can't run."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from fcft import models
from fcft import spec as run_spec
from fcft.data import formats
from fcft.data.prepare import pref_dataset
from fcft.data.when2call import load_part
from fcft.spec.options import SpecError
from fcft.train import batching
from fcft.train.methods import get as get_method


def _spec(*extra: str, method: str = "sft"):
    return run_spec.validate(
        compose(
            f"method={method}",
            "compute=cpu",
            "eval.enabled=false",
            "data.limit=48",
            "method.max_steps=6",
            "method.per_device_train_batch_size=4",
            "method.gradient_accumulation_steps=1",
            "method.learning_rate=1e-3",
            "method.logging_steps=1",
            *extra,
        )
    )


def _train_counting_pads(spec, tmp_path):
    """Train spec's SFT on its rows, counting the pad tokens of every batch the model is fed (attention_mask
    zeros); returns (trainer, pad share)."""
    from fcft.train.methods import sft

    entry = get_method("sft")
    rows = load_part(spec.data, entry.part, spec.data.limit).rows
    model, tokenizer = models.load(spec, "cpu")
    dataset = entry.dataset(rows, formats.get("qwen2_5"), tokenizer, spec.model.max_length)
    counts = {"pads": 0, "tokens": 0}

    def count(module, args, kwargs):
        mask = kwargs["attention_mask"]
        counts["pads"] += int((mask == 0).sum())
        counts["tokens"] += mask.numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    trainer = sft.train(spec, model, tokenizer, dataset, tmp_path, "cpu")
    return trainer, counts["pads"] / counts["tokens"]


def test_grouped_batches_train_and_pad_less_than_padded_ones(tmp_path):
    grouped, grouped_share = _train_counting_pads(_spec("method.batching=grouped"), tmp_path / "grouped")
    padded, padded_share = _train_counting_pads(_spec("method.batching=padded"), tmp_path / "padded")

    assert grouped.args.train_sampling_strategy == "group_by_length"
    assert padded.args.train_sampling_strategy == "random"
    assert type(grouped._get_train_sampler()).__name__ == "LengthGroupedSampler"
    for trainer in (grouped, padded):
        assert trainer.state.global_step == 6
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    assert 0 <= grouped_share < padded_share, (grouped_share, padded_share)


def test_preference_rows_group_by_prompt_and_longer_answer(tiny_dir):
    from transformers import AutoTokenizer

    spec = _spec(method="dpo")
    rows = load_part(spec.data, "train_pref", 12).rows
    pairs = pref_dataset(rows, formats.get("qwen2_5"), AutoTokenizer.from_pretrained(tiny_dir), 2048)
    expected = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in pairs]
    assert batching.lengths(pairs) == expected
    shuffled = pairs.shuffle(seed=1, keep_in_memory=True)  # an indices mapping, as KTO's shuffle leaves
    assert batching.lengths(shuffled) == [expected[i] for i in shuffled._indices.column(0).to_pylist()]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.batching=padding_free", "model.attn_implementation=sdpa"], "method.batching: padding_free needs"),
        (["method.batching=padding_free"], "not compute.accelerator=cpu: use method.batching=grouped"),
        (["method.batching=padding_free", "compute=local"], "method.batching: padding_free needs flash-attention"),
        (["method=dpo", "method.batching=padding_free"], "method.batching: padding_free is SFT's only"),
        (["method=kto", "method.batching=grouped"], "the kto loss pairs each row with its neighbour's answer"),
        (["method.batching=sorted"], "method.batching: 'sorted' is not one of grouped, padded, padding_free"),
        (["method.use_liger=true"], "method.use_liger: Liger kernels run on CUDA GPUs only"),
        (["method.use_liger=true", "compute=local"], "method.use_liger: Liger kernels run on CUDA GPUs only"),
    ],
)
def test_batching_and_liger_are_refused_where_they_cant_run(overrides, message):
    if "compute=local" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: compute=local runs there")
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        compute = [] if any(o.startswith("compute=") for o in overrides) else ["compute=cpu"]
        run_spec.validate(compose("method.max_steps=2", "eval.enabled=false", *compute, *overrides))


def test_the_trainer_refuses_what_its_machine_cant_run(tmp_path):
    """A remote job checks its own machine as it builds the trainer: here, padding_free on a CPU."""
    spec = _spec()
    import dataclasses

    spec = spec.replace(method=dataclasses.replace(spec.method, batching="padding_free"))
    with pytest.raises(SpecError, match="device is cpu and the attention sdpa: use method.batching=grouped"):
        batching.config_args(spec, "cpu")
    assert batching.config_args(_spec("method.batching=padded"), "cpu") == {}
