"""format=chat_template: prompts and answers rendered by the tokenizer's own chat template, with tools.

What an OpenAI-compatible server (vLLM, TGI, `transformers serve`) does with a request is
`apply_chat_template(messages, tools=..., add_generation_prompt=True)`, then it lets the model write the
assistant turn and parses tool calls in the template's own syntax. This format trains and scores exactly that:

- an answer is the text the template renders for an assistant message after its prompt, up to and including the
  template's end-of-turn token (found by rendering a probe answer): what the model must write, and stop;
- SFT puts the loss on every assistant turn of a conversation. When the template renders the whole conversation
  as the turns were served (each turn's prompt, then its answer, is where the full rendering starts), the
  conversation is one example, its text the template's rendering byte for byte. Templates that render past turns
  otherwise (Qwen3 drops reasoning blocks from them) would teach the model text it is never shown: each assistant
  turn is then its own example, the template's rendering of the conversation up to that turn;
- a preference pair is the prompt's rendering and each answer's; an MCQ choice is the answer of an assistant
  message holding the choice (a tool call in the template's call syntax).

Tools reach the template as OpenAI function definitions (a bare When2Call tool is wrapped in
`{"type": "function", "function": ...}`, as a server receives it). A template that can't render tools or tool
calls is refused when the format is built. Text segments are tokenized one by one (each prompt alone, as a
server tokenizes it, then the answer's tokens).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Optional

from fcft.data import encode
from fcft.data.formats import CATEGORIES, ToolCallError, check_call
from fcft.data.messages import DataError

NAME = "chat_template"
_PROBE_TOOL = json.dumps(
    {
        "type": "function",
        "function": {
            "name": "fcft_probe_tool",
            "description": "A tool fcft renders to check what the chat template does with tools.",
            "parameters": {
                "type": "object",
                "properties": {"fcft_probe_arg": {"type": "string"}},
                "required": ["fcft_probe_arg"],
            },
        },
    }
)
_PROBE_QUESTION = {"role": "user", "content": "fcft probe question"}
_PROBE_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"name": "fcft_probe_tool", "arguments": {"fcft_probe_arg": "fcft_probe_value"}}],
}
_PROBE_TEXT = {"role": "assistant", "content": "fcft probe answer"}


class TemplateError(ValueError):
    """A tokenizer whose chat template can't serve as format=chat_template; the message says why."""


class ChatTemplate:
    """The chat_template format of one tokenizer (see the module doc)."""

    name = NAME

    def __init__(self, tokenizer, model_name: str = "the model"):
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise TemplateError(
                f"{model_name}'s tokenizer has no chat template: format=chat_template renders with it. Give one "
                "with model.chat_template=FILE.jinja, or use a prompt format of fcft's (data.format=qwen2_5, "
                "llama3_2 or blog)"
            )
        self.end_of_turn, probes = self._probe(model_name)
        # Cached tokenized data is keyed on this: the template and what it renders today (a date in it, say).
        self.version = hashlib.sha256("\x00".join([template, *probes]).encode()).hexdigest()[:16]

    # --- rendering ------------------------------------------------------------------------------------------

    def render(self, tools: list[str], messages: list[dict], generation_prompt: bool = False) -> str:
        """The template's text for a conversation, as `apply_chat_template` writes it."""
        return self.tokenizer.apply_chat_template(
            [_template_message(m) for m in messages],
            tools=[_function(json.loads(t)) for t in tools] or None,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )

    def answer(self, tools: list[str], context: list[dict], message: dict) -> tuple[str, str, str]:
        """(prompt, answer, rest): the template's text for `context` + `message` cut where the model's turn starts
        and where it ends (its end-of-turn token); rest is what the template writes after it (a newline)."""
        prompt = self.render(tools, context, generation_prompt=True)
        whole = self.render(tools, [*context, message])
        if not whole.startswith(prompt):
            at = next((i for i, (a, b) in enumerate(zip(whole, prompt)) if a != b), min(len(whole), len(prompt)))
            raise DataError(
                "the chat template renders the conversation differently once the assistant's answer follows it "
                f"(from character {at}: {prompt[at : at + 40]!r} becomes {whole[at : at + 40]!r}), so no served "
                "prompt ends where this answer starts"
            )
        written = whole[len(prompt) :]
        end = written.find(self.end_of_turn) if self.end_of_turn else -1
        cut = end + len(self.end_of_turn) if end >= 0 else len(written)
        return prompt, written[:cut], written[cut:]

    def sft_examples(self, row: dict) -> list[list[tuple[str, bool]]]:
        """A conversation's training examples: text segments, each with whether it carries loss (module doc)."""
        tools, messages = row["tools"], row["messages"]
        turns = [(i, self.answer(tools, messages[:i], m)) for i, m in enumerate(messages) if m["role"] == "assistant"]
        full = self.render(tools, messages)
        if all(full.startswith(prompt + answer) for _, (prompt, answer, _) in turns):
            segments, done = [], 0
            for _, (prompt, answer, _) in turns:
                segments += [(full[done : len(prompt)], False), (answer, True)]
                done = len(prompt) + len(answer)
            return [[s for s in [*segments, (full[done:], False)] if s[0]]]
        return [[s for s in [(p, False), (a, True), (r, False)] if s[0]] for _, (p, a, r) in turns]

    def pref_example(self, row: dict) -> dict:
        prompt, chosen, _ = self.answer(row["tools"], row["prompt"], row["chosen"])
        _, rejected, _ = self.answer(row["tools"], row["prompt"], row["rejected"])
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    def mcq(self, row: dict) -> tuple[str, list[str]]:
        """(prompt, the four choices in CATEGORIES order) of a When2Call test row."""
        question, answers, prompt, choices = {"role": "user", "content": row["question"]}, row["answers"], "", []
        for category in CATEGORIES:
            if category == "tool_call":
                message = {"role": "assistant", "content": "", "tool_calls": [json.loads(answers[category])]}
            else:
                message = {"role": "assistant", "content": answers[category]}
            prompt, choice, _ = self.answer(row["tools"], [question], message)
            choices.append(choice)
        return prompt, choices

    def parse_calls(self, text: str) -> Optional[list[dict]]:
        """Calls in a generated answer: `<tool_call>{...}</tool_call>` blocks (Qwen, Hermes), else the whole answer as
        JSON calls (`{"name", "arguments"|"parameters"}`, Llama 3); None for a text answer."""
        text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()
        if self.end_of_turn and text.endswith(self.end_of_turn):
            text = text[: -len(self.end_of_turn)].strip()
        blocks = re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.DOTALL)
        try:
            if blocks:
                return [_checked(json.loads(block)) for block in blocks]
            if text.startswith(("{", "[")):
                parsed = json.loads(text)
                return [_checked(call) for call in (parsed if isinstance(parsed, list) else [parsed])]
        except (json.JSONDecodeError, ToolCallError):
            return None
        return None

    # --- the template's abilities ----------------------------------------------------------------------------

    def _probe(self, model_name: str) -> tuple[str, list[str]]:
        """(end-of-turn token, probe renderings); TemplateError when tools or tool calls don't render."""
        refuse = f"{model_name}'s chat template can't serve as format=chat_template"
        self.end_of_turn = ""  # not known yet: the probe answers come back whole
        try:
            prompt, call, _ = self.answer([_PROBE_TOOL], [_PROBE_QUESTION], _PROBE_CALL)
            _, written, _ = self.answer([_PROBE_TOOL], [_PROBE_QUESTION], _PROBE_TEXT)
        except Exception as err:  # jinja's errors, raise_exception() in the template, a DataError from answer()
            raise TemplateError(f"{refuse}: rendering a conversation with a tool fails ({err})") from None
        if "fcft_probe_tool" not in prompt:
            raise TemplateError(f"{refuse}: it doesn't render the tools it is given (tools=... leave no trace)")
        if "fcft_probe_tool" not in call or "fcft_probe_value" not in call:
            raise TemplateError(f"{refuse}: it doesn't render an assistant message's tool_calls")
        after = written[written.index(_PROBE_TEXT["content"]) + len(_PROBE_TEXT["content"]) :]
        return _first_special(self.tokenizer, after), [prompt, call, written]


