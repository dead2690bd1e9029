"""Conversational rows, the Hugging Face / TRL convention, checked and normalised: tools and chat messages.

A training row is `messages` (system, user, assistant and tool roles) with `tools` (JSON-schema function
definitions, OpenAI-style `{"type": "function", "function": {...}}` or the bare `{"name", "description",
"parameters"}` When2Call writes); a preference row is `prompt` messages with one `chosen` and one `rejected`
assistant message. When2Call's own rows are the same thing in other words (a `<TOOLCALL>[...]</TOOLCALL>`
answer is a message's tool calls), so every row reaches training in one normalised shape:

    message     {"role": "system" | "user", "content": str}
                {"role": "assistant", "content": str, "tool_calls": [{"name": str, "arguments": dict}]}
                    (`tool_calls` only when it calls; When2Call's calls keep their key order)
                {"role": "tool", "content": str, "name"?: str, "tool_call_id"?: str}
    tools       JSON text, one string per tool, as the data wrote it (a dict becomes `canonical_json(dict)`)

Checked, with the field named: roles, contents, a tool call's name and arguments (a JSON object, or a JSON string
holding one), calls naming a tool the row doesn't define (except in a rejected answer: a hallucinated call is
what a rejected answer may well be), a tool message with no call before it, a conversation with nothing to train on.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from fcft.data.formats import ToolCallError, canonical_json, parse_toolcall

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A data file or row that can't be used; the message names the file, the row and the field."""


def tool_name(tool: Any) -> Optional[str]:
    """The function name of a tool definition, wrapped (`{"type": "function", "function": {...}}`) or bare."""
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        tool = tool["function"]
    return tool.get("name") if isinstance(tool, dict) and isinstance(tool.get("name"), str) else None


def tools(value: Any, key: str = "tools") -> list[str]:
    """Tools as JSON text: strings kept as they are, dicts serialised canonically. A single JSON string holding the
    whole list (how TRL stores a `tools` column) is read as that list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(f"field '{key}' is not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(value, list):
        raise DataError(f"field '{key}' must be a list of tool definitions, got {type(value).__name__}")
    texts = []
    for i, tool in enumerate(value):
        parsed = tool
        if isinstance(tool, str):
            try:
                parsed = json.loads(tool)
            except json.JSONDecodeError as err:
                raise DataError(f"field '{key}[{i}]' is not valid JSON ({err.msg} at column {err.colno})") from None
        if tool_name(parsed) is None:
            raise DataError(
                f"field '{key}[{i}]' must be a tool definition with a 'name' "
                '(e.g. {"type": "function", "function": {"name": ..., "parameters": {...}}})'
            )
        texts.append(tool if isinstance(tool, str) else canonical_json(tool))
    return texts


def offered(tool_texts: list[str]) -> set[str]:
    return {tool_name(json.loads(text)) for text in tool_texts}


def conversation(value: Any, key: str, names: set[str]) -> list[dict]:
    """A list of messages, each checked and normalised; tool messages must answer the calls before them."""
    if not isinstance(value, list) or not value:
        raise DataError(f"field '{key}' must be a non-empty list of messages")
    result, unanswered = [], 0  # calls of the last assistant message that no tool message has answered yet
    for i, raw in enumerate(value):
        where = f"{key}[{i}]"
        msg = message(raw, where, names)
        if msg["role"] == "system" and i > 0:
            raise DataError(f"field '{where}': a system message can only come first")
        if msg["role"] == "tool":
            if not unanswered:
                before = f"{key}[{i - 1}] ({result[-1]['role']})" if result else "nothing"
                raise DataError(
                    f"field '{where}': a tool message must answer a tool call, but {before} comes before it "
                    "with no call left to answer"
                )
            unanswered -= 1
        else:
            unanswered = len(msg.get("tool_calls", ()))
        result.append(msg)
    return result


def message(raw: Any, where: str, names: Optional[set[str]], role: Optional[str] = None) -> dict:
    """One message, normalised. `names`: the tools its calls may name (None: any, as in a rejected answer)."""
    if not isinstance(raw, dict):
        raise DataError(f"field '{where}' must be a message object, got {type(raw).__name__}")
    found = raw.get("role")
    if found not in ROLES or (role is not None and found != role):
        valid = role or " | ".join(ROLES)
        raise DataError(f"field '{where}.role' is {found!r}; it must be {valid}")
    content = raw.get("content")
    if found == "tool" and isinstance(content, (dict, list)):
        content = canonical_json(content)  # a tool result given as JSON
    if found == "assistant" and content is None and raw.get("tool_calls"):
        content = ""
    if not isinstance(content, str):
        raise DataError(f"field '{where}.content' must be a string, got {type(content).__name__}")
    msg = {"role": found, "content": content}
    if found == "tool":
        for extra in ("name", "tool_call_id"):
            if isinstance(raw.get(extra), str):
                msg[extra] = raw[extra]
    if found != "assistant":
        return msg
    calls = _calls(raw, content, where)
    if calls:
        if "tool_calls" not in raw:  # When2Call's `<TOOLCALL>[...]</TOOLCALL>` answer: the calls are the message
            msg["content"] = ""
        msg["tool_calls"] = calls
        for j, call in enumerate(calls):
            if names is not None and call["name"] not in names:
                offer = ", ".join(sorted(names)) or "none"
                raise DataError(
                    f"field '{where}.tool_calls[{j}]' calls '{call['name']}', which the row's tools don't define "
                    f"(tools: {offer})"
                )
    return msg


def _calls(raw: dict, content: str, where: str) -> list[dict]:
    if raw.get("tool_calls") is None:
        try:
            return parse_toolcall(content) or []
        except ToolCallError as err:
            raise DataError(f"field '{where}.content': {err}") from None
    if not isinstance(raw["tool_calls"], list):
        raise DataError(f"field '{where}.tool_calls' must be a list of calls")
    return [_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(raw["tool_calls"])]


def _call(call: Any, where: str) -> dict:
    """{"type": "function", "function": {"name", "arguments"}} or {"name", "arguments"} -> {"name", "arguments"}."""
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        call, where = call["function"], f"{where}.function"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise DataError(f"field '{where}' must be a call with a string 'name'")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI's wire format: the arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as err:
            raise DataError(f"field '{where}.arguments' is not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(arguments, dict):
        raise DataError(f"field '{where}.arguments' must be a JSON object, got {type(arguments).__name__}")
    return {"name": call["name"], "arguments": arguments}


def single_turn(messages: list[dict], where: str, fmt_name: str) -> tuple[str, dict]:
    """(question, answer message) of a [user, assistant] conversation: what NVIDIA's and the blog formats render."""
    roles = [m["role"] for m in messages]
    if roles not in (["user", "assistant"], ["user"]) or (
        roles[-1] == "assistant" and messages[-1]["content"] and messages[-1].get("tool_calls")
    ):
        raise DataError(
            f"field '{where}': format {fmt_name} renders one user question and one answer (text or tool calls), "
            f"this conversation is {' -> '.join(roles)}: train it with data.format=chat_template"
        )
    return messages[0]["content"], messages[-1]
