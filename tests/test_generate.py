"""Generated answers, in process and through a real `transformers serve` on 127.0.0.1.

The model is the embedded tiny one, trained by fcft's own CLI (format=chat_template) on a few bundled test rows until
it answers them word for word: the server, started on the run's saved model/, must then return those rows' answers
(the reference tool calls as `tool_calls`, the text answers as content), and in-process generation must give the
same parsed calls and text. Untrained bundled rows and real When2Call rows go through both paths as well: the
answers must be well formed, and the same wherever the two greedy outputs agree. The server is stopped with its
whole process group.
"""

from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli

from fcft.data import SAMPLE_DIR
from fcft.data.messages import DataError
from fcft.data.prepare import training_row
from fcft.eval import generate as gen
from fcft.eval import openai_client, server

TRAINED = 4  # the first bundled test rows (2 tool calls, a request for info, a refusal): trained on, answered
UNTRAINED = 1  # the next one: answered, never seen
REAL = 2  # real When2Call rows from ../shared
MAX_NEW_TOKENS = 48  # the trained answers are at most 38 tokens
THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)  # the empty reasoning block Qwen3's template opens


def _sample_rows(n: int) -> list[dict]:
    with open(SAMPLE_DIR / "test.jsonl") as lines:
        return [json.loads(line) for line, _ in zip(lines, range(n))]


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, tiny_dir):
    """The tiny model after `python -m fcft` on the first TRAINED rows, many epochs: it knows their answers."""
    root = tmp_path_factory.mktemp("generate")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(training_row(row)) + "\n" for row in _sample_rows(TRAINED)))
    result = run_cli(
        f"hydra.run.dir={root / 'run'}",
        "tracking=none",
        "data.format=chat_template",
        f"data.train_path={train}",
        "eval.enabled=false",
        "eval.baseline=false",
        "method.num_train_epochs=80",  # = steps: one batch of all the rows an epoch
        "method.learning_rate=1e-2",
        "method.lr_scheduler_type=constant",
        f"method.per_device_train_batch_size={TRAINED}",
        "method.gradient_accumulation_steps=1",
        "method.warmup_ratio=0.0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run" / "model"


@pytest.fixture(scope="module")
def answers(trained_model, real_test_rows, tmp_path_factory):
    """Every request answered in process and by `transformers serve` (started first: it loads while the model here
    generates)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fcft.data import formats

    with open(real_test_rows) as lines:
        real = [json.loads(line) for line, _ in zip(lines, range(REAL))]
    reqs = gen.requests(_sample_rows(TRAINED + UNTRAINED)) + gen.requests(real, where="real rows")
    started = server.Server(trained_model, log_path=tmp_path_factory.mktemp("serve") / "serve.log")
    started.launch()
    try:
        tokenizer = AutoTokenizer.from_pretrained(trained_model)
        fmt = formats.get("chat_template", tokenizer)
        model = AutoModelForCausalLM.from_pretrained(trained_model)
        local = gen.generate(model, tokenizer, fmt, reqs, batch_size=4, max_new_tokens=MAX_NEW_TOKENS)
        endpoint = started.wait_ready()
        # retries=1: transformers serve answers HTTP 500 to a malformed <tool_call> (see test below), every time
        served = openai_client.answer_all(endpoint, reqs, concurrency=3, max_tokens=MAX_NEW_TOKENS, retries=1)
        served_w2c = openai_client.answer_all(
            endpoint, reqs[-REAL:], max_tokens=MAX_NEW_TOKENS, tool_schema="when2call", retries=1
        )
        group = started.process.pid
    finally:
        status = started.stop()
    return {
        "reqs": reqs,
        "fmt": fmt,
        "local": local,
        "served": served,
        "served_w2c": served_w2c,
        "group": group,
        "status": status,
    }


def _content(text: str) -> str:
    return THINK.sub("", text, count=1).strip()


def _agree(local, served) -> bool:
    """The two answers are the same: the same calls, or the same text; or the model wrote a `<tool_call>` block that
    isn't a call, which fcft's parser reads as no call and `transformers serve` 5.24 answers with HTTP 500."""
    if served.error is not None:
        return "HTTP 500" in served.error and local.calls is None and "<tool_call>" in local.text
    return local.calls == served.calls and (served.calls is not None or _content(local.text) == served.text.strip())


def test_the_server_answers_the_trained_rows_with_their_references(answers):
    for request, served in list(zip(answers["reqs"], answers["served"]))[:TRAINED]:
        reference = request.reference
        if reference.get("tool_calls"):
            assert served.calls == reference["tool_calls"], (request.id, served)
        else:
            assert served.calls is None and served.text.strip() == reference["content"], (request.id, served)
        assert served.finished and served.error is None


def test_in_process_generation_gives_the_same_calls_as_the_server(answers):
    fmt, agreeing = answers["fmt"], 0
    for i, (request, local, served) in enumerate(zip(answers["reqs"], answers["local"], answers["served"])):
        assert local.calls == fmt.parse_calls(local.text)  # the raw text, parsed by the run's format
        same = _agree(local, served)
        if i < TRAINED:  # answers the model knows: greedy decoding can't differ
            assert same, (request.id, local, served)
            assert local.calls == request.reference.get("tool_calls"), (request.id, local)
        agreeing += same
    # Rows the model never saw: the two greedy outputs agree unless batching's rounding flips a near tie.
    assert agreeing >= len(answers["reqs"]) - 2, agreeing


def test_real_rows_go_through_the_server_with_either_tool_schema(answers):
    for request, served, w2c in zip(answers["reqs"][-REAL:], answers["served"][-REAL:], answers["served_w2c"]):
        names = {json.loads(tool)["name"] for tool in request.tools}
        for answer in (served, w2c):
            assert isinstance(answer.text, str)
            for call in answer.calls or []:  # a rewritten name comes back as the row's
                assert isinstance(call["arguments"], dict) and (call["name"] in names or "." not in call["name"])


def test_the_server_stops_with_its_whole_process_group(answers):
    with pytest.raises(ProcessLookupError):
        os.killpg(answers["group"], 0)
    assert answers["status"] is not None


def test_when2call_tool_schema_rewrites_tools_as_nvidias_script(real_test_rows):
    rows = [json.loads(line) for line in real_test_rows.read_text().splitlines()]
    tools = [tool for row in rows for tool in row["tools"]]
    dotted = next(t for t in tools if "." in json.loads(t)["name"])
    given, renamed = openai_client.openai_tools(tools)
    assert renamed == {} and [d["function"] for d in given] == [json.loads(t) for t in tools]
    rewritten, renamed = openai_client.openai_tools(tools, "when2call")
    for definition in rewritten:
        function = definition["function"]
        assert definition["type"] == "function" and "." not in function["name"]
        assert function["parameters"]["type"] == "object"
        assert all(p["type"] == "string" for p in function["parameters"]["properties"].values())
    assert renamed[json.loads(dotted)["name"].replace(".", "_")] == json.loads(dotted)["name"]
    with pytest.raises(ValueError, match="as_given, when2call"):
        openai_client.openai_tools(tools, "nvidia")


class _Flaky(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with the statuses queued in `plan`, then a completion holding a tool call."""

    plan: list[int] = []
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status = type(self).plan.pop(0) if type(self).plan else 200
        call = {"type": "function", "function": {"name": "get_x", "arguments": '{"a": 1}'}, "id": "c0"}
        reply = {"choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
        data = json.dumps(reply if status == 200 else {"error": "busy"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Flaky.plan, _Flaky.bodies = [], []
    yield openai_client.Endpoint(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "m")
    httpd.shutdown()
    httpd.server_close()


def test_the_client_retries_transient_errors_and_sends_when2calls_request(flaky):
    request = gen.requests([{"question": "x?", "tools": ['{"name": "get.x", "parameters": {"properties": {}}}']}])[0]
    _Flaky.plan = [503, 429]
    answer = openai_client.answer(flaky, request, tool_schema="when2call", retries=2)
    assert answer.calls == [{"name": "get.x", "arguments": {"a": 1}}] and answer.finished
    assert len(_Flaky.bodies) == 3
    body = _Flaky.bodies[-1]
    assert body["messages"] == [{"role": "user", "content": "x?"}] and body["model"] == "m"
    assert body["tools"][0]["function"]["name"] == "get_x" and body["temperature"] == 0

    _Flaky.plan, _Flaky.bodies = [400], []
    with pytest.raises(openai_client.ClientError, match="HTTP 400"):
        openai_client.answer(flaky, request, retries=3)
    assert len(_Flaky.bodies) == 1  # a refusal isn't retried
    no_tools = gen.requests([{"question": "y?", "tools": []}])[0]
    openai_client.answer(flaky, no_tools, temperature=None, max_tokens=None)
    assert "tools" not in _Flaky.bodies[-1] and "temperature" not in _Flaky.bodies[-1]  # as When2Call's script


def test_requests_from_conversations_answer_the_last_assistant_turn():
    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    row = {
        "tools": [tool],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            },
            {"role": "tool", "content": "rain"},
            {"role": "assistant", "content": "It rains in Oslo."},
        ],
    }
    (request,) = gen.requests([row])
    assert [m["role"] for m in request.messages] == ["user", "assistant", "tool"]
    assert request.reference == {"role": "assistant", "content": "It rains in Oslo."}
    with pytest.raises(DataError, match=r"rows\[1\]: a row needs 'question'"):
        gen.requests([row, {"prompt": "?"}])


def test_vllm_is_refused_where_it_cannot_run(tiny_dir):
    reason = server.vllm_refusal()
    if reason is None:
        pytest.skip("vllm can run here")
    with pytest.raises(server.ServerError, match="can't serve .* with vllm: "):
        server.Server(tiny_dir, engine="vllm")
    with pytest.raises(server.ServerError, match="no saved model"):
        server.Server(tiny_dir / "nothing")


def test_a_run_scores_the_served_model_through_the_worker(trained_model, tmp_path):
    """`python -m fcft method=none ... eval.generate.source=serve`: fcft starts the server on the saved model, scores
    its answers to the trained rows (every call and argument right) and stops it."""
    result = run_cli(
        "method=none",
        f"model.path={trained_model}",
        "data.format=chat_template",
        "eval.mcq=false",
        "eval.generate.enabled=true",
        f"eval.generate.limit={TRAINED}",
        "eval.generate.source=serve",
        f"eval.generate.max_new_tokens={MAX_NEW_TOKENS}",
        "tracking=none",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    block = json.loads((tmp_path / "metrics.json").read_text())["generate"]
    assert (block["source"], block["n"], block["server_errors"]) == ("serve", TRAINED, 0)
    assert block["call_decision_accuracy"] == 1.0 and block["exact_arguments_accuracy"] == 1.0
    assert (tmp_path / "eval" / "server.log").stat().st_size > 0