def _first_special(tokenizer, text: str) -> str:
    """The first of the tokenizer's added tokens in `text` (the template's end of turn), or '' if none is."""
    tokens = {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    found = [(text.find(t), t) for t in tokens if t and t in text]
    return min(found)[1] if found else ""


def _checked(call) -> dict:
    if isinstance(call, dict) and "arguments" not in call and "parameters" in call:
        call = {"name": call.get("name"), "arguments": call["parameters"]}
    return check_call(call)


def _function(tool: dict) -> dict:
    """A tool as an OpenAI function definition."""
    return (
        tool
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict)
        else {
            "type": "function",
            "function": tool,
        }
    )


def _template_message(message: dict) -> dict:
    """A normalised message as chat templates take it: tool calls OpenAI-style, arguments as a dict."""
    calls_of = message.get("tool_calls")
    if not calls_of:
        return {k: v for k, v in message.items() if k != "tool_calls"}
    calls = [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls_of]
    return {**message, "tool_calls": calls}


def tokenize_segments(batch: dict, tokenizer, max_length: int) -> dict:
    """A batch of segments/loss columns -> input_ids, completion_mask, fits; each segment is
    tokenized on its own (no special tokens added: the template wrote them)."""
    flat = [text for texts in batch["segments"] for text in texts]
    ids = iter(encode.ids(tokenizer, flat))
    input_ids, masks = [], []
    for texts, losses in zip(batch["segments"], batch["loss"]):
        example, mask = [], []
        for _, loss in zip(texts, losses):
            piece = next(ids)
            example += piece
            mask += [int(loss)] * len(piece)
        input_ids.append(example)
        masks.append(mask)
    return {"input_ids": input_ids, "completion_mask": masks, "fits": [len(e) <= max_length for e in input_ids]}


def tokenize_pref(batch: dict, tokenizer, max_length: int) -> dict:
    """A batch of prompt/chosen/rejected texts -> their ids, each tokenized on its own."""
    n = len(batch["prompt"])
    ids = encode.ids(tokenizer, batch["prompt"] + batch["chosen"] + batch["rejected"])
    prompt, chosen, rejected = ids[:n], ids[n : 2 * n], ids[2 * n :]
    return {
        "prompt_ids": prompt,
        "chosen_ids": chosen,
        "rejected_ids": rejected,
        "fits": [len(p) + max(len(c), len(r)) <= max_length for p, c, r in zip(prompt, chosen, rejected)],
    }
