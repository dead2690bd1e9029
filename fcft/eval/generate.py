"""Generated answers, in process: the run's model writes each row's answer, parsed by the run's format.

    requests(rows)                  When2Call test rows (one question) or conversational rows, as Requests
    generate(model, tok, fmt, ...)  one Generated per request, in order: the raw answer text and its parsed calls

A request is the conversation the model answers (`messages`, with the row's `tools`) and, where the row has one,
the reference answer:

    When2Call test row   context [user question]; reference: the `correct_answer` category's answer (a tool
                         call as the message's `tool_calls`)
    conversational row   context: the messages before the last assistant turn; reference: that turn (a row with
                         no assistant turn is all context, no reference)

Generation is batched (prompts sorted by length, left-padded), greedy unless told otherwise, at most
`max_new_tokens` per answer, and stops at the format's end of turn or the tokenizer's end of sequence. The answer
text is the decoded tokens up to that stop (special tokens kept: `<tool_call>` is one in Qwen's vocabulary), and
its calls are the format's `parse_calls` of it. A progress bar counts rows (rows/s).

The same Requests go to an OpenAI-compatible server through `fcft.eval.openai_client`, which returns the same
`Generated` shape: its text is the message's content and its calls the message's `tool_calls`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

from fcft.data import messages as msgs
from fcft.data.messages import DataError

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class Request:
    """One answer to generate: the conversation up to the model's turn, and the expected answer if known."""

    id: str
    tools: list[str]  # JSON text, one string per tool (fcft/data/messages.py)
    messages: list[dict]  # normalised messages; the model writes the next assistant turn
    reference: Optional[dict] = None  # the expected assistant message


@dataclass(frozen=True)
class Generated:
    """A model's answer: its text and the calls in it (None when it is a text answer)."""

    text: str
    calls: Optional[list[dict]]
    finished: bool = True  # False: cut at max_new_tokens before the end of turn
    error: Optional[str] = None  # a server's refusal of this row (openai_client's errors="record"): no answer


# --- rows -> requests ---------------------------------------------------------------------------------------------


def requests(rows: Iterable[dict], where: str = "rows") -> list[Request]:
    """Requests from When2Call test rows (`question`) or conversational rows (`messages`), told apart per row."""
    result = []
    for i, row in enumerate(rows):
        at = f"{where}[{i}]"
        try:
            if isinstance(row, dict) and "question" in row:
                result.append(_test_request(row, i))
            elif isinstance(row, dict) and "messages" in row:
                result.append(_conversation_request(row, i))
            else:
                raise DataError("a row needs 'question' (a When2Call test row) or 'messages' (a conversation)")
        except DataError as err:
            raise DataError(f"{at}: {err}") from None
    return result


def _test_request(row: dict, i: int) -> Request:
    tools = msgs.tools(row.get("tools", []))
    if not isinstance(row["question"], str):
        raise DataError("field 'question' must be a string")
    reference = None
    correct, answers = row.get("correct_answer"), row.get("answers")
    if isinstance(answers, dict) and isinstance(answers.get(correct), str):
        text = answers[correct]
        if correct == "tool_call":
            try:
                call = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"field 'answers.tool_call' is not valid JSON ({err.msg})") from None
            reference = msgs.message({"role": "assistant", "content": "", "tool_calls": [call]}, "answers", None)
        else:
            reference = {"role": "assistant", "content": text}
    question = {"role": "user", "content": row["question"]}
    return Request(str(row.get("uuid", i)), tools, [question], reference)


def _conversation_request(row: dict, i: int) -> Request:
    tools = msgs.tools(row.get("tools", []))
    conversation = msgs.conversation(row["messages"], "messages", msgs.offered(tools))
    last = max((j for j, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        context, reference = conversation, None
    else:
        context, reference = conversation[:last], conversation[last]
    if not context:
        raise DataError("field 'messages' starts with the assistant turn: there is nothing for the model to answer")
    return Request(str(row.get("uuid", row.get("id", i))), tools, context, reference)


# --- prompts ------------------------------------------------------------------------------------------------------


def prompt(fmt, request: Request) -> str:
    """The text the model continues: the chat template's rendering with the generation prompt, or a fixed format's
    prompt for the one question it renders."""
    if hasattr(fmt, "render"):  # format=chat_template
        return fmt.render(request.tools, request.messages, generation_prompt=True)
    question, _ = msgs.single_turn(request.messages, f"request {request.id}: messages", fmt.name)
    return fmt.prompt(request.tools, question)


def answer_text(fmt, text: str) -> str:
    """A generated text up to the format's end of turn (what the model wrote before it stopped)."""
    end = fmt.end_of_turn
    return text[: text.find(end)] if end and end in text else text


# --- generation ---------------------------------------------------------------------------------------------------


def generate(
    model,
    tokenizer,
    fmt,
    reqs: list[Request],
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    greedy: bool = True,
    progress: bool = True,
) -> list[Generated]:
    """One Generated per request, in input order (module doc)."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    prompts = [prompt(fmt, r) for r in reqs]
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    stops, stop_strings = _stops(model, tokenizer, fmt)
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)  # masked out
    config = _generation_config(model, stops, pad, max_new_tokens, greedy, stop_strings)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch: less padding
    results: list[Optional[Generated]] = [None] * len(ids)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(ids), unit="row", desc="generating", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in batch], device=model.device)
                mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch])
                extra = {"tokenizer": tokenizer} if stop_strings else {}
                out = model.generate(
                    input_ids=input_ids, attention_mask=mask.to(model.device), generation_config=config, **extra
                )
                for row, i in enumerate(batch):
                    results[i] = _decoded(tokenizer, fmt, out[row, width:].tolist(), stops)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _stops(model, tokenizer, fmt) -> tuple[set[int], list[str]]:
    """(token ids that end an answer, stop strings for an end of turn that isn't one token)."""
    stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = model.generation_config.eos_token_id
    stops.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    end, stop_strings = fmt.end_of_turn, []
    if end:
        end_ids = tokenizer(end, add_special_tokens=False)["input_ids"]
        if len(end_ids) == 1:
            stops.add(end_ids[0])
        else:
            stop_strings.append(end)
    if not stops and not stop_strings:
        raise ValueError("the tokenizer has no end-of-sequence token and the format no end of turn: nothing stops")
    return stops, stop_strings


def _generation_config(model, stops: set[int], pad: int, max_new_tokens: int, greedy: bool, stop_strings: list[str]):
    import copy

    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.max_length = max_new_tokens, None
    config.eos_token_id, config.pad_token_id = sorted(stops), pad
    config.stop_strings = stop_strings or None
    if greedy:  # the model's own sampling settings (Qwen3 ships temperature 0.6) would only warn
        config.do_sample, config.num_beams = False, 1
        config.temperature = config.top_p = config.top_k = None
    return config


def _decoded(tokenizer, fmt, generated: list[int], stops: set[int]) -> Generated:
    cut = next((j for j, token in enumerate(generated) if token in stops), None)
    text = tokenizer.decode(generated if cut is None else generated[:cut], skip_special_tokens=False)
    finished = cut is not None or (bool(fmt.end_of_turn) and fmt.end_of_turn in text)
    text = answer_text(fmt, text)
    return Generated(text=text, calls=fmt.parse_calls(text), finished=finished)
