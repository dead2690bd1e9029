"""A chat-completions client for the model behind an OpenAI-compatible server (vLLM, `transformers serve`, TGI).

    answer_all(endpoint, requests)   one Generated per request (fcft.eval.generate), in order

Requests go as When2Call's own inference script sends them (evaluation/llm_as_a_judge/run_openai_inference.py):
the conversation (for a test row, the user question alone) and the row's tools as OpenAI function definitions,
`tools` left out when the row has none. A returned `tool_calls` is the model's answer (every call, arguments
parsed; When2Call's script keeps the first); otherwise the message's content is. Two choices differ from that
script, both settable: fcft asks for greedy decoding (`temperature=0`) and `max_tokens` (the script leaves both to
the server), so a server's answers can be held against in-process generation; and tools go as the row defines
them, unless `tool_schema="when2call"` rewrites them as the script does (every parameter a string, `.` in a
name as `_`, and its blunt text replacements: float, integer -> string, dict, tuple -> object); calls to a
rewritten name are mapped back to the row's.

Requests run `concurrency` at a time; each has a timeout, and a transient failure (no connection, a timeout, HTTP
408, 429, 500, 502, 503, 504) is retried with exponential backoff (a server's Retry-After is honoured). The API key
is read from the environment variable the endpoint names (OPENAI_API_KEY by default); none is sent when it is
unset. A row the server still refuses after its retries (an HTTP error status) is, by default, recorded as that
row's `Generated.error` with no answer, and the other rows go on: `transformers serve` 5.24 answers HTTP 500 when
the model writes a `<tool_call>` block that isn't JSON (its response parser raises), which is a wrong answer, not
a broken run. A server that can't be reached at all still raises ClientError. Plain urllib: scoring through a
server needs no client library.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Optional

from fcft.data.formats import ToolCallError, check_call
from fcft.eval.generate import DEFAULT_MAX_NEW_TOKENS, Generated, Request

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
TOOL_SCHEMAS = ("as_given", "when2call")


class ClientError(RuntimeError):
    """A request the server refused, or one that kept failing; the message says which and why."""


class RefusedError(ClientError):
    """The server answered a request with an HTTP error status (after the retries of a transient one)."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server: its base URL (up to and including /v1), the model name it serves, and the
    environment variable holding the API key."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint URL '{self.url}' must start with http:// or https:// (e.g. http://host/v1)")


def answer_all(
    endpoint: Endpoint,
    reqs: list[Request],
    concurrency: int = 4,
    progress: bool = True,
    errors: str = "record",
    **options,
) -> list[Generated]:
    """One Generated per request, in input order; `options` go to `answer` (temperature, max_tokens, ...).
    errors="record": a row the server refuses gets `Generated.error` (module doc); "raise": RefusedError."""
    from tqdm.auto import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if errors not in ("record", "raise"):
        raise ValueError(f"errors must be 'record' or 'raise', got {errors!r}")
    results: list[Optional[Generated]] = [None] * len(reqs)
    with (
        ThreadPoolExecutor(max_workers=concurrency) as pool,
        tqdm(total=len(reqs), unit="row", desc=f"asking {endpoint.model}", disable=not progress) as bar,
    ):
        futures = {pool.submit(answer, endpoint, r, **options): i for i, r in enumerate(reqs)}
        try:
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except RefusedError as err:
                    if errors == "raise":
                        raise
                    results[futures[future]] = Generated(text="", calls=None, finished=False, error=str(err))
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results  # type: ignore[return-value]


def answer(
    endpoint: Endpoint,
    request: Request,
    temperature: Optional[float] = 0.0,
    max_tokens: Optional[int] = DEFAULT_MAX_NEW_TOKENS,
    tool_schema: str = "as_given",
    timeout: float = 120.0,
    retries: int = 3,
) -> Generated:
    """The server's answer to one request (module doc). temperature/max_tokens None: left to the server."""
    tools, names = openai_tools(request.tools, tool_schema)
    body: dict = {"model": endpoint.model, "messages": [_wire_message(m) for m in request.messages]}
    if tools:
        body["tools"] = tools
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    reply = post(endpoint, "/chat/completions", body, timeout, retries, what=f"request {request.id}")
    try:
        choice = reply["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise ClientError(
            f"request {request.id}: the server's reply has no choices[0].message: {reply!r:.300}"
        ) from None
    return _generated(message, choice.get("finish_reason"), names)


