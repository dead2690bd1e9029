"""Formats: NVIDIA's when2call-qwen2_5 / when2call-llama3_2 prompts and choices byte for byte, the same prompt
for training and evaluation in every format, and tool calls that survive parse -> render -> parse.

`nvidia_*` below is an independent reading of NVIDIA's task (evaluation/mcq/lm_eval_harness/when2call/
utils.py: `get_choices_and_index`, `process_docs_qwen2_5`, `process_docs_llama3_2`), written the way that
code builds its strings and applied to the raw JSON rows; fcft's formats are applied to the loaded rows.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from fcft.data import SAMPLE_DIR, formats
from fcft.data.formats import canonical_json
from fcft.data.prepare import mcq_item, pref_example, sft_example, training_row
from fcft.data.when2call import load_part


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
def raw_rows(real_test_rows):
    return [json.loads(line) for line in real_test_rows.read_text().splitlines()]


@pytest.fixture(scope="module")
def test_rows(real_test_rows):
    return load_part(_data(test_path=real_test_rows), "test").rows


# --- NVIDIA's task, read independently --------------------------------------------------------------------


def nvidia_choices(item, format_tool_call=None):
    answer_names = list(item["answers"].keys())
    choices = []
    for name in answer_names:
        if "tool" in name and format_tool_call:
            choices.append(format_tool_call(item["answers"][name]))
        else:
            choices.append(item["answers"][name])
    return choices, answer_names.index(item["correct_answer"])


def nvidia_qwen2_5(item):
    tools_str = ""
    for tool in item["tools"]:
        tools_str += tool + "\n"
    tools_str = tools_str.strip()
    question = item["question"]
    prompt = f'<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools_str}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call><|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n'  # noqa: E501
    return prompt, *nvidia_choices(item, lambda answer: answer)


def nvidia_llama3_2(item):
    def format_tool_call(answer):
        tc = json.loads(answer)
        output = "[" + tc["name"] + "("
        for arg in tc["arguments"]:
            output += f"{arg}="
            value = tc["arguments"][arg]
            output += '"' + value + '", ' if isinstance(value, str) else f"{value}, "
        if output.endswith(", "):
            output = output[:-2]
        return output + ")]"

    tools_json = json.dumps([json.loads(tool) for tool in item["tools"]])
    question = item["question"]
    prompt = f"<|start_header_id|>system<|end_header_id|>\n\nYou are an expert in composing functions. You are given a question and a set of possible functions. \nBased on the question, you will need to make one or more function/tool calls to achieve the purpose. \nIf none of the functions can be used, point it out. If the given question lacks the parameters required by the function,also point it out. You should only return the function call in tools call sections.\nIf you decide to invoke any of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\nYou SHOULD NOT include any other text in the response.\nHere is a list of functions in JSON format that you can invoke.\n{tools_json}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"  # noqa: E501
    return prompt, *nvidia_choices(item, format_tool_call)


@pytest.mark.parametrize("fmt, nvidia", [(formats.QWEN2_5, nvidia_qwen2_5), (formats.LLAMA3_2, nvidia_llama3_2)])
def test_all_real_rows_match_nvidias_task(raw_rows, test_rows, fmt, nvidia):
    assert len(raw_rows) == len(test_rows) == 90
    for raw, row in zip(raw_rows, test_rows):
        item = mcq_item(row, fmt)
        assert (item.prompt, list(item.choices), item.gold) == nvidia(raw), raw["uuid"]
        assert item.as_doc() == {"prompt": item.prompt, "choices": list(item.choices), "target_index": item.gold}


# --- expected strings written out by hand, for a made-up row with every kind of argument -------------------

HAND_ROW = {
    "uuid": "hand-1",
    "question": "What time is it in Oslo?",
    "tools": [
        '{"name": "get_time", "description": "Time in a city.", "parameters": {"type": "dict", '
        '"required": ["city"], "properties": {"city": {"type": "string"}}}}',
        '{"name": "noop", "parameters": {}}',
    ],
    "answers": {
        "direct": "It is 10:00 in Oslo.",
        "tool_call": '{"name": "get_time", "arguments": {"city": "Oslo", "n": 2, "x": 2.5, "ok": true, '
        '"l": ["a", 1], "d": {"k": null}, "q": "say \\"hi\\""}}',
        "request_for_info": "Which city?",
        "cannot_answer": "I can't tell the time.",
    },
    "correct_answer": "tool_call",
}


def _hand_row(tmp_path, **changes):
    path = tmp_path / "hand.jsonl"
    path.write_text(json.dumps({**HAND_ROW, **changes}) + "\n")
    return load_part(_data(test_path=path), "test").rows[0]


def test_qwen2_5_by_hand(tmp_path):
    item = mcq_item(_hand_row(tmp_path), formats.QWEN2_5)
    assert item.prompt == (
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
        "\n"
        "# Tools\n"
        "\n"
        "You may call one or more functions to assist with the user query.\n"
        "\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        "<tools>\n"
        '{"name": "get_time", "description": "Time in a city.", "parameters": {"type": "dict", "required": ["city"], '
        '"properties": {"city": {"type": "string"}}}}\n'
        '{"name": "noop", "parameters": {}}\n'
        "</tools>\n"
        "\n"
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
        "<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n"
        "What time is it in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert item.choices == (
        "It is 10:00 in Oslo.",
        HAND_ROW["answers"]["tool_call"],
        "Which city?",
        "I can't tell the time.",
    )
    assert item.gold == 1
    no_tools = mcq_item(_hand_row(tmp_path, tools=[]), formats.QWEN2_5)
    assert "<tools>\n\n</tools>" in no_tools.prompt


def test_llama3_2_by_hand(tmp_path):
    item = mcq_item(_hand_row(tmp_path, correct_answer="request_for_info"), formats.LLAMA3_2)
    assert item.prompt == (
        "<|start_header_id|>system<|end_header_id|>\n"
        "\n"
        "You are an expert in composing functions. You are given a question and a set of possible functions. \n"
        "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. \n"
        "If none of the functions can be used, point it out. If the given question lacks the parameters required by "
        "the function,also point it out. You should only return the function call in tools call sections.\n"
        "If you decide to invoke any of the function(s), you MUST put it in the format of "
        "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
        "You SHOULD NOT include any other text in the response.\n"
        "Here is a list of functions in JSON format that you can invoke.\n"
        '[{"name": "get_time", "description": "Time in a city.", "parameters": {"type": "dict", "required": ["city"], '
        '"properties": {"city": {"type": "string"}}}}, {"name": "noop", "parameters": {}}]<|eot_id|>'
        "<|start_header_id|>user<|end_header_id|>\n"
        "\n"
        "What time is it in Oslo?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
        "\n"
    )
    # Strings double-quoted and never escaped; everything else is Python's str().
    assert (
        item.choices[1] == """[get_time(city="Oslo", n=2, x=2.5, ok=True, l=['a', 1], d={'k': None}, q="say "hi"")]"""
    )
    assert item.gold == 2
    no_arguments = _hand_row(
        tmp_path, answers={**HAND_ROW["answers"], "tool_call": '{"name": "noop", "arguments": {}}'}
    )
    assert mcq_item(no_arguments, formats.LLAMA3_2).choices[1] == "[noop()]"
    assert mcq_item(_hand_row(tmp_path, tools=[]), formats.LLAMA3_2).prompt.count("invoke.\n[]<|eot_id|>") == 1


def test_blog_by_hand(tmp_path):
    row = _hand_row(tmp_path, tools=['{"name": "noop", "parameters": {}}'])
    item = mcq_item(row, formats.BLOG)
    assert item.prompt == (
        "<|im_start|>system\n"
        "\n"
        "    You are a helpful assistant with access to the following tools or function calls. Your task is to produce "
        "a sequence of tools or function calls necessary to generate response to the user utterance. Use the following "
        "tools or function calls as required:\n"
        '    [{"name": "noop", "parameters": {}}]\n'
        "    <|im_end|>\n"
        "<|im_start|>user\n"
        "What time is it in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert item.choices[1] == "<TOOLCALL>[" + HAND_ROW["answers"]["tool_call"] + "]</TOOLCALL>"


# --- one serialisation, one prompt for training and evaluation ----------------------------------------------


def test_canonical_json_reproduces_when2calls_own_strings(raw_rows):
    texts = [tool for row in raw_rows for tool in row["tools"]] + [row["answers"]["tool_call"] for row in raw_rows]
    assert len(texts) > 300
    assert all(canonical_json(json.loads(text)) == text for text in texts)


def test_dict_tools_render_like_their_json_strings(tmp_path, raw_rows, test_rows):
    as_dicts = tmp_path / "dicts.json"
    as_dicts.write_text(json.dumps([{**raw, "tools": [json.loads(t) for t in raw["tools"]]} for raw in raw_rows]))
    for row, same in zip(test_rows, load_part(_data(test_path=as_dicts), "test").rows):
        assert same["tools"] == row["tools"]


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_training_and_evaluation_prompts_are_the_same_string(test_rows, name):
    fmt = formats.get(name)
    for row in test_rows:
        item = mcq_item(row, fmt)
        trained = sft_example(training_row(row), fmt)
        assert trained["prompt"] == item.prompt
        assert trained["completion"] == item.choices[item.gold] + fmt.end_of_turn
        question, answer = training_row(row)["messages"]
        rejected = {"role": "assistant", "content": "No."}
        pair = pref_example({"tools": row["tools"], "prompt": [question], "chosen": answer, "rejected": rejected}, fmt)
        assert pair == {"prompt": item.prompt, "chosen": trained["completion"], "rejected": "No." + fmt.end_of_turn}


def test_end_of_turn_is_the_formats_own():
    assert {f.name: f.end_of_turn for f in formats.FORMATS.values()} == {
        "qwen2_5": "<|im_end|>",
        "llama3_2": "<|eot_id|>",
        "blog": "<|im_end|>",
    }


# --- tool calls: parse -> render -> parse ---------------------------------------------------------------------


def _calls_from_data(raw_rows) -> list[list[dict]]:
    sample = load_part(_data(train_path=SAMPLE_DIR / "train_sft.jsonl"), "train_sft").rows
    from_training = [calls for row in sample if (calls := row["messages"][-1].get("tool_calls"))]
    from_test = [[json.loads(row["answers"]["tool_call"])] for row in raw_rows]
    assert any(len(calls) > 1 for calls in from_training), "the sample has parallel calls"
    return from_training + from_test


TRICKY_CALLS = [
    {
        "name": "f",
        "arguments": {
            "class": "a\\b",
            "from": 'say "hi" there',
            "n": -1.5e-07,
            "u": "h\u00e9llo \u2603",
            "e": [],
            "d": {"a": [1, {"b": "c'd"}]},
            "t": True,
            "z": None,
            "s": "x, y=1",
            "nl": "a\nb",
        },
    },
    {"name": "g.h", "arguments": {}},
]


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_tool_calls_round_trip(raw_rows, name):
    fmt = formats.get(name)
    for calls in [*_calls_from_data(raw_rows), TRICKY_CALLS]:
        rendered = fmt.answer("<TOOLCALL>" + json.dumps(calls) + "</TOOLCALL>")
        assert fmt.parse_calls(rendered) == calls, rendered
        assert fmt.answer("<TOOLCALL>" + json.dumps(fmt.parse_calls(rendered)) + "</TOOLCALL>") == rendered


def test_what_nvidias_unescaped_strings_lose():
    """A string value holding `", name=` reads back as two arguments: NVIDIA's encoding can't tell them apart."""
    calls = [{"name": "f", "arguments": {"s": 'a", b="c'}}]
    rendered = formats.LLAMA3_2.tool_calls([json.dumps(c) for c in calls])
    assert rendered == '[f(s="a", b="c")]'
    assert formats.LLAMA3_2.parse_calls(rendered) == [{"name": "f", "arguments": {"s": "a", "b": "c"}}]


def test_parsers_refuse_what_is_not_a_tool_call():
    for fmt in formats.FORMATS.values():
        for text in ("Which city?", "", "[1, 2]", '{"name": 3}', "<TOOLCALL>[{]</TOOLCALL>"):
            assert fmt.parse_calls(text) is None, (fmt.name, text)
    assert formats.LLAMA3_2.parse_calls("[f(1)]") is None  # positional arguments aren't calls
    assert formats.LLAMA3_2.parse_calls('[f(a="x"), g()]') == [
        {"name": "f", "arguments": {"a": "x"}},
        {"name": "g", "arguments": {}},
    ]
    assert formats.QWEN2_5.parse_calls('{"name": "f", "arguments": {}}\n{"name": "g", "arguments": {"a": 1}}') == [
        {"name": "f", "arguments": {}},
        {"name": "g", "arguments": {"a": 1}},
    ]


def test_plain_answers_pass_through_unchanged():
    for fmt in formats.FORMATS.values():
        assert fmt.answer("To help, which city?") == "To help, which city?"
