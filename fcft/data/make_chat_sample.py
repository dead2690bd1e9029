"""Generate fcft's bundled conversational tool-calling sample (synthetic, seeded, nothing copied).

    python -m fcft.data.make_chat_sample       # rewrites fcft/data/sample/chat/*.jsonl

Rows in the Hugging Face / TRL conversational convention (fcft/data/messages.py), shaped like agent logs, for
format=chat_template; the same seed always gives the same bytes:
- train_sft.jsonl: `{"tools", "messages"}`, multi-turn: a tool call, its `tool` result (JSON text) and the answer
  drawn from it; a question missing a required detail, the assistant asking for it, the user's reply, then the
  call; a request no offered tool serves, declined; small talk and general questions answered without tools;
  an optional system message; one to three tools offered;
- train_pref.jsonl: TRL's conversational preference rows `{"tools", "prompt", "chosen", "rejected"}`, cut at one
  assistant turn: chosen is the right behaviour, rejected a plausible wrong one (another offered tool, a tool not
  offered, a wrong argument value, a guessed missing detail, answering or refusing instead of calling, an answer
  contradicting the tool result, the same call again);
- test.jsonl: `{"tools", "messages", "category"}` whose LAST assistant turn is the reference a generated answer
  is scored against; `category` names that turn's behaviour (CATEGORIES). Held out: no test row has the user turns
  and tool names of any training prompt.

Each row is written in one of two encodings found in logs: OpenAI's (a call `id`, `arguments` as JSON text, the
result's `tool_call_id`, `content: null` beside calls) or the Hugging Face one (`arguments` as an object, the
result's `name`). At most one call per assistant message: Llama 3.2's template refuses more.

Learnable like make_sample's rows, whose tools and wording (make_sample.CATALOG) this reuses: a call carries
exactly the values the user named, the missing detail is always the same one for a wording, an answer after a
tool result repeats the result's values, "What can you do?" is answered from the offered tools' descriptions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fcft.data import SAMPLE_DIR
from fcft.data.make_sample import CANNOT, CATALOG, OUT_OF_SCOPE, _slots
from fcft.data.sample_files import main, write_parts

CHAT_DIR = SAMPLE_DIR / "chat"
SIZES = {"train_sft": 240, "train_pref": 160, "test": 48}
# What an assistant turn does (the `category` of a test row's reference turn). Not When2Call's "direct", which
# is a hallucinated answer: here a direct answer is right, for a message no tool is needed for.
CATEGORIES = ("tool_call", "tool_answer", "request_for_info", "cannot_answer", "direct_answer")
EPISODES = ("call", "ask", "cannot", "direct")  # a conversation's first exchange (a later one may be "thanks")
MAX_TOOLS = 3

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant with access to tools. Call a tool when one can answer; ask when a required detail "
    "is missing; say so when no tool fits.",
    "You are a concise assistant. Keep answers short.",
]
DIRECT = [  # needs no tool: answered directly whatever the tools
    ("Hi there!", "Hello! How can I help you today?"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
]
THANKS = [("Thanks, that's all.", "You're welcome! Have a great day."), ("Great, thank you!", "Happy to help!")]
ABILITIES = "What can you do?"
REPLIES = ["{value}.", "{value}, please."]  # the user giving a detail the assistant asked for

RATES = {"USD": {"GBP": 0.79, "INR": 83.2, "CAD": 1.36}, "EUR": {"GBP": 0.86, "INR": 90.1, "CAD": 1.48}}
RATES["JPY"] = {"GBP": 0.0053, "INR": 0.56, "CAD": 0.0091}
TRANSLATIONS = {
    "good morning": {"Spanish": "buenos dias", "German": "guten Morgen", "Japanese": "ohayou gozaimasu"},
    "thank you": {"Spanish": "gracias", "German": "danke", "Japanese": "arigatou"},
    "where is the station": {
        "Spanish": "donde esta la estacion",
        "German": "wo ist der Bahnhof",
        "Japanese": "eki wa",
    },
}
DEFINITIONS = {
    "serendipity": "finding something good by chance",
    "ephemeral": "lasting a very short time",
    "ubiquitous": "present or found everywhere",
    "gregarious": "fond of company, sociable",
}
# Per tool: what its result adds to the call's arguments (a list to draw from, or a function of the arguments),
# and the answer that reports the result.
RESULTS = {
    "get_weather": (
        {"temperature": list(range(-3, 31, 3)), "conditions": ["sunny", "cloudy", "raining", "windy"]},
        "It is {temperature} degrees {unit} and {conditions} in {city} right now.",
    ),
    "book_flight": (
        {"seat": ["12A", "14C", "22F", "3B"], "confirmation": ["QX7P2", "LM4K9", "ZT8R1", "HB2W6"]},
        "Done: you're booked from {origin} to {destination} on {day}, seat {seat}. Confirmation code {confirmation}.",
    ),
    "get_exchange_rate": (
        {"rate": lambda a: RATES[a["from_currency"]][a["to_currency"]]},
        "One {from_currency} is worth {rate} {to_currency} right now.",
    ),
    "get_stock_price": (
        {"price": [187.32, 121.44, 178.25, 242.8, 96.1], "currency": ["USD"]},
        "{symbol} is trading at {price} {currency} on the {exchange}.",
    ),
    "translate_text": (
        {"translation": lambda a: TRANSLATIONS[a["text"]][a["target_language"]]},
        "In {target_language}, '{text}' is '{translation}'.",
    ),
    "set_reminder": ({"status": ["scheduled"]}, "Reminder set: {task}, {day}."),
    "search_restaurants": (
        {"top_result": ["Casa Verde", "The Golden Fork", "Little Saigon", "Blue Door"], "rating": [4.2, 4.5, 4.8]},
        "Try {top_result} in {city}, rated {rating} out of 5.",
    ),
    "send_message": ({"status": ["sent"]}, "Sent to {contact}: '{text}'."),
    "get_definition": ({"definition": lambda a: DEFINITIONS[a["word"]]}, "'{word}' means {definition}."),
    "play_song": ({"status": ["playing"]}, "Now playing {track}."),
}


def openai_tool(tool: dict) -> dict:
    """make_sample's When2Call-style tool as an OpenAI function definition (a JSON-schema "object")."""
    return {"type": "function", "function": {**tool, "parameters": {**tool["parameters"], "type": "object"}}}


