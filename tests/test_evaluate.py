"""The first MCQ evaluation: lm-eval's token split, and scores that don't depend on batch-mates."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from fcft.data import formats
from fcft.data.prepare import mcq_item, split_tokens
from fcft.data.when2call import load_part
from fcft.evaluate import evaluate, score


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def real_items(real_test_rows):
    data = OmegaConf.create({"hub_id": None, "test_path": str(real_test_rows), "on_bad_row": "error"})
    return [mcq_item(row, formats.get("qwen2_5")) for row in load_part(data, "test", limit=12).rows]


def test_split_moves_trailing_whitespace_into_the_continuation(tiny):
    _, tokenizer = tiny
    [(context, continuation)] = split_tokens(tokenizer, ["Q: hi\n"], ["A"])
    assert tokenizer.decode(context) == "Q: hi"
    assert tokenizer.decode(continuation) == "\nA"


def test_batched_scores_equal_one_sequence_at_a_time(tiny, real_items):
    model, tokenizer = tiny
    batched = score(model, tokenizer, real_items, batch_size=3)
    for item, lls in zip(real_items[:4], batched):
        for choice, ll in zip(item.choices, lls):
            [(context, continuation)] = split_tokens(tokenizer, [item.prompt], [choice])
            ids = torch.tensor([context + continuation])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            expected = sum(logprobs[len(context) - 1 + k, t].item() for k, t in enumerate(continuation))
            assert ll == pytest.approx(expected, abs=1e-3)


def test_metrics_follow_the_per_row_predictions(tiny, real_items):
    model, tokenizer = tiny
    metrics, samples = evaluate(model, tokenizer, real_items, batch_size=4)
    assert metrics["n"] == len(real_items) == len(samples)
    assert metrics["acc"] == sum(s["predicted"] == s["gold"] for s in samples) / len(samples)
    for item, sample in zip(real_items, samples):
        normalised = [ll / len(c) for ll, c in zip(sample["loglikelihoods"], item.choices)]
        assert sample["predicted_norm"] == formats.CATEGORIES[normalised.index(max(normalised))]
