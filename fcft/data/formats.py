"""Prompt formats: one object per format renders a When2Call row the same way for SFT, DPO and MCQ evaluation.

A `Format` turns (tools, question) into the prompt text that ends where the model's answer starts,
encodes tool calls its own way (and parses them back), and names the text that ends the model's turn.
Training rows and evaluation choices are both built from it, so train and eval prompts agree by
construction.

Tools and tool calls travel as JSON text, one string per tool or call: When2Call's test split stores
them that way and NVIDIA's Qwen task pastes the strings into the prompt unchanged, so the bytes matter.
Where a row gave a dict instead, its text is `canonical_json(dict)` (json.dumps defaults), which
reproduces the test split's own strings byte for byte.

    qwen2_5   NVIDIA's lm-eval task `when2call-qwen2_5`, byte for byte: ChatML, a `# Tools` section with
              a `<tools>` block; a tool call is the bare JSON object.
    llama3_2  NVIDIA's `when2call-llama3_2`, byte for byte: Llama 3 headers (no BOS in the text), tools
              as one JSON list, pythonic calls `[f(a="x", n=1)]`.
    blog      the published AWS recipe's training format: its system prompt with the tools JSON, in
              ChatML (which the recipe put in place of the model's own template; see BLOG),
              `<TOOLCALL>[...]</TOOLCALL>` calls.
    chat_template  the tokenizer's own chat template with tools, as a served model renders it (fcft/data/chat.py):
              not a fixed text, so it is built per tokenizer by `get(name, tokenizer)`.

Bump a format's `version` when its output changes: cached tokenized data is keyed on it (and on
this file's bytes).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Callable, Optional

# The four answer categories of When2Call, in the order the MCQ choices are presented (the key order of
# the test rows' `answers`, which NVIDIA's task keeps).
CATEGORIES = ("direct", "tool_call", "request_for_info", "cannot_answer")


def canonical_json(value) -> str:
    """The one serialisation fcft uses when it has to write JSON text itself: json.dumps defaults
    (", " and ": " separators, ASCII escapes), as When2Call's own tool and tool-call strings are written."""
    return json.dumps(value)


# --- When2Call's training encoding of tool calls: <TOOLCALL>[{...}, ...]</TOOLCALL> ----------------------

TOOLCALL = re.compile(r"^\s*<TOOLCALL>(.*)</TOOLCALL>\s*$", re.DOTALL)


class ToolCallError(ValueError):
    """Text that claims to be tool calls but isn't a list of {"name": str, "arguments": dict} objects."""


def check_call(call) -> dict:
    """A parsed tool call, checked: {"name": str, "arguments": dict}."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ToolCallError('a tool call must be a JSON object with a string "name"')
    if not isinstance(call.get("arguments"), dict):
        raise ToolCallError(f'tool call "{call["name"]}" needs an "arguments" object')
    return call


def parse_toolcall(text: str) -> Optional[list[dict]]:
    """The calls of a `<TOOLCALL>[...]</TOOLCALL>` answer; None for a plain-text answer; ToolCallError
    when the tags are there but what they hold isn't a list of calls."""
    match = TOOLCALL.match(text)
    if not match:
        if "<TOOLCALL>" in text or "</TOOLCALL>" in text:
            raise ToolCallError("<TOOLCALL> tags must wrap the whole answer: <TOOLCALL>[...]</TOOLCALL>")
        return None
    try:
        calls = json.loads(match.group(1))
    except json.JSONDecodeError as err:
        raise ToolCallError(f"<TOOLCALL> content is not valid JSON ({err.msg} at column {err.colno})") from None
    return [check_call(call) for call in (calls if isinstance(calls, list) else [calls])]


def _toolcall_calls(calls: list[str]) -> str:
    return "<TOOLCALL>[" + ", ".join(calls) + "]</TOOLCALL>"


def _parse_toolcall_calls(text: str) -> Optional[list[dict]]:
    try:
        return parse_toolcall(text)
    except ToolCallError:
        return None