def _call(entry: dict, values: dict) -> dict:
    """The call of an entry's tool with these values, in the tool's parameter order."""
    order = list(entry["tool"]["parameters"]["properties"])
    return {"name": entry["tool"]["name"], "arguments": {k: values[k] for k in order if k in values}}


def _fill(rng: random.Random, entry: dict, template: str) -> tuple[str, dict]:
    values = {name: rng.choice(entry["slots"][name]) for name in _slots(template, entry)}
    return template.format(**values), values


def _result(rng: random.Random, entry: dict, call: dict) -> tuple[str, str]:
    """(the tool's result as JSON text, the assistant's answer reporting it)."""
    props = entry["tool"]["parameters"]["properties"]
    given = call["arguments"]  # with the defaults of the parameters the call leaves out, in the tool's order
    fields = {k: given[k] if k in given else p["default"] for k, p in props.items() if k in given or "default" in p}
    extra, answer = RESULTS[call["name"]]
    for key, source in extra.items():
        fields[key] = source(fields) if callable(source) else rng.choice(source)
    return json.dumps(fields), answer.format(**fields)


# --- one exchange: the user's request and the assistant's turns, each with what a wrong turn would be -------------


def _turn(kind: str, message: dict, **why) -> tuple[dict, dict]:
    return message, {"kind": kind, **why}


def _calls(rng: random.Random, entry: dict, values: dict) -> list:
    """The call, its result, the answer from it."""
    call = _call(entry, values)
    result, answer = _result(rng, entry, call)
    return [
        _turn("tool_call", {"role": "assistant", "calls": [call]}, entry=entry, values=values),
        ({"role": "tool", "content": result, "name": call["name"]}, None),
        _turn("tool_answer", {"role": "assistant", "content": answer}, entry=entry, call=call),
    ]


