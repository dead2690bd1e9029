"""eval.generate through the worker: the answers the model writes, scored as an agent uses them. A scripted
OpenAI-compatible server (127.0.0.1) plays both the agent's model (eval.generate.source=endpoint) and the judge
(eval.judge.*), so every number below is worked out by hand from its script; the in-process path runs the tiny model
on conversational rows."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import compose, run_cli

from fcft import spec as run_spec
from fcft import worker
from fcft.data import SAMPLE_DIR

AGENT, JUDGE = "my-agent", "judge-model"


def _call(name: str, arguments: dict) -> dict:
    return {
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ]
    }


# The first six bundled test rows, by question: what the agent answers, and what the judge says of it.
#   row  correct           agent answer                          tool-call outcome                   judge
#   0    tool_call         book_flight, the reference arguments  decision, name, arguments right    tool_call
#   1    request_for_info  a question back                       decision right                     request_for_info
#   2    cannot_answer     calls book_haircut (not offered)      decision wrong, unoffered call     tool_call (wrong)
#   3    tool_call         get_definition, a wrong word          decision, name right; args wrong   tool_call
#   4    request_for_info  HTTP 500 (a call the server can't parse)  an unparseable attempt          malformed twice
#   5    cannot_answer     a refusal                             decision right                     cannot_answer
SCRIPT = {
    "Book me a flight": (_call("book_flight", {"origin": "CDG", "destination": "LHR", "day": "Sunday"}), "tool_call"),
    "Translate this": ({"content": "Which text, please?"}, "request_for_info"),
    "Book a haircut": (_call("book_haircut", {"day": "Saturday"}), "tool_call"),
    "What does 'serendipity'": (_call("get_definition", {"word": "serendipitous"}), "tool_call"),
    "Remind me about": (500, "maybe"),
    "Reserve a tennis court": ({"content": "I can't book courts."}, "cannot_answer"),
}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = json.dumps(body["messages"])
        answer, verdict = next(v for k, v in SCRIPT.items() if k in text)
        if body["model"] == JUDGE:
            message = {"content": verdict if verdict == "maybe" else json.dumps({"classification": verdict})}
        elif answer == 500:
            self.send_response(500)
            self.end_headers()
            return
        else:
            message = answer
        reply = {"choices": [{"message": {"role": "assistant", "content": None, **message}, "finish_reason": "stop"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_answers_from_an_endpoint_scored_and_judged(url, tmp_path, tiny_dir, mlflow_store, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("FCFT_TEST_JUDGE_KEY", "k")
    spec = run_spec.validate(
        compose(
            "method=none",
            "eval.mcq=false",
            "eval.generate.enabled=true",
            "eval.generate.limit=6",
            "eval.generate.source=endpoint",
            f"eval.generate.endpoint={url}",
            f"eval.generate.endpoint_model={AGENT}",
            f"eval.judge.url={url}",
            f"eval.judge.model={JUDGE}",
            "eval.judge.key_env=FCFT_TEST_JUDGE_KEY",
        )
    )
    metrics = worker.run(spec, tmp_path)
    block = metrics["generate"]
    assert (block["n"], block["source"], block["server_errors"]) == (6, "endpoint", 1)
    assert block["call_decision_accuracy"] == pytest.approx(4 / 6)  # rows 0, 1, 3, 5
    assert (block["tool_name_accuracy"], block["tool_name_accuracy_n"]) == (1.0, 2)  # rows 0 and 3
    assert block["exact_arguments_accuracy"] == 0.5  # row 0 of 0 and 3
    assert block["unoffered_call_rate"] == pytest.approx(1 / 3)  # row 2 of the rows with calls: 0, 2, 3
    assert block["unparseable_rate"] == pytest.approx(1 / 6)  # row 4
    judged = block["judge"]
    assert (judged["judged"], judged["unjudged"], judged["judge_accuracy"]) == (5, 1, 0.8)
    assert judged["per_category"]["cannot_answer"] == {
        "score": 0.5,
        "response_distribution": {"tool_call": 1, "cannot_answer": 1},
    }
    assert judged["per_category"]["tool_call"]["score"] == 1.0 and judged["unjudged_per_category"] == {
        "request_for_info": 1
    }

    rows = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [r["judged"]["category"] for r in rows] == [
        "tool_call",
        "request_for_info",
        "tool_call",
        "tool_call",
        None,
        "cannot_answer",
    ]
    assert rows[0]["calls"] == [
        {"name": "book_flight", "arguments": {"origin": "CDG", "destination": "LHR", "day": "Sunday"}}
    ]
    assert rows[4]["error"] and rows[4]["outcome"]["unparseable"]
    assert "eval" not in metrics or not metrics["eval"]  # eval.mcq=false: no choices scored

    run = MlflowClient().get_run(metrics["tracking"]["run_id"])
    assert run.data.metrics["generate/call_decision_accuracy"] == pytest.approx(4 / 6)
    assert run.data.metrics["generate/judge_accuracy"] == 0.8


def test_in_process_answers_to_conversations(tmp_path, tiny_dir):
    """The tiny model (Llama's template) answers the last turn of bundled conversations; each answer is parsed by
    the template's format and scored against the conversation's last assistant turn."""
    spec = run_spec.validate(
        compose(
            "method=none",
            "model=tiny_llama",
            "data=chat_sample",
            f"data.test_path={SAMPLE_DIR / 'chat' / 'test.jsonl'}",
            "eval.mcq=false",
            "eval.generate.enabled=true",
            "eval.generate.limit=3",
            "eval.generate.max_new_tokens=8",
            "tracking=none",
        )
    )
    block = worker.run(spec, tmp_path)["generate"]
    assert block["n"] == 3 and block["judge"].startswith("not judged") and block["call_decision_accuracy_n"] == 3
    rows = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    conversations = [json.loads(line) for line in (SAMPLE_DIR / "chat" / "test.jsonl").read_text().splitlines()[:3]]
    for row, conversation in zip(rows, conversations):
        last = [m for m in conversation["messages"] if m["role"] == "assistant"][-1]
        assert (row["reference"].get("tool_calls") is not None) == bool(last.get("tool_calls"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.generate.source=endpoint"], "eval.generate.endpoint: source=endpoint needs the server's URL"),
        (["eval.judge.url=http://127.0.0.1:9/v1"], "eval.judge.model: must name the judge model"),
        (
            ["eval.judge.url=http://127.0.0.1:9/v1", "eval.judge.model=m", "eval.judge.key_env=FCFT_TEST_UNSET_KEY"],
            "eval.judge.url: the judge reads generated answers: set eval.generate.enabled=true",
        ),
        (
            [
                "eval.generate.enabled=true",
                "eval.judge.url=http://127.0.0.1:9/v1",
                "eval.judge.model=m",
                "eval.judge.key_env=FCFT_TEST_UNSET_KEY",
            ],
            "eval.judge.key_env: the environment variable FCFT_TEST_UNSET_KEY is not set",
        ),
        (["eval.generate.enabled=true", "eval.generate.source=serve", "tuning=lora"], "tuning=lora saves adapters"),
        (["eval.mcq=false"], "eval.mcq: is false and eval.generate.enabled is false: nothing would be scored"),
        (["eval.generate.sourse=serve"], "eval.generate.sourse"),
    ],
)
def test_bad_generate_settings_are_refused_before_anything_loads(overrides, message, tiny_dir):
    with pytest.raises(run_spec.SpecError, match=None) as raised:
        run_spec.validate(compose(*overrides))
    assert message in str(raised.value)


def test_the_cli_prints_the_generated_scores(tmp_path, tiny_dir):
    result = run_cli(
        "method=none",
        "eval.limit=4",
        "eval.generate.enabled=true",
        "eval.generate.limit=4",
        "eval.generate.max_new_tokens=4",
        "tracking=none",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "generate call_decision_accuracy" in result.stdout and "generate judge" in result.stdout
    assert "eval acc_norm" in result.stdout