# --- the Format object --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    version: str  # bump when the rendered text changes (part of the tokenized-data cache key)
    end_of_turn: str  # appended to SFT/DPO completions so the model learns to stop
    prompt: Callable[[list[str], str], str]  # (tools as JSON texts, question) -> prompt, up to the answer
    tool_calls: Callable[[list[str]], str]  # calls as JSON texts -> the answer text
    parse_calls: Callable[[str], Optional[list[dict]]]  # answer text -> calls, or None if it isn't calls

    def answer(self, text: str) -> str:
        """A training answer (plain text, or the data's `<TOOLCALL>[...]</TOOLCALL>`) in this format."""
        calls = parse_toolcall(text)
        return text if calls is None else self.tool_calls([canonical_json(call) for call in calls])

    def choices(self, answers: dict) -> list[str]:
        """The four MCQ choices in CATEGORIES order; `answers["tool_call"]` is one call as JSON text."""
        return [self.tool_calls([answers[c]]) if c == "tool_call" else answers[c] for c in CATEGORIES]


# --- qwen2_5: NVIDIA's when2call-qwen2_5 (evaluation/mcq/lm_eval_harness/when2call/utils.py) --------------

QWEN2_5_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
    "</tool_call><|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)


def _qwen_prompt(tools: list[str], question: str) -> str:
    # NVIDIA: each raw tool string plus "\n", then the whole block stripped; no tools -> an empty block.
    return QWEN2_5_PROMPT.format(tools="".join(tool + "\n" for tool in tools).strip(), question=question)


def _json_calls(calls: list[str]) -> str:
    # NVIDIA's choice is the test row's JSON string unchanged; several calls (training only) go one per line.
    return "\n".join(calls)


def _parse_json_calls(text: str) -> Optional[list[dict]]:
    decoder, calls, position = json.JSONDecoder(), [], 0
    text = text.strip()
    try:
        while position < len(text):
            call, position = decoder.raw_decode(text, position)
            calls.append(check_call(call))
            while position < len(text) and text[position].isspace():
                position += 1
    except (json.JSONDecodeError, ToolCallError):
        return None
    return calls or None


QWEN2_5 = Format(
    name="qwen2_5",
    version="1",
    end_of_turn="<|im_end|>",
    prompt=_qwen_prompt,
    tool_calls=_json_calls,
    parse_calls=_parse_json_calls,
)


# --- llama3_2: NVIDIA's when2call-llama3_2 ---------------------------------------------------------------

# Note the trailing spaces after "functions." and "purpose." and the missing space in "function,also":
# NVIDIA's text, kept as is. No <|begin_of_text|> in the text: NVIDIA's published numbers were scored
# without a BOS (lm-eval then added none to causal models), and training sees the same text.
LLAMA3_2_PROMPT = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "You are an expert in composing functions. You are given a question and a set of possible functions. \n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. \n"
    "If none of the functions can be used, point it out. If the given question lacks the parameters required "
    "by the function,also point it out. You should only return the function call in tools call sections.\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "You SHOULD NOT include any other text in the response.\n"
    "Here is a list of functions in JSON format that you can invoke.\n"
    "{tools}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)


def _tools_list_json(tools: list[str]) -> str:
    """The tools re-serialised as one JSON list (json.dumps defaults), as NVIDIA's Llama task does."""
    return canonical_json([json.loads(tool) for tool in tools])


def _llama_prompt(tools: list[str], question: str) -> str:
    return LLAMA3_2_PROMPT.format(tools=_tools_list_json(tools), question=question)


def _pythonic_call(call: dict) -> str:
    # NVIDIA's rule: a string value goes in double quotes with no escaping at all; any other value is
    # Python's str() of the parsed JSON (True, None, 40.733, ['a'], {'k': 1}).
    arguments = ", ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in call["arguments"].items())
    return f"{call['name']}({arguments})"


def _pythonic_calls(calls: list[str]) -> str:
    return "[" + ", ".join(_pythonic_call(json.loads(call)) for call in calls) + "]"


_WORD = r'[^\s=(),\[\]"\']+'  # a function or argument name: anything up to the next delimiter
_NAME = re.compile(_WORD)
_NEXT_ARGUMENT = re.compile(", " + _WORD + "=")


