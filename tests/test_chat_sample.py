"""The bundled conversational sample (fcft/data/sample/chat): reproducible, loadable, covering what agent logs show,
and trained on by format=chat_template exactly as chat templates render it: Qwen3's (the tiny model's own) and Llama
3.2's (fcft/data/templates/llama3_2.jinja, on the tiny tokenizer). The expected texts come from the tokenizer's
`apply_chat_template` alone, given the rows as an OpenAI-compatible server is given them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fcft.data import TEMPLATE_DIR, make_chat_sample
from fcft.data.chat import ChatTemplate
from fcft.data.make_sample import CANNOT
from fcft.data.prepare import pref_dataset, sft_dataset
from fcft.data.when2call import load_part
from fcft.models import load_tokenizer
from fcft.spec.options import DataSpec, ModelSpec, OnBadRow

CHAT_DIR = make_chat_sample.CHAT_DIR
LLAMA_FILE = TEMPLATE_DIR / "llama3_2.jinja"
END_OF_TURN = {"qwen3": "<|im_end|>", "llama3_2": "<|eot_id|>"}
MAX_TOKENS = 1500  # the tiny model's max_length is 2048, and a real run adds nothing to these texts


def _raw(part: str) -> list[dict]:
    return [json.loads(line) for line in (CHAT_DIR / f"{part}.jsonl").read_text().splitlines()]


def _data(**paths) -> DataSpec:
    return DataSpec(name="files", on_bad_row=OnBadRow("error"), **{k: str(v) for k, v in paths.items()})


def test_files_are_what_the_generator_makes(tmp_path):
    make_chat_sample.write(tmp_path)
    for part in make_chat_sample.SIZES:
        assert (tmp_path / f"{part}.jsonl").read_bytes() == (CHAT_DIR / f"{part}.jsonl").read_bytes(), part


@pytest.fixture(scope="module")
def loaded():
    """Every part through the loader; test rows are conversations too (their last assistant turn the reference)."""
    return {
        "train_sft": load_part(_data(train_path=CHAT_DIR / "train_sft.jsonl"), "train_sft"),
        "train_pref": load_part(_data(pref_path=CHAT_DIR / "train_pref.jsonl"), "train_pref"),
        "test": load_part(_data(train_path=CHAT_DIR / "test.jsonl"), "train_sft"),
    }


def test_every_row_loads(loaded):
    assert {part: len(found.rows) for part, found in loaded.items()} == make_chat_sample.SIZES
    assert not any(found.skipped for found in loaded.values())
    assert all(row["messages"][-1]["role"] == "assistant" for row in loaded["test"].rows)
    assert {row["category"] for row in _raw("test")} == set(make_chat_sample.CATEGORIES)


def _behaviours(row: dict) -> set[str]:
    """What a conversation shows, read off its messages."""
    messages, found = row["messages"], set()
    for i, m in enumerate(messages):
        after = messages[i + 1 : i + 3]
        if m["role"] != "assistant":
            continue
        if m.get("tool_calls"):
            if [n["role"] for n in after] == ["tool", "assistant"] and not after[1].get("tool_calls"):
                found.add("call, result, answer")
        elif m["content"] in CANNOT:
            found.add("cannot answer")
        elif m["content"].endswith("?") and len(after) == 2 and after[1].get("tool_calls"):
            found.add("request for info")  # asks, the user says, the call follows
        elif messages[i - 1]["role"] == "user":
            found.add("direct answer")
    if sum(m["role"] == "user" for m in messages) >= 2:
        found.add("multi-turn")
    if len(row["tools"]) >= 2:
        found.add("several tools")
    if messages[0]["role"] == "system":
        found.add("system message")
    for m in messages:
        for call in m.get("tool_calls") or ():
            found.add(f"arguments as {type(call['function']['arguments']).__name__}")
    return found


def test_sft_rows_cover_what_agent_logs_show():
    rows = _raw("train_sft")
    assert all(any(m["role"] == "assistant" for m in row["messages"]) for row in rows)
    covered = Counter(b for row in rows for b in _behaviours(row))
    wanted = {"call, result, answer", "request for info", "cannot answer", "direct answer", "multi-turn"}
    wanted |= {"several tools", "system message", "arguments as dict", "arguments as str"}
    assert wanted <= set(covered), f"missing: {wanted - set(covered)}"
    assert min(covered[b] for b in wanted) >= 10, covered
    assert any(row["messages"][0]["role"] != "system" for row in rows)
    assert all(len(m.get("tool_calls") or ()) <= 1 for row in rows for m in row["messages"])  # Llama 3.2: one


def test_preference_rows_pair_the_right_turn_with_a_plausible_wrong_one(loaded):
    kinds = Counter()
    for row in loaded["train_pref"].rows:
        chosen, rejected = row["chosen"], row["rejected"]
        assert chosen != rejected
        offered = {json.loads(t)["function"]["name"] for t in row["tools"]}
        right, wrong = chosen.get("tool_calls"), rejected.get("tool_calls")
        earlier = [m["tool_calls"] for m in row["prompt"] if m.get("tool_calls")]
        if wrong and wrong[0]["name"] not in offered:
            kinds["a tool not offered"] += 1
        elif right and wrong:
            kinds["a wrong argument" if right[0]["name"] == wrong[0]["name"] else "another offered tool"] += 1
        elif wrong:
            kinds["the same call again" if earlier and earlier[-1] == wrong else "a call instead of text"] += 1
        else:
            kinds["text instead of a call" if right else "other text"] += 1
    assert set(kinds) == {
        "a tool not offered",
        "a wrong argument",
        "another offered tool",
        "the same call again",
        "a call instead of text",
        "text instead of a call",
        "other text",
    }, kinds


# --- rendered by the chat templates -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers(tiny_dir):
    """The tiny tokenizer with its own template (Qwen3's), and with fcft's Llama 3.2 file (model.chat_template)."""
    return {
        "qwen3": load_tokenizer(ModelSpec(name="tiny", embedded=True), str(tiny_dir)),
        "llama3_2": load_tokenizer(
            ModelSpec(name="tiny", embedded=True, chat_template=str(LLAMA_FILE)), str(tiny_dir)
        ),
    }


def test_the_llama_file_is_trls_template_under_a_comment_that_renders_nothing(tokenizers, tiny_dir):
    import trl
    from transformers import AutoTokenizer

    trls = (Path(trl.__file__).parent / "chat_templates" / "llama3_2.jinja").read_text()
    ours = LLAMA_FILE.read_text()
    assert ours.startswith("{#-") and ours.endswith(trls) and ours[: -len(trls)].endswith("-#}\n")
    plain = AutoTokenizer.from_pretrained(tiny_dir)
    plain.chat_template = trls
    for row in _raw("train_sft") + _raw("test"):
        messages, tools = row["messages"], row["tools"]
        prompts = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        for upto, generation_prompt in [*((i, True) for i in prompts), (len(messages), False)]:
            args = (tokenizers["llama3_2"], tools, messages[:upto], generation_prompt)
            assert _render(*args) == _render(plain, *args[1:])
    assert tokenizers["llama3_2"].bos_token is None  # so no <|begin_of_text|>, in training and serving alike


def _served(message: dict) -> dict:
    """A message as an OpenAI-compatible server hands it to the template: JSON-text arguments parsed (vLLM does)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    parsed = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"]["arguments"])}} for c in calls]
    return {**message, "tool_calls": parsed}


def _arguments(value):
    return json.loads(value) if isinstance(value, str) else value


def _render(tokenizer, tools: list, messages: list[dict], generation_prompt: bool = False) -> str:
    served = [_served(m) for m in messages]
    return tokenizer.apply_chat_template(
        served, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
    )


def _answer(tokenizer, template: str, tools: list, context: list[dict], message: dict) -> str:
    """The assistant turn as rendered after its context, up to and including the end-of-turn token."""
    prompt, whole = _render(tokenizer, tools, context, True), _render(tokenizer, tools, [*context, message])
    assert whole.startswith(prompt)
    written = whole[len(prompt) :]
    return written[: written.index(END_OF_TURN[template]) + len(END_OF_TURN[template])]


def _turns(tokenizer, template: str, row: dict) -> list[str]:
    messages = row["messages"]
    return [
        _answer(tokenizer, template, row["tools"], messages[:i], m)
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]


@pytest.fixture(scope="module")
def rendered(tokenizers, loaded):
    """Per template: (raw conversation rows, their examples by format=chat_template, their turns as rendered)."""
    raw = _raw("train_sft") + _raw("test")
    rows = loaded["train_sft"].rows + loaded["test"].rows
    found = {}
    for template, tokenizer in tokenizers.items():
        fmt = ChatTemplate(tokenizer)
        found[template] = (raw, [fmt.sft_examples(row) for row in rows], [_turns(tokenizer, template, r) for r in raw])
    return found


@pytest.mark.parametrize("template", sorted(END_OF_TURN))
def test_loss_is_on_the_assistant_turns_as_rendered(tokenizers, rendered, template):
    tokenizer = tokenizers[template]
    raw, examples, turns = rendered[template]
    for row, row_examples, row_turns in zip(raw, examples, turns):
        assert [text for ex in row_examples for text, loss in ex if loss] == row_turns
        messages = row["messages"]
        if len(row_examples) == 1:  # the conversation as one example: the template's rendering, byte for byte
            assert "".join(text for text, _ in row_examples[0]) == _render(tokenizer, row["tools"], messages)
        else:  # one example per assistant turn: the conversation up to it
            ends = [i + 1 for i, m in enumerate(messages) if m["role"] == "assistant"]
            texts = ["".join(text for text, _ in ex) for ex in row_examples]
            assert texts == [_render(tokenizer, row["tools"], messages[:end]) for end in ends]
    singles = [len(ex) == 1 for ex in examples]
    if template == "llama3_2":  # renders past turns as they were served: every conversation is one example
        assert all(singles)
    else:  # Qwen3 renders a reasoning block in the last turn only: conversations of several turns are split
        assert singles == [len(t) == 1 for t in turns] and not all(singles)


def _spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of ids whose mask is 1."""
    runs, previous = [], 0
    for token, bit in zip(ids, mask):
        if bit and not previous:
            runs.append([])
        if bit:
            runs[-1].append(token)
        previous = bit
    return runs


@pytest.mark.parametrize("template", sorted(END_OF_TURN))
def test_prepared_tokens_carry_loss_exactly_on_the_assistant_turns(tokenizers, loaded, rendered, template):
    tokenizer = tokenizers[template]
    fmt = ChatTemplate(tokenizer)
    _, examples, turns = rendered[template]
    rows = loaded["train_sft"].rows + loaded["test"].rows
    dataset = sft_dataset(rows, fmt, tokenizer, 2048, use_cache=False)
    assert len(dataset) == sum(len(ex) for ex in examples)  # every example fits
    assert max(len(ids) for ids in dataset["input_ids"]) < MAX_TOKENS
    texts = ["".join(text for text, _ in ex) for row_examples in examples for ex in row_examples]
    decoded = [tokenizer.decode(s) for r in dataset for s in _spans(r["input_ids"], r["completion_mask"])]
    assert decoded == [turn for row_turns in turns for turn in row_turns]
    assert [tokenizer.decode(r["input_ids"]) for r in dataset] == texts


@pytest.mark.parametrize("template", sorted(END_OF_TURN))
def test_preference_pairs_render_as_served(tokenizers, loaded, template):
    tokenizer = tokenizers[template]
    fmt = ChatTemplate(tokenizer)
    for raw, row in zip(_raw("train_pref"), loaded["train_pref"].rows):
        pair = fmt.pref_example(row)
        assert pair["prompt"] == _render(tokenizer, raw["tools"], raw["prompt"], generation_prompt=True)
        assert pair["chosen"] == _answer(tokenizer, template, raw["tools"], raw["prompt"], raw["chosen"][0])
        assert pair["rejected"] == _answer(tokenizer, template, raw["tools"], raw["prompt"], raw["rejected"][0])
        assert pair["chosen"] != pair["rejected"]
    dataset = pref_dataset(loaded["train_pref"].rows, fmt, tokenizer, 2048, use_cache=False)
    assert len(dataset) == len(loaded["train_pref"].rows)
    assert max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in dataset) < MAX_TOKENS
