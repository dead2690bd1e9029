"""Preparation: lm-eval's token split in one pass, the tokenized SFT set and its cache, `python -m fcft.data show`."""

from __future__ import annotations

import json
import logging

import pytest
from omegaconf import OmegaConf

from fcft.data import SAMPLE_DIR, cache, formats
from fcft.data.__main__ import main as data_main
from fcft.data.prepare import _split_plainly, answer_text, mcq_item, sft_dataset, sft_example, split_tokens
from fcft.data.when2call import DataError, load_part


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _data(**paths):
    return OmegaConf.create(
        {
            "hub_id": None,
            "train_path": None,
            "pref_path": None,
            "test_path": None,
            "on_bad_row": "error",
            **{k: str(v) for k, v in paths.items()},
        }
    )


@pytest.fixture(scope="module")
def sft_rows():
    return load_part(_data(train_path=SAMPLE_DIR / "train_sft.jsonl"), "train_sft", limit=40).rows


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_one_pass_split_is_lm_evals_split(tokenizer, real_test_rows, sft_rows, name):
    fmt = formats.get(name)
    items = [mcq_item(row, fmt) for row in load_part(_data(test_path=real_test_rows), "test").rows]
    prompts = [item.prompt for item in items for _ in item.choices]
    choices = [choice for item in items for choice in item.choices]
    examples = [sft_example(row, fmt) for row in sft_rows]
    prompts += [e["prompt"] for e in examples]
    choices += [e["completion"] for e in examples]
    assert split_tokens(tokenizer, prompts, choices) == _split_plainly(tokenizer, prompts, choices)


def test_a_tokenizer_that_joins_pieces_gets_the_plain_split(caplog):
    """SentencePiece-style `prepend_scheme="first"` encodes text after an added token differently from the same
    text alone: the one-pass shortcut would be wrong, so the plain rule is used."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.train_from_iterator(
        ["hello world this is a test"] * 4,
        trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>", "<s>", "</s>"]),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    prompts, completions = ["hello<s>world this\n"] * 3, ["is a test</s>"] * 3
    with caplog.at_level(logging.WARNING):
        assert split_tokens(tokenizer, prompts, completions) == _split_plainly(tokenizer, prompts, completions)
    assert "encoding each prompt twice" in caplog.text


def test_sft_rows_learn_the_completion_and_the_end_of_turn(tokenizer, sft_rows):
    dataset = sft_dataset(sft_rows, formats.QWEN2_5, tokenizer, 2048)
    assert len(dataset) == len(sft_rows) and dataset.column_names == ["input_ids", "completion_mask"]
    for row, record in zip(sft_rows[:10], dataset):
        completion = [t for t, m in zip(record["input_ids"], record["completion_mask"]) if m]
        text = tokenizer.decode(completion)
        # lm-eval moves the "\n" into the continuation
        assert text == "\n" + answer_text(row["messages"][-1], formats.QWEN2_5) + "<|im_end|>"
        assert record["completion_mask"] == sorted(record["completion_mask"])  # prompt first, then completion


def test_sft_set_is_tokenized_once_then_loaded(tokenizer, sft_rows):
    entries = lambda: sorted(p.name for p in cache.data_dir().glob("sft-*"))  # noqa: E731
    before = set(entries())
    first = sft_dataset(sft_rows[:8], formats.LLAMA3_2, tokenizer, 1024)
    [made] = set(entries()) - before
    stamp = (cache.data_dir() / made / cache.META).stat().st_mtime_ns
    second = sft_dataset(sft_rows[:8], formats.LLAMA3_2, tokenizer, 1024)
    assert set(entries()) - before == {made} and (cache.data_dir() / made / cache.META).stat().st_mtime_ns == stamp
    assert first.to_dict() == second.to_dict()
    assert json.loads((cache.data_dir() / made / cache.META).read_text())["kept"] == 8
    # Any input that changes the result makes another entry.
    sft_dataset(sft_rows[:8], formats.BLOG, tokenizer, 1024)
    sft_dataset(sft_rows[:8], formats.LLAMA3_2, tokenizer, 1000)
    sft_dataset(sft_rows[:7], formats.LLAMA3_2, tokenizer, 1024)
    assert len(set(entries()) - before) == 4
    assert not list(cache.data_dir().glob(".*")), "no temporary directory left behind"


def test_too_long_rows_are_left_out_loudly(tokenizer, sft_rows, caplog):
    lengths = sorted(len(r["input_ids"]) for r in sft_dataset(sft_rows, formats.QWEN2_5, tokenizer, 4096))
    cut = lengths[len(lengths) // 2]
    with caplog.at_level(logging.WARNING):
        kept = sft_dataset(sft_rows, formats.QWEN2_5, tokenizer, cut)
    assert len(kept) == sum(n <= cut for n in lengths) < len(sft_rows)
    assert f"longer than model.max_length={cut} tokens and were left out" in caplog.text
    with pytest.raises(DataError, match="every SFT example is longer than model.max_length=16 tokens"):
        sft_dataset(sft_rows, formats.QWEN2_5, tokenizer, 16)


# --- python -m fcft.data show ----------------------------------------------------------------------------


def test_show_prints_a_row_as_trained_and_as_scored(real_test_rows, capsys):
    assert data_main(["show", "index=4", f"data.test_path={real_test_rows}", "model=llama3.2_3b"]) == 0
    out = capsys.readouterr().out
    raw = json.loads(real_test_rows.read_text().splitlines()[4])
    assert f"== test row 4 (uuid {raw['uuid']}), format llama3_2 ==" in out
    assert (
        f"--- choice {['direct', 'tool_call', 'request_for_info', 'cannot_answer'].index(raw['correct_answer'])}"
        in out
    )
    assert "(gold) ---" in out and "== train_sft row 4, format llama3_2, example 1 ==" in out
    assert "--- rejected (loss on «...») ---" in out
    assert "training prompt == evaluation prompt: yes" in out


def test_show_fails_when_training_and_evaluation_formats_differ(capsys):
    assert data_main(["show", "data.format=blog", "eval.format=qwen2_5"]) == 1
    assert "training prompt == evaluation prompt: NO" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["show", "data.fromat=blog"],
            "fcft.data: invalid config: data.fromat: not a setting (did you mean 'format'?)",
        ),
        (["show", "data.format=chatml"], "fcft.data: invalid config: data.format: unknown format 'chatml'"),
        (["show", "index=-1"], "fcft.data: index must be a row number >= 0, got '-1'"),
        (["show", "index=999"], "has no usable row 999 (its last is 47)"),
        (["list"], "usage: python -m fcft.data show"),
    ],
)
def test_show_refuses_bad_arguments(args, message, capsys):
    assert data_main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out
