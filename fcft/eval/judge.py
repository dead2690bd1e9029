"""When2Call's LLM-as-a-judge protocol: a judge model behind any OpenAI-compatible chat-completions endpoint classifies
each generated answer as direct_answer, tool_call, request_for_info or cannot_answer; `aggregate` scores those
classifications as NVIDIA's `aggregate_llm_as_a_judge_results.py` does, plus an overall accuracy with a 95% interval.

    prompt_for_row(row, response) -> str     NVIDIA's judge prompt for a When2Call row (fcft/eval/judge_prompt.py)
    response_text(content, calls) -> str     a generated answer as NVIDIA's inference script hands it to the judge
    judge_all(prompts, settings) -> [Judgment]   one classification (or None: unjudged) per prompt, in order
    aggregate(correct_answers, judgments, has_tools) -> dict

The client, written on `requests` (installed with MLflow; the `openai` package is not needed for one POST):
bounded concurrency (a thread pool), a timeout per connect and per read, and retries with exponential backoff on
transient failures: connection errors, timeouts, HTTP 408/429/5xx (429/503 honour a numeric Retry-After, capped),
and a 200 whose body isn't a chat completion. A transient failure that outlasts the retries leaves the row unjudged
with the reason. HTTP 401, 403 and 404 stop the whole run (a wrong key, model or URL fails every row alike); any
other 4xx leaves that row unjudged without retrying (e.g. a prompt over the judge's context).

A reply is the prescribed JSON when, stripped, it parses as a JSON object whose "classification" is one of the four
categories. Otherwise the judge is re-asked as NVIDIA's script does (its reply, then NVIDIA's re-write request,
appended to the conversation), `format_retries` times (NVIDIA: once); then the row is unjudged ("malformed reply"),
never guessed. Stricter than NVIDIA's, which accepted any JSON and crashed on a second bad reply: a valid JSON with
another classification would count as a wrong answer there, and is re-asked, then unjudged, here.

The API key is read from the environment variable `settings.key_env` names (never from config); key_env None sends no
Authorization header (a local server without keys).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import numpy as np

from fcft.data.formats import CATEGORIES
from fcft.eval import metrics
from fcft.eval.judge_prompt import JUDGE_PROMPT, REASK
from fcft.eval.toolcalls import add_rate, bootstrap_rows

# fcft's CATEGORIES in the judge's words (direct -> direct_answer), same order: the MCQ metrics' category indices
# (metrics.TOOL_CALL, metrics.CANNOT_ANSWER) hold for the judge's categories too.
JUDGE_CATEGORIES = tuple("direct_answer" if c == "direct" else c for c in CATEGORIES)
NVIDIA_CATEGORIES = ("tool_call", "request_for_info", "cannot_answer")  # the correct answers NVIDIA's script scores
FATAL_STATUS = (401, 403, 404)
TRANSIENT_STATUS = (408, 429)  # and every 5xx


class JudgeError(RuntimeError):
    """The judge can't be used at all (no key, wrong URL, model or key): the run stops instead of judging nothing."""