def _episode(rng: random.Random, kind: str, entry: dict, tools: list[dict]) -> list:
    """(message, why) pairs of one exchange; `why` (assistant turns only) says what the turn does and from what."""
    if kind == "call":
        question, values = _fill(rng, entry, rng.choice(entry["ask"]))
        return [({"role": "user", "content": question}, None), *_calls(rng, entry, values)]
    if kind == "ask":
        template, missing = rng.choice(entry["vague"])
        question, values = _fill(rng, entry, template)
        values[missing] = rng.choice(entry["slots"][missing])
        shown = f"'{values[missing]}'" if " " in values[missing] else values[missing]
        ask = entry["need"][missing]
        return [
            ({"role": "user", "content": question}, None),
            _turn(
                "request_for_info", {"role": "assistant", "content": ask}, entry=entry, values=values, missing=missing
            ),
            ({"role": "user", "content": rng.choice(REPLIES).format(value=shown)}, None),
            *_calls(rng, entry, values),
        ]
    if kind == "cannot":
        question, claim = rng.choice(OUT_OF_SCOPE)
        answer = {"role": "assistant", "content": rng.choice(CANNOT)}
        return [({"role": "user", "content": question}, None), _turn("cannot_answer", answer, claim=claim)]
    question, answer = rng.choice((DIRECT + [(ABILITIES, None)]) if kind == "direct" else THANKS)
    if answer is None:
        names = "; ".join(t["description"].rstrip(".").lower() for t in tools)
        answer = f"I can help with these: {names}." if tools else "I have no tools right now, but I can chat."
    return [
        ({"role": "user", "content": question}, None),
        _turn("direct_answer", {"role": "assistant", "content": answer}),
    ]