def _generated(message: dict, finish_reason: Optional[str], names: dict[str, str]) -> Generated:
    text = message.get("content") or ""
    calls = None
    if message.get("tool_calls"):
        try:
            calls = [_call(call, names) for call in message["tool_calls"]]
        except (ToolCallError, json.JSONDecodeError, KeyError, TypeError):
            calls = None  # calls the server returned but that aren't {name, arguments object}: not a call
            text = text or json.dumps(message["tool_calls"])
    return Generated(text=text, calls=calls, finished=finish_reason != "length")


def _call(call: dict, names: dict[str, str]) -> dict:
    function = call["function"]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    name = function["name"]
    return check_call({"name": names.get(name, name), "arguments": arguments})


def _wire_message(message: dict) -> dict:
    """A normalised message (fcft/data/messages.py) as the chat-completions API takes it."""
    if not message.get("tool_calls"):
        return dict(message)
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(message["tool_calls"])
    ]
    return {**message, "content": message.get("content") or None, "tool_calls": calls}


def openai_tools(tools: list[str], schema: str = "as_given") -> tuple[list[dict], dict[str, str]]:
    """(the tools as OpenAI function definitions, {name sent: the row's name} where they differ)."""
    if schema not in TOOL_SCHEMAS:
        raise ValueError(f"unknown tool_schema '{schema}'; valid: {', '.join(TOOL_SCHEMAS)}")
    definitions, names = [], {}
    for text in tools:
        if schema == "when2call":  # the script's own text replacements, descriptions included
            for old, new in (("float", "string"), ("integer", "string"), ("dict", "object"), ("tuple", "object")):
                text = text.replace(old, new)
        tool = json.loads(text)
        function = tool["function"] if isinstance(tool.get("function"), dict) else tool
        if schema == "when2call":
            original = function["name"]
            function["name"] = original.replace(".", "_")
            names[function["name"]] = original
            parameters = function.setdefault("parameters", {})
            parameters["type"] = "object"
            for spec in parameters.get("properties", {}).values():
                spec["type"] = "string"
        definitions.append({"type": "function", "function": function})
    return definitions, {sent: name for sent, name in names.items() if sent != name}


def post(endpoint: Endpoint, path: str, body: dict, timeout: float, retries: int, what: str = "request") -> dict:
    """POST JSON to the endpoint; the decoded JSON reply. Transient failures are retried (module doc)."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(endpoint.api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = endpoint.url.rstrip("/") + path
    data = json.dumps(body).encode()
    for attempt in range(retries + 1):
        wait = min(0.5 * 2**attempt, 8.0)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as err:
            detail = err.read()[:500].decode(errors="replace")
            if err.code not in TRANSIENT_STATUS or attempt == retries:
                hint = f" (is ${endpoint.api_key_env} set?)" if err.code in (401, 403) else ""
                raise RefusedError(f"{what}: {url} answered HTTP {err.code}{hint}: {detail}") from None
            wait = _retry_after(err.headers.get("Retry-After"), wait)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            if attempt == retries:
                reason = getattr(err, "reason", err)
                raise ClientError(f"{what}: {url} failed {retries + 1} times, last: {reason}") from None
        except json.JSONDecodeError as err:
            raise ClientError(f"{what}: {url} answered with something that isn't JSON ({err.msg})") from None
        time.sleep(wait)
    raise AssertionError("unreachable")


def _retry_after(header: Optional[str], default: float) -> float:
    try:
        return min(max(float(header), 0.0), 60.0) if header else default
    except ValueError:
        return default