@dataclass(frozen=True)
class JudgeSettings:
    """What `eval.judge.*` holds."""

    url: str  # the API's base URL, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is appended unless present)
    model: str  # the judge model's name at that endpoint
    key_env: Optional[str] = "OPENAI_API_KEY"  # the environment variable holding the key; None: no key
    concurrency: int = 8  # requests in flight
    timeout_s: float = 60.0  # per connect and per read
    max_retries: int = 4  # retries after a transient failure (so up to 5 tries per request)
    format_retries: int = 1  # re-asks after a reply that isn't the prescribed JSON (NVIDIA's protocol: 1)
    backoff_s: float = 1.0  # the first wait before a retry; doubles each retry
    backoff_max_s: float = 30.0  # the longest wait (Retry-After included)
    extra_body: Optional[dict] = None  # merged into each request body, e.g. {"temperature": 0}; NVIDIA sends none

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"eval.judge.url must be an http(s) URL, e.g. http://127.0.0.1:8000/v1; got {self.url!r}")
        if not self.model:
            raise ValueError("eval.judge.model must name the judge model the endpoint serves, e.g. gpt-4o")
        for key, low in (("concurrency", 1), ("max_retries", 0), ("format_retries", 0)):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < low:
                raise ValueError(f"eval.judge.{key} must be an integer >= {low}; got {getattr(self, key)!r}")
        for key in ("timeout_s", "backoff_s", "backoff_max_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"eval.judge.{key} must be a number of seconds > 0; got {getattr(self, key)!r}")


@dataclass(frozen=True)
class Judgment:
    category: Optional[str]  # one of JUDGE_CATEGORIES; None: unjudged
    reason: Optional[str] = None  # why unjudged
    replies: tuple = ()  # the judge's raw replies, in order

    def to_dict(self) -> dict:
        return asdict(self)


# --- what the judge reads --------------------------------------------------------------------------------------


def judge_prompt(tools: Sequence[Union[str, dict]], question: str, response: str) -> str:
    """NVIDIA's prompt: the tools as Python's str() of the list of parsed tool dicts (what its script formats)."""
    parsed = [json.loads(tool) if isinstance(tool, str) else tool for tool in tools]
    return JUDGE_PROMPT.format(parsed, question, response)


def prompt_for_row(row: dict, response: str) -> str:
    """The judge prompt for a When2Call test row and the model's response (`response_text`)."""
    return judge_prompt(row["tools"], row["question"], response)


def response_text(content: Optional[str], calls: Optional[Sequence[dict]] = None) -> str:
    """NVIDIA's inference script: the first tool call as json.dumps({"name", "arguments"}) when the model called (the
    others are dropped), else the message text stripped. Arguments given as JSON text are parsed first."""
    if calls:
        call = calls[0]
        arguments = call["arguments"]
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        return json.dumps({"name": call["name"], "arguments": arguments})
    return (content or "").strip()


def parse_classification(reply: Optional[str]) -> Optional[str]:
    """The category of a reply in the prescribed JSON; None for anything else."""
    try:
        value = json.loads((reply or "").strip())
    except json.JSONDecodeError:
        return None
    category = value.get("classification") if isinstance(value, dict) else None
    return category if category in JUDGE_CATEGORIES else None


# --- the client --------------------------------------------------------------------------------------------------


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _RowFailure(Exception):
    """A request this row can't make (a non-fatal 4xx): unjudged, not retried."""


class JudgeClient:
    """Chat completions against one OpenAI-compatible endpoint; thread-safe (a requests.Session per thread)."""

    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        url = settings.url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if settings.key_env:
            key = os.environ.get(settings.key_env)
            if not key:
                raise JudgeError(
                    f"eval.judge.key_env names the environment variable {settings.key_env}, which is not set: "
                    f"export it, or set eval.judge.key_env=null for a server that takes no key"
                )
            self.headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()

    def judge(self, prompt: str) -> Judgment:
        """One row: ask, re-ask on a malformed reply, and give the category or None with the reason."""
        messages, replies = [{"role": "user", "content": prompt}], []
        for attempt in range(self.settings.format_retries + 1):
            if attempt:
                messages += [{"role": "assistant", "content": replies[-1]}, {"role": "user", "content": REASK}]
            try:
                reply = self.complete(messages)
            except _RowFailure as err:
                return Judgment(None, str(err), tuple(replies))
            except _Transient as err:
                return Judgment(None, err.reason, tuple(replies))
            replies.append(reply.strip())
            category = parse_classification(reply)
            if category is not None:
                return Judgment(category, None, tuple(replies))
        return Judgment(None, "malformed reply", tuple(replies))

    def complete(self, messages: list[dict]) -> str:
        """The reply text (content; "" when the message has none), retrying transient failures with backoff."""
        settings = self.settings
        for attempt in range(settings.max_retries + 1):
            try:
                return self._post(messages)
            except _Transient as err:
                if attempt == settings.max_retries:
                    raise
                wait = min(settings.backoff_max_s, settings.backoff_s * 2**attempt)
                if err.retry_after is not None:
                    wait = min(settings.backoff_max_s, max(wait, err.retry_after))
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _post(self, messages: list[dict]) -> str:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        body = {"model": self.settings.model, "messages": messages, **(self.settings.extra_body or {})}
        timeout = self.settings.timeout_s
        try:
            response = session.post(self.endpoint, json=body, headers=self.headers, timeout=(timeout, timeout))
        except requests.Timeout:
            raise _Transient("timeout") from None
        except requests.ConnectionError:
            raise _Transient("connection error") from None
        status = response.status_code
        if status in FATAL_STATUS:
            raise JudgeError(
                f"the judge at {self.endpoint} answered HTTP {status} for model {self.settings.model!r}: "
                f"{response.text[:300]!r}; check eval.judge.url, eval.judge.model and the key in "
                f"${self.settings.key_env}"
            )
        if status in TRANSIENT_STATUS or status >= 500:
            raise _Transient(f"http {status}", _retry_after(response.headers.get("Retry-After")))
        if status >= 400:
            raise _RowFailure(f"http {status}: {response.text[:200]}")
        try:
            message = response.json()["choices"][0]["message"]
            content = message.get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Transient("response is not a chat completion") from None
        return content if isinstance(content, str) else ""


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the exponential backoff stands


def judge_all(prompts: Sequence[str], settings: JudgeSettings, progress: bool = True) -> list[Judgment]:
    """One Judgment per prompt, in the prompts' order, `settings.concurrency` requests at a time, with a progress
    bar (rows/s). Raises JudgeError (and cancels what hasn't started) when the endpoint refuses the key, model or
    URL."""
    from tqdm.auto import tqdm

    client = JudgeClient(settings)
    results: list[Optional[Judgment]] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=f"judge {settings.model}", unit="rows", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        futures = {pool.submit(client.judge, prompt): i for i, prompt in enumerate(prompts)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
    return results


# --- the scores ----------------------------------------------------------------------------------------------------


def aggregate(
    correct_answers: Sequence[str],
    judgments: Sequence[Union[Judgment, Optional[str]]],
    has_tools: Optional[Sequence[bool]] = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """The judge's scores. `correct_answers`: each row's When2Call correct_answer (fcft's "direct" is read as the
    judge's direct_answer); `judgments`: Judgments or categories (None: unjudged); `has_tools`: whether each row
    offered tools (for the hallucination rate; None skips it).

        per_category      NVIDIA's aggregate over judged rows: {correct category: {"score": share judged as that
                          category, "response_distribution": {judged category: count}}}, for NVIDIA's three
                          categories (score None when none of their rows was judged) and any other correct answer
                          present
        judge_accuracy    judged rows whose judged category is the correct one (+ _ci95, _n = judged rows)
        macro_f1, tool_hallucination_rate   fcft.eval.metrics' functions (the MCQ metrics), on judged rows
        n, judged, unjudged, unjudged_per_category, unjudged_reasons
    """
    if len(correct_answers) != len(judgments) or (has_tools is not None and len(has_tools) != len(judgments)):
        raise ValueError(f"{len(correct_answers)} correct answers, {len(judgments)} judgments: one of each per row")
    correct = [_judge_category(answer, i) for i, answer in enumerate(correct_answers)]
    judged = [j.category if isinstance(j, Judgment) else j for j in judgments]
    for i, category in enumerate(judged):
        if category is not None and category not in JUDGE_CATEGORIES:
            raise ValueError(f"judgment {i}: {category!r} is not one of {', '.join(JUDGE_CATEGORIES)} (or None)")
    per_category = {}
    others = tuple(c for c in JUDGE_CATEGORIES if c in correct and c not in NVIDIA_CATEGORIES)
    for category in NVIDIA_CATEGORIES + others:
        got = [j for c, j in zip(correct, judged) if c == category and j is not None]
        per_category[category] = {
            "score": sum(j == category for j in got) / len(got) if got else None,
            "response_distribution": dict(Counter(got)),
        }
    out = {"per_category": per_category, "n": len(judged)}
    hits = np.array([j == c for c, j in zip(correct, judged)], dtype=np.float64)
    is_judged = np.array([j is not None for j in judged], dtype=bool)
    add_rate(out, "judge_accuracy", hits, is_judged, bootstrap_rows(len(judged), resamples, seed))
    gold = np.array([JUDGE_CATEGORIES.index(c) for c, j in zip(correct, judged) if j is not None], dtype=np.int64)
    predicted = np.array([JUDGE_CATEGORIES.index(j) for j in judged if j is not None], dtype=np.int64)
    out["macro_f1"] = metrics.macro_f1(gold, predicted) if len(gold) else None
    out["tool_hallucination_rate"] = None
    if has_tools is not None and len(gold):
        tools = np.array([bool(t) for t, j in zip(has_tools, judged) if j is not None])
        out["tool_hallucination_rate"] = metrics.tool_hallucination_rate(gold, predicted, tools)
    reasons = [j.reason or "unjudged" for j in judgments if isinstance(j, Judgment) and j.category is None]
    out.update(
        judged=int(is_judged.sum()),
        unjudged=int((~is_judged).sum()),
        unjudged_per_category=dict(Counter(c for c, j in zip(correct, judged) if j is None)),
        unjudged_reasons=dict(Counter(reasons)),
    )
    return out


def _judge_category(answer: str, index: int) -> str:
    answer = "direct_answer" if answer == "direct" else answer
    if answer not in JUDGE_CATEGORIES:
        raise ValueError(f"row {index}: correct_answer {answer!r} is not one of {', '.join(JUDGE_CATEGORIES)}")
    return answer
