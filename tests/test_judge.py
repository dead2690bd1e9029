"""When2Call's LLM-as-a-judge client (fcft/eval/judge.py) against a scripted OpenAI-compatible server started here
(http.server on 127.0.0.1): prescribed and malformed replies, NVIDIA's re-ask, retries on 5xx, 429 and timeouts,
unjudged counting, and NVIDIA's aggregate on a hand-checked set of judgments."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fcft.eval import judge
from fcft.eval.judge import JudgeSettings, Judgment, aggregate, judge_all, judge_prompt, prompt_for_row
from fcft.eval.judge_prompt import JUDGE_PROMPT, REASK

QUESTION = re.compile(r"<USER_QUESTION>\n(.*)\n</USER_QUESTION>", re.DOTALL)


def ok(category):
    return ("reply", json.dumps({"classification": category}))


class Scripted:
    """What the server answers, per question (the text inside <USER_QUESTION>): a queue of actions, one per request.
    ("reply", text): a chat completion with that content; ("status", code, headers): an error; ("slow", seconds,
    text): the reply after a wait; ("body", text): a 200 that isn't a chat completion."""

    def __init__(self):
        self.lock = threading.Lock()
        self.actions = defaultdict(list)
        self.requests = defaultdict(list)  # question -> [(path, headers, body)]
        self.in_flight = self.max_in_flight = self.generation = 0

    def reset(self, script: dict):
        with self.lock:
            self.actions = defaultdict(list, {q: list(a) for q, a in script.items()})
            self.requests = defaultdict(list)
            self.in_flight = self.max_in_flight = 0
            self.generation += 1  # a handler still sleeping for an earlier test (its client timed out) isn't counted