def _parse_pythonic_calls(text: str) -> Optional[list[dict]]:
    """Calls back from `[f(a="x", n=1), g()]`, written by hand rather than with `ast`: argument names may be
    Python keywords (`class=`), and string values are unescaped, so a string ends at the `"` followed by
    `)` or `, name=`. A string holding `")` or `", name=` can't come back: NVIDIA's encoding loses it."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    calls, i = [], 1
    try:
        while True:
            match = _NAME.match(text, i)
            if not match or not text.startswith("(", match.end()):
                return None
            name, i, arguments = match.group(), match.end() + 1, {}
            while not text.startswith(")", i):
                match = _NAME.match(text, i)
                if not match or not text.startswith("=", match.end()):
                    return None
                arguments[match.group()], i = _pythonic_value(text, match.end() + 1)
                if text.startswith(", ", i):
                    i += 2
                elif not text.startswith(")", i):
                    return None
            calls.append({"name": name, "arguments": arguments})
            i += 1
            if i == len(text) - 1:
                return calls
            if not text.startswith(", ", i):
                return None
            i += 2
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None


def _pythonic_value(text: str, i: int) -> tuple[object, int]:
    """(value, end) of the argument value starting at text[i]."""
    if text.startswith('"', i):  # a string, written without escapes
        end = i + 1
        while True:
            end = text.index('"', end)
            if text.startswith(")", end + 1) or _NEXT_ARGUMENT.match(text, end + 1):
                return text[i + 1 : end], end + 1
            end += 1
    depth, quote, end = 0, None, i  # a Python literal: up to the first top-level "," or ")"
    while end < len(text):
        char = text[end]
        if quote:
            if char == "\\":
                end += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif depth == 0 and char in ",)]}":
            break
        elif char in "]})":
            depth -= 1
        end += 1
    return ast.literal_eval(text[i:end]), end


LLAMA3_2 = Format(
    name="llama3_2",
    version="1",
    end_of_turn="<|eot_id|>",
    prompt=_llama_prompt,
    tool_calls=_pythonic_calls,
    parse_calls=_parse_pythonic_calls,
)


# --- blog: the published AWS recipe's SFT format ----------------------------------------------------------

# The recipe's system prompt (notebook `generate_sft_prompt`): an f-string with a leading newline, 4-space
# indents and a trailing "\n    ", with json.dumps of the tool list.
BLOG_SYSTEM = (
    "\n    You are a helpful assistant with access to the following tools or function calls. Your task is to "
    "produce a sequence of tools or function calls necessary to generate response to the user utterance. "
    "Use the following tools or function calls as required:\n    {tools}\n    "
)
# TRL's ChatML template (setup_chat_format), rendered for [system, user] with add_generation_prompt=True.
CHATML_PROMPT = (
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)


def _blog_prompt(tools: list[str], question: str) -> str:
    return CHATML_PROMPT.format(system=BLOG_SYSTEM.format(tools=_tools_list_json(tools)), question=question)


# `blog` reproduces what the recipe trained on, so its results can be compared. The issue speaks of "the
# model's own chat template"; the recipe in fact set `tokenizer.chat_template = None` and called TRL's
# `setup_chat_format`, which puts ChatML in its place for every model, Llama included. fcft renders that
# ChatML text itself, for every model: the same string reaches SFT, DPO and the evaluator whatever
# template the tokenizer carries. Two deliberate differences from the recipe: its DPO rows had no system
# prompt and no tools (here every stage gets the full prompt: that is fcft's point), and for Llama it
# added `<|im_start|>`/`<|im_end|>` as new tokens and resized the embeddings (here they stay plain text
# to the Llama tokenizer). Tool calls keep the data's own `<TOOLCALL>[...]</TOOLCALL>` encoding; the MCQ
# tool-call choice is the test row's call in that encoding.
BLOG = Format(
    name="blog",
    version="1",
    end_of_turn="<|im_end|>",
    prompt=_blog_prompt,
    tool_calls=_toolcall_calls,
    parse_calls=_parse_toolcall_calls,
)

FORMATS: dict[str, Format] = {f.name: f for f in (QWEN2_5, LLAMA3_2, BLOG)}
CHAT_TEMPLATE = "chat_template"  # the tokenizer's own chat template, with tools (fcft/data/chat.py)
NAMES = tuple(sorted((*FORMATS, CHAT_TEMPLATE)))


def get(name: str, tokenizer=None, model_name: str = "the model"):
    """The format called `name`; chat_template is built on `tokenizer` (chat.TemplateError if its template can't
    render tools and tool calls)."""
    if name == CHAT_TEMPLATE:
        if tokenizer is None:
            raise ValueError("format chat_template renders with a tokenizer: pass it")
        from fcft.data.chat import ChatTemplate

        return ChatTemplate(tokenizer, model_name)
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format '{name}'; valid formats: {', '.join(NAMES)}") from None