def _conversation(rng: random.Random) -> tuple[list[dict], list[tuple[dict, dict | None]]]:
    """(tools, (message, why) pairs): a system message at times, then one to three exchanges."""
    kinds = rng.choices(EPISODES, weights=[4, 3, 2, 1.5])
    while len(kinds) < 3 and rng.random() < 0.45:
        kinds.append(rng.choice(["call", "call", "ask", "cannot", "direct", "thanks"]))
    needed = [k for k in kinds if k in ("call", "ask")]
    used = rng.sample(CATALOG, min(len(needed), MAX_TOOLS))
    serving = iter(used + [rng.choice(used) for _ in needed[len(used) :]])  # more requests than tools: reuse one
    others = [e for e in CATALOG if e not in used]
    offered = used + rng.sample(others, rng.randint(0, min(2, MAX_TOOLS - len(used))))
    rng.shuffle(offered)
    tools = [e["tool"] for e in offered]
    pairs = [({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, None)] if rng.random() < 0.4 else []
    for kind in kinds:
        pairs += _episode(rng, kind, next(serving) if kind in ("call", "ask") else None, tools)
    return tools, pairs


# --- encoding: OpenAI's or Hugging Face's ----------------------------------------------------------------------


def _encoder(rng: random.Random):
    """A function writing a message in one encoding, chosen for the whole row (call ids drawn from `rng`)."""
    openai, last_id = rng.random() < 0.5, [None]

    def encode(message: dict) -> dict:
        if "calls" in message:
            calls = []
            for call in message["calls"]:
                last_id[0] = f"call_{rng.getrandbits(40):010x}"
                arguments = json.dumps(call["arguments"]) if openai else call["arguments"]
                function = {"type": "function", "function": {"name": call["name"], "arguments": arguments}}
                calls.append({"id": last_id[0], **function} if openai else function)
            return {"role": "assistant", "content": None if openai else "", "tool_calls": calls}
        if message["role"] == "tool":
            link = {"tool_call_id": last_id[0]} if openai else {"name": message["name"]}
            return {"role": "tool", **link, "content": message["content"]}
        return dict(message)

    return encode


# --- rows -----------------------------------------------------------------------------------------------------


def _sft_row(rng: random.Random) -> dict:
    tools, pairs = _conversation(rng)
    encode = _encoder(rng)
    return {"tools": [openai_tool(t) for t in tools], "messages": [encode(m) for m, _ in pairs]}


def _other_values(rng: random.Random, entry: dict, values: dict) -> dict:
    """The same values but one, changed to another of its slot's values."""
    key = rng.choice(sorted(values))
    return {**values, key: rng.choice([v for v in entry["slots"][key] if v != values[key]])}


def _required(rng: random.Random, entry: dict) -> dict:
    return {k: rng.choice(entry["slots"][k]) for k in entry["tool"]["parameters"]["required"]}


def _rejected(rng: random.Random, why: dict, tools: list[dict]) -> dict:
    """A plausible wrong answer in place of the turn `why` describes."""
    names = {t["name"] for t in tools}
    offered = [e for e in CATALOG if e["tool"]["name"] in names]
    absent = [e for e in CATALOG if e["tool"]["name"] not in names]
    kind, entry = why["kind"], why.get("entry")
    wrong = {
        "tool_call": ["other_value", "absent_tool", "claim", "ask"] + (["other_tool"] if len(offered) > 1 else []),
        "request_for_info": ["guess", "claim"],
        "tool_answer": ["claim", "again"],
        "cannot_answer": ["claim", "absent_tool"] + (["other_tool"] if offered else []),
        "direct_answer": ["refuse"],
    }[kind]
    how = rng.choice(wrong)
    if how == "other_value":  # the right tool, a value the user didn't say
        return {"role": "assistant", "calls": [_call(entry, _other_values(rng, entry, why["values"]))]}
    if how in ("other_tool", "absent_tool"):  # another offered tool, or one the row doesn't offer
        pool = [e for e in offered if e is not entry] if how == "other_tool" else absent
        other = rng.choice(pool)
        return {"role": "assistant", "calls": [_call(other, _required(rng, other))]}
    if how == "claim":  # answering as if done, with made-up facts
        return {"role": "assistant", "content": why["claim"] if kind == "cannot_answer" else entry["direct"]}
    if how == "ask":  # asking for a detail the user gave
        return {"role": "assistant", "content": rng.choice(list(entry["need"].values()))}
    if how == "guess":  # calling at once, with a made-up value for the missing detail
        missing = why["missing"]
        guess = rng.choice([v for v in entry["slots"][missing] if v != why["values"][missing]])
        return {"role": "assistant", "calls": [_call(entry, {**why["values"], missing: guess})]}
    if how == "again":  # calling the tool again instead of answering from its result
        return {"role": "assistant", "calls": [why["call"]]}
    return {"role": "assistant", "content": rng.choice(CANNOT)}  # refuse: declining what needs no tool


def _pref_row(rng: random.Random) -> dict:
    """A conversation cut at one of its assistant turns: the prompt before it, the turn, a wrong turn."""
    tools, pairs = _conversation(rng)
    cut = rng.choice([i for i, (_, why) in enumerate(pairs) if why is not None])
    rejected = _rejected(rng, pairs[cut][1], tools)
    encode = _encoder(rng)
    return {
        "tools": [openai_tool(t) for t in tools],
        "prompt": [encode(m) for m, _ in pairs[:cut]],
        "chosen": [encode(pairs[cut][0])],
        "rejected": [encode(rejected)],
    }


def prompt_key(tools: list[dict], messages: list[dict]) -> tuple:
    """What makes two prompts the same request: their user turns and the names of the tools offered."""
    names = frozenset(t["function"]["name"] if "function" in t else t["name"] for t in tools)
    return tuple(m["content"] for m in messages if m["role"] == "user"), names


def training_keys(parts: dict[str, list[dict]]) -> set:
    """The prompt_key of every prompt a training row trains on (before each assistant turn; each pref prompt)."""
    keys = {prompt_key(row["tools"], row["prompt"]) for row in parts["train_pref"]}
    for row in parts["train_sft"]:
        messages = row["messages"]
        keys |= {prompt_key(row["tools"], messages[:i]) for i, m in enumerate(messages) if m["role"] == "assistant"}
    return keys


def _test_row(rng: random.Random, index: int, seen: set) -> dict:
    """Test row `index`: a conversation ending with an assistant turn of the category it cycles to, held out."""
    category = CATEGORIES[index % len(CATEGORIES)]
    for _ in range(10_000):
        tools, pairs = _conversation(rng)
        ends = [i for i, (_, why) in enumerate(pairs) if why is not None and why["kind"] == category]
        if not ends:
            continue
        cut = rng.choice(ends)
        encode = _encoder(rng)
        row = {"tools": [openai_tool(t) for t in tools], "messages": [encode(m) for m, _ in pairs[: cut + 1]]}
        if prompt_key(row["tools"], row["messages"][:-1]) not in seen:
            return {**row, "category": category}
    raise RuntimeError(f"no held-out {category} test row left: the training parts hold them all; shrink SIZES")


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All three parts, each from its own seeded stream (the test part skips whatever the training parts hold)."""
    sft, pref = random.Random(f"{seed}-chat-sft"), random.Random(f"{seed}-chat-pref")
    parts = {
        "train_sft": [_sft_row(sft) for _ in range(SIZES["train_sft"])],
        "train_pref": [_pref_row(pref) for _ in range(SIZES["train_pref"])],
    }
    seen, rng = training_keys(parts), random.Random(f"{seed}-chat-test")
    parts["test"] = [_test_row(rng, i, seen) for i in range(SIZES["test"])]
    return parts


def write(out_dir: Path = CHAT_DIR, seed: int = 0) -> None:
    write_parts(generate(seed), out_dir)


if __name__ == "__main__":
    main(__doc__, write, CHAT_DIR)