SCRIPT = Scripted()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = QUESTION.search(body["messages"][0]["content"]).group(1)
        with SCRIPT.lock:
            SCRIPT.requests[question].append((self.path, dict(self.headers), body))
            queue = SCRIPT.actions[question]
            action = queue.pop(0) if queue else ("status", 599, {})  # an unscripted request fails loudly
            SCRIPT.in_flight += 1
            SCRIPT.max_in_flight = max(SCRIPT.max_in_flight, SCRIPT.in_flight)
            generation = SCRIPT.generation
        try:
            if action[0] == "slow":
                time.sleep(action[1])
                action = ("reply", action[2])
        finally:
            with SCRIPT.lock:  # before answering: the client may send its next request as soon as it reads this
                SCRIPT.in_flight -= generation == SCRIPT.generation
        if action[0] == "status":
            self._send(action[1], b'{"error": {"message": "scripted"}}', action[2])
        elif action[0] == "body":
            self._send(200, action[1].encode())
        else:
            completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": action[1]}}]}
            self._send(200, json.dumps(completion).encode())

    def _send(self, status, payload, headers=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def settings(server, monkeypatch):
    monkeypatch.setenv("FCFT_TEST_JUDGE_KEY", "sk-test-123")
    return JudgeSettings(
        url=server, model="judge-model", key_env="FCFT_TEST_JUDGE_KEY", concurrency=4, timeout_s=2.0,
        max_retries=2, backoff_s=0.01, backoff_max_s=0.05,
    )  # fmt: skip


def run(settings, script: dict, **overrides):
    """Judge one prompt per scripted question; the judgments in the script's order."""
    SCRIPT.reset(script)
    prompts = [judge_prompt([], question, "some answer") for question in script]
    return judge_all(prompts, dataclasses.replace(settings, **overrides), progress=False)


def test_the_prompt_is_when2calls_verbatim():
    # NVIDIA/When2Call evaluation/llm_as_a_judge/run_openai_judge.py at ecc8d42, compared with the file when copied.
    assert hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest() == (
        "626fadd7cd0e3c62a2d97085fdc3f49409b229ba1cae74c3f500008c9047a760"
    )
    assert (
        REASK
        == "Please re-write your response to be shorter and make sure it's a valid json in the prescribed format."
    )


def test_a_real_row_is_formatted_as_nvidias_script_does(real_test_rows):
    row = next(json.loads(line) for line in real_test_rows.read_text().splitlines() if json.loads(line)["tools"])
    response = judge.response_text(None, [{"name": "f", "arguments": '{"city": "Noida"}'}, {"name": "g"}])
    assert response == '{"name": "f", "arguments": {"city": "Noida"}}'  # the first call only, as json.dumps
    prompt = prompt_for_row(row, response)
    tools = str([json.loads(tool) for tool in row["tools"]])  # Python's repr of the parsed dicts: 'name': ... None
    assert tools.startswith("[{'name': ")
    assert f"<AVAILABLE_TOOLS>\n{tools}\n</AVAILABLE_TOOLS>" in prompt
    assert f"<USER_QUESTION>\n{row['question']}\n</USER_QUESTION>" in prompt
    tail = JUDGE_PROMPT.split("{}")[-1].replace("{{", "{").replace("}}", "}")
    assert prompt.endswith(f"<AI_MODEL_RESPONSE>\n{response}{tail}")
    assert '{"classification": "<one of' in prompt  # the escaped braces came out single
    assert judge.response_text("  Which city?\n") == "Which city?" and judge.response_text(None) == ""


def test_prescribed_replies_are_judged_in_order(settings):
    script = {f"q{i}": [ok(c)] for i, c in enumerate(judge.JUDGE_CATEGORIES)}
    script["q9"] = [("reply", '\n  {"classification": "tool_call"}  \n')]  # surrounding whitespace is stripped
    judgments = run(settings, script)
    assert [j.category for j in judgments] == [*judge.JUDGE_CATEGORIES, "tool_call"]
    assert all(j.reason is None for j in judgments)
    path, headers, body = SCRIPT.requests["q0"][0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test-123"
    assert body == {
        "model": "judge-model",
        "messages": [{"role": "user", "content": judge_prompt([], "q0", "some answer")}],
    }


def test_a_malformed_reply_is_reasked_as_nvidia_does(settings):
    judgments = run(settings, {"q": [("reply", "It is a tool call."), ok("request_for_info")]})
    assert judgments[0] == Judgment(
        "request_for_info", None, ("It is a tool call.", '{"classification": "request_for_info"}')
    )
    first, second = (body["messages"] for _, _, body in SCRIPT.requests["q"])
    assert second == [
        *first,
        {"role": "assistant", "content": "It is a tool call."},
        {"role": "user", "content": REASK},
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "not json at all",
        '```json\n{"classification": "tool_call"}\n```',  # fenced: not the prescribed JSON
        '{"classification": "tool call"}',  # not one of the four
        '{"category": "tool_call"}',
        '["tool_call"]',
        "",
    ],
)
def test_twice_malformed_is_unjudged_never_guessed(settings, bad):
    judgments = run(settings, {"q": [("reply", bad), ("reply", bad)]})
    assert judgments[0] == Judgment(None, "malformed reply", (bad.strip(), bad.strip()))
    assert len(SCRIPT.requests["q"]) == 2  # NVIDIA's one re-ask, then no more


def test_more_format_retries_are_a_setting(settings):
    judgments = run(settings, {"q": [("reply", "x"), ("reply", "y"), ok("cannot_answer")]}, format_retries=2)
    assert judgments[0].category == "cannot_answer" and len(SCRIPT.requests["q"]) == 3


def test_transient_errors_are_retried(settings):
    script = {
        "500 then ok": [("status", 500, {}), ok("tool_call")],
        "503, 429 then ok": [
            ("status", 503, {"Retry-After": "0"}),
            ("status", 429, {"Retry-After": "0.01"}),
            ok("tool_call"),
        ],
        "not a completion then ok": [("body", "<html>bad gateway</html>"), ok("cannot_answer")],
        "slow then ok": [("slow", 1.0, '{"classification": "direct_answer"}'), ok("direct_answer")],
    }
    judgments = run(settings, script, timeout_s=0.3)
    assert [j.category for j in judgments] == ["tool_call", "tool_call", "cannot_answer", "direct_answer"]
    assert [len(SCRIPT.requests[q]) for q in script] == [2, 3, 2, 2]


def test_what_outlasts_the_retries_is_unjudged_with_its_reason(settings):
    script = {
        "always 500": [("status", 500, {})] * 3,
        "always slow": [("slow", 0.6, '{"classification": "tool_call"}')] * 3,
        "too long for the judge": [("status", 400, {})],  # a 4xx that isn't fatal: this row only, no retry
        "fine": [ok("cannot_answer")],
    }
    judgments = run(settings, script, timeout_s=0.2, max_retries=2)
    assert [(j.category, j.reason) for j in judgments[:2]] == [(None, "http 500"), (None, "timeout")]
    assert judgments[2].category is None and judgments[2].reason.startswith("http 400: ")
    assert judgments[3].category == "cannot_answer"
    assert [len(SCRIPT.requests[q]) for q in script] == [3, 3, 1, 1]  # max_retries=2: three tries
    counts = aggregate(["tool_call", "request_for_info", "tool_call", "cannot_answer"], judgments, resamples=50)
    assert (counts["judged"], counts["unjudged"]) == (1, 3)
    assert counts["unjudged_reasons"] == {"http 500": 1, "timeout": 1, judgments[2].reason: 1}
    assert counts["unjudged_per_category"] == {"tool_call": 2, "request_for_info": 1}
    assert counts["per_category"]["tool_call"] == {"score": None, "response_distribution": {}}
    assert (counts["judge_accuracy"], counts["judge_accuracy_n"]) == (1.0, 1)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_key_model_or_url_stops_the_run(settings, status):
    script = {"q0": [("status", status, {})], **{f"q{i}": [ok("tool_call")] for i in range(1, 4)}}
    with pytest.raises(judge.JudgeError, match=rf"HTTP {status} for model 'judge-model'.*eval\.judge\.url"):
        run(settings, script)
    assert len(SCRIPT.requests["q0"]) == 1  # not retried


def test_the_key_comes_from_the_named_environment_variable(settings, monkeypatch):
    monkeypatch.delenv("FCFT_TEST_JUDGE_KEY")
    with pytest.raises(judge.JudgeError, match="FCFT_TEST_JUDGE_KEY, which is not set.*key_env=null"):
        run(settings, {"q": [ok("tool_call")]})
    assert run(settings, {"q": [ok("tool_call")]}, key_env=None)[0].category == "tool_call"
    assert "Authorization" not in SCRIPT.requests["q"][0][1]


def test_concurrency_is_bounded_and_order_kept(settings):
    categories = [judge.JUDGE_CATEGORIES[i % 4] for i in range(8)]
    script = {f"q{i}": [("slow", 0.15, json.dumps({"classification": c}))] for i, c in enumerate(categories)}
    judgments = run(settings, script, concurrency=2)
    assert [j.category for j in judgments] == categories
    assert SCRIPT.max_in_flight == 2


def test_nvidias_aggregate_on_hand_checked_judgments():
    # 10 rows. Correct answers and judged categories (None: unjudged):
    #   tool_call:        tool_call, tool_call, request_for_info, None
    #   request_for_info: request_for_info, cannot_answer, direct_answer
    #   cannot_answer:    cannot_answer, tool_call, cannot_answer
    correct = ["tool_call"] * 4 + ["request_for_info"] * 3 + ["cannot_answer"] * 3
    judged = ["tool_call", "tool_call", "request_for_info", None]
    judged += ["request_for_info", "cannot_answer", "direct_answer"]
    judged += ["cannot_answer", "tool_call", "cannot_answer"]
    has_tools = [True] * 8 + [False, False]  # the cannot_answer rows judged tool_call and cannot_answer lack tools
    out = aggregate(correct, judged, has_tools, resamples=500)
    # NVIDIA's script, on judged rows: score = share judged as the correct category
    assert out["per_category"] == {
        "tool_call": {"score": 2 / 3, "response_distribution": {"tool_call": 2, "request_for_info": 1}},
        "request_for_info": {
            "score": 1 / 3,
            "response_distribution": {"request_for_info": 1, "cannot_answer": 1, "direct_answer": 1},
        },
        "cannot_answer": {"score": 2 / 3, "response_distribution": {"cannot_answer": 2, "tool_call": 1}},
    }
    # overall: right on 2 + 1 + 2 = 5 of the 9 judged rows
    assert (out["judge_accuracy"], out["judge_accuracy_n"], out["judged"], out["unjudged"]) == (5 / 9, 9, 9, 1)
    low, high = out["judge_accuracy_ci95"]
    assert 0.0 <= low < 5 / 9 < high <= 1.0
    # macro F1 over the labels present (all four): per label 2tp / (true + predicted):
    #   direct_answer 0/(0+1) = 0; tool_call 2*2/(3+3) = 2/3; request_for_info 2*1/(3+2) = 2/5;
    #   cannot_answer 2*2/(3+3) = 2/3  ->  (0 + 2/3 + 2/5 + 2/3) / 4 = 13/30
    assert out["macro_f1"] == pytest.approx(13 / 30)
    # cannot_answer rows without tools: 2 (rows 9 and 10), one judged tool_call
    assert out["tool_hallucination_rate"] == 0.5
    assert out["unjudged_per_category"] == {"tool_call": 1}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("url", "127.0.0.1:8000/v1", "eval.judge.url must be an http"),
        ("model", "", "eval.judge.model must name"),
        ("concurrency", 0, "eval.judge.concurrency must be an integer >= 1"),
        ("max_retries", -1, "eval.judge.max_retries must be an integer >= 0"),
        ("timeout_s", 0, "eval.judge.timeout_s must be a number of seconds > 0"),
    ],
)
def test_settings_are_checked_at_the_edge(settings, key, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(settings, **{key: value})


def test_nothing_to_judge():
    assert judge_all([], JudgeSettings(url="http://127.0.0.1:9/v1", model="m", key_env=None), progress=False) == []
    out = aggregate([], [], [])
    assert (out["n"], out["judge_accuracy"], out["macro_f1"], out["tool_hallucination_rate"]) == (0, None, None, None)


def test_aggregate_reads_fcft_names_and_refuses_unknown_ones():
    out = aggregate(["direct", "tool_call"], [Judgment("direct_answer"), Judgment("tool_call")], resamples=10)
    assert out["per_category"]["direct_answer"] == {"score": 1.0, "response_distribution": {"direct_answer": 1}}
    assert out["per_category"]["cannot_answer"] == {"score": None, "response_distribution": {}}
    with pytest.raises(ValueError, match="row 1: correct_answer 'maybe' is not one of"):
        aggregate(["tool_call", "maybe"], ["tool_call", None])
    with pytest.raises(ValueError, match="judgment 0: 'tool call' is not one of"):
        aggregate(["tool_call"], ["tool call"])


def test_ninety_real_rows_end_to_end(settings, real_test_rows):
    """The judge answers the correct category, except every 10th row (malformed twice) and every 7th (wrong)."""
    rows = [json.loads(line) for line in real_test_rows.read_text().splitlines()]
    script, expected = {}, []
    for i, row in enumerate(rows):
        if i % 10 == 0:
            script[row["question"]] = [("reply", "I think it is a tool call")] * 2
            expected.append(None)
        else:
            category = "direct_answer" if i % 7 == 0 else row["correct_answer"]
            script[row["question"]] = [ok(category)]
            expected.append(category)
    assert len(script) == 90  # each question is its own key
    SCRIPT.reset(script)
    prompts = [prompt_for_row(row, row["answers"]["direct"]) for row in rows]
    started = time.perf_counter()
    judgments = judge_all(prompts, settings, progress=True)
    assert time.perf_counter() - started < 10
    assert [j.category for j in judgments] == expected
    out = aggregate([r["correct_answer"] for r in rows], judgments, [bool(r["tools"]) for r in rows], resamples=200)
    wrong = sum(1 for i in range(90) if i % 7 == 0 and i % 10)  # 0, 70 are unjudged; 7, 14, ..., 84 minus 70
    assert (out["unjudged"], out["judged"]) == (9, 81)
    assert out["judge_accuracy"] == pytest.approx((81 - wrong) / 81)
    assert out["unjudged_reasons"] == {"malformed reply": 9}


def test_no_server_at_all_is_a_connection_error_per_row(settings):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = dataclasses.replace(settings, url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    judgments = judge_all([judge_prompt([], "q", "a")] * 3, down, progress=False)
    assert [(j.category, j.reason) for j in judgments] == [(None, "connection error")] * 3
