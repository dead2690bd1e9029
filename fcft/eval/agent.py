"""Scoring the model as an agent uses it (eval.generate): it writes each row's answer, and the answer is scored.

    answers = answer(spec, model, tokenizer, fmt, requests, model_dir, log)  # in process, a server fcft starts, yours
    block, per_row = score(spec, rows, requests, answers)                # tool-call accuracy (+ the judge's verdicts)

Where the answers come from (`eval.generate.source`):
    in_process  the run's model generates (fcft/eval/generate.py: batched, greedy), parsed by the run's format;
    serve       an OpenAI-compatible server on the run's saved model/ (fcft/eval/server.py: vLLM where it is installed
                and a GPU is present, else `transformers serve`) on 127.0.0.1, stopped afterwards; the calls are the
                server's `tool_calls`, parsed by the template's own parser as an agent gets them;
    endpoint    a server the user names (eval.generate.endpoint, endpoint_model, key_env).

The block (metrics.json's `generate`): fcft/eval/toolcalls.py's tool-call accuracy (no judge needed) for every row
with a reference; with eval.judge.url, When2Call's LLM-as-judge verdicts on its test rows (judge_accuracy, NVIDIA's
per-category aggregate; a reply that isn't the prescribed JSON is retried, then counted unjudged). Without a judge
the block says `judge: not judged`. Per row (eval/generations.jsonl): the id, the reference, the text and calls,
the tool-call outcome and the verdict.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from fcft.data import messages as msgs
from fcft.eval import generate as gen
from fcft.eval import judge as judging
from fcft.eval import toolcalls
from fcft.spec.eval_options import GenerateSource

NOT_JUDGED = "not judged: no eval.judge.url (tool-call accuracy only)"
# A call the model tried to write and that didn't parse: the template's call tag, or text that opens a JSON call.
_ATTEMPT = re.compile(r"<tool_call>|<\|python_tag\|>|^\s*[\[{]\s*\"name\"", re.DOTALL)
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)  # Qwen3's (empty) reasoning block: not the answer


def answer(spec, model, tokenizer, fmt, requests: list, model_dir: Optional[Path], log_path: Path) -> list:
    """One generate.Generated per request, from eval.generate.source (a server fcft starts logs to log_path)."""
    settings = spec.eval.generate
    if settings.source == GenerateSource.in_process:
        return gen.generate(model, tokenizer, fmt, requests, settings.batch_size, settings.max_new_tokens)
    from fcft.eval import openai_client, server

    options = {"max_tokens": settings.max_new_tokens}
    if settings.source == GenerateSource.endpoint:
        endpoint = openai_client.Endpoint(settings.endpoint, settings.endpoint_model, settings.key_env or "")
        return openai_client.answer_all(endpoint, requests, settings.concurrency, **options)
    if model_dir is None or not (model_dir / "config.json").is_file():
        raise server.ServerError(
            f"eval.generate.source=serve serves a saved model with its full weights, and {model_dir} has none "
            "(a LoRA run saves adapters): use eval.generate.source=in_process, or serve the merged model"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with server.Server(model_dir, family=spec.model.family, log_path=log_path) as endpoint:
        return openai_client.answer_all(endpoint, requests, settings.concurrency, **options)


def score(spec, rows: list[dict], requests: list, answers: list) -> tuple[dict, list[dict]]:
    """(the generate block, per-row records) of the answers to `requests` (made from `rows`, in order)."""
    scored = [i for i, r in enumerate(requests) if r.reference is not None]
    cases = [_case(requests[i], answers[i]) for i in scored]
    block = {
        "source": spec.eval.generate.source.value,
        "n": len(requests),
        "max_new_tokens": spec.eval.generate.max_new_tokens,
        "unfinished": sum(not a.finished for a in answers),
        "server_errors": sum(a.error is not None for a in answers),
        **toolcalls.summary(cases, spec.eval.bootstrap_resamples, spec.eval.bootstrap_seed),
    }
    outcomes = dict(zip(scored, (toolcalls.score_case(c, i) for i, c in zip(scored, cases))))
    verdicts = _judge(spec, rows, answers, block)
    per_row = []
    for i, (request, generated) in enumerate(zip(requests, answers)):
        record = {
            "id": request.id,
            "reference": request.reference,
            "text": generated.text,
            "calls": generated.calls,
            "finished": generated.finished,
            "error": generated.error,
            "outcome": outcomes.get(i),
        }
        if i in verdicts:
            record["judged"] = verdicts[i].to_dict()
        per_row.append(record)
    return block, per_row


def _case(request, generated) -> toolcalls.Case:
    reference = request.reference.get("tool_calls") or None
    offered = sorted(msgs.offered(request.tools))
    if generated.error is not None or (generated.calls is None and _ATTEMPT.search(generated.text or "")):
        made = toolcalls.Unparseable(text=generated.text, error=generated.error or "no call parsed")
    else:
        made = generated.calls or None
    return toolcalls.Case(offered=offered, reference=reference, generated=made)


def _judge(spec, rows: list[dict], answers: list, block: dict) -> dict:
    """{row index: Judgment} for the When2Call rows (question + correct_answer), and block["judge"]."""
    settings = spec.eval.judge
    judgeable = [i for i, row in enumerate(rows) if "question" in row and "correct_answer" in row]
    if settings.url is None:
        block["judge"] = NOT_JUDGED
        return {}
    if not judgeable:
        block["judge"] = "not judged: no row is a When2Call test row (question and correct_answer)"
        return {}
    judge_settings = judging.JudgeSettings(
        url=settings.url,
        model=settings.model,
        key_env=settings.key_env,
        concurrency=settings.concurrency,
        timeout_s=settings.timeout_s,
        max_retries=settings.max_retries,
        format_retries=settings.format_retries,
    )
    prompts = [judging.judge_prompt(rows[i]["tools"], rows[i]["question"], _response(answers[i])) for i in judgeable]
    judgments = judging.judge_all(prompts, judge_settings)
    block["judge"] = judging.aggregate(
        [rows[i]["correct_answer"] for i in judgeable],
        judgments,
        has_tools=[bool(rows[i]["tools"]) for i in judgeable],
        resamples=spec.eval.bootstrap_resamples,
        seed=spec.eval.bootstrap_seed,
    )
    block["judge"]["model"] = settings.model
    return dict(zip(judgeable, judgments))


def _response(generated) -> str:
    """What NVIDIA's inference script hands the judge: the first call as JSON, else the text."""
    return judging.response_text(_THINK.sub("", generated.text or ""), generated.calls)


def key_problem(spec) -> Optional[str]:
    """A named API key variable that isn't set (checked before a model loads)."""
    for key, name in (
        ("eval.generate.key_env", spec.eval.generate.key_env),
        ("eval.judge.key_env", spec.eval.judge.key_env),
    ):
        used = (
            spec.eval.generate.source == GenerateSource.endpoint
            if key.startswith("eval.generate")
            else spec.eval.judge.url
        )
        if used and name and not os.environ.get(name):
            return f"{key}: the environment variable {name} is not set (it holds the API key; null sends none)"
    return None
