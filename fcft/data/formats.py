"""Prompt formats: one object per chat family renders a When2Call row the same way for SFT, DPO and MCQ eval.

A format turns (tools, question) into the prompt text that ends where the model's answer starts, renders
tool calls in its own encoding, and names the token that ends the model's turn. Training rows and
evaluation choices are both built from it, so train and eval prompts agree by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

# The four answer categories of When2Call, in the order the MCQ choices are presented.
CATEGORIES = ("direct", "tool_call", "request_for_info", "cannot_answer")


@dataclass(frozen=True)
class Format:
    name: str
    end_of_turn: str  # appended to SFT/DPO completions so the model learns to stop
    prompt: Callable[[list[dict], str], str]  # (tools, question) -> prompt text, up to the answer
    tool_calls: Callable[[list[dict]], str]  # [{"name": .., "arguments": {..}}, ...] -> answer text


QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
QWEN_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def _qwen_prompt(tools: list[dict], question: str) -> str:
    system = QWEN_SYSTEM
    if tools:
        listed = "".join("\n" + json.dumps({"type": "function", "function": tool}) for tool in tools)
        system = f"{QWEN_SYSTEM}\n\n{QWEN_TOOLS_INTRO}{listed}{QWEN_TOOLS_OUTRO}"
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _json_calls(calls: list[dict]) -> str:
    return "\n".join(json.dumps(call) for call in calls)


QWEN2_5 = Format(name="qwen2_5", end_of_turn="<|im_end|>", prompt=_qwen_prompt, tool_calls=_json_calls)

LLAMA_SYSTEM = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. "
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. "
    "If none of the function can be used, point it out. If the given question lacks the parameters required "
    "by the function, also point it out. You should only return the function call in tools call sections.\n\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "You SHOULD NOT include any other text in the response.\n\n"
    "Here is a list of functions in JSON format that you can invoke.\n\n"
)


def _llama_prompt(tools: list[dict], question: str) -> str:
    system = LLAMA_SYSTEM + json.dumps(tools, indent=4)
    return (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def _pythonic_calls(calls: list[dict]) -> str:
    rendered = (
        call["name"] + "(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in call["arguments"].items()) + ")"
        for call in calls
    )
    return "[" + ", ".join(rendered) + "]"


LLAMA3_2 = Format(name="llama3_2", end_of_turn="<|eot_id|>", prompt=_llama_prompt, tool_calls=_pythonic_calls)

FORMATS: dict[str, Format] = {f.name: f for f in (QWEN2_5, LLAMA3_2)}


def get(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format '{name}'; valid formats: {', '.join(sorted(FORMATS))}") from None
