"""Generate fcft's bundled When2Call-shaped sample data (synthetic, seeded, nothing copied).

    python -m fcft.data.make_sample            # rewrites fcft/data/sample/*.jsonl

Writes When2Call's three parts in the hub's own schemas (train_sft.jsonl, train_pref.jsonl, test.jsonl: see
fcft/data/when2call.py); the same seed always gives the same bytes, so the files in git are reproducible.

The right answer follows from the question and the tools, so the tiny model can learn it (fcft's embedded
default shows the score rising, tests/test_learning.py asserts it):
- tool_call: the question fills every required parameter of an offered tool; the call carries exactly the
  values the question names (one word or a short phrase each, no digits: digits tokenize one by one);
- request_for_info: a vaguer question about an offered tool that leaves out one required parameter, always
  the same one for that wording, and the answer asks for it;
- cannot_answer: a request no catalogued tool serves (the tools offered, if any, are unrelated).
Rows offer one or two tools, so prompts stay short. Test rows are held out: no test row has the question and
set of tools of any training row (SFT or preference); `generate` skips such candidates.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

from fcft.data import SAMPLE_DIR
from fcft.data.sample_files import main, write_parts

SIZES = {"train_sft": 480, "train_pref": 160, "test": 48}
CATEGORIES = ("tool_call", "request_for_info", "cannot_answer")
PARALLEL_SHARE = 0.1  # tool_call training rows that ask for two calls of the same tool


def _tool(name, description, required, **properties):
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "dict", "required": list(required), "properties": properties},
    }


def _param(kind, description, **extra):
    return {"type": kind, "description": description, **extra}


# Each entry: the tool, slot values for its parameters, question templates that fill every required
# parameter ("ask"), vaguer templates each paired with the required parameter it leaves out ("vague"), a
# hallucinated direct answer, and the question asking for each required parameter ("need").
CATALOG = [
    {
        "tool": _tool(
            "get_weather",
            "Gets the current weather for a city.",
            ["city"],
            city=_param("string", "The name of the city, such as 'Paris' or 'Lima'."),
            unit=_param("string", "Temperature unit.", enum=["celsius", "fahrenheit"], default="celsius"),
        ),
        "slots": {"city": ["Paris", "Lima", "Osaka", "Nairobi", "Oslo", "Denver"], "unit": ["celsius", "fahrenheit"]},
        "ask": ["What's the weather like in {city} right now?", "Is it cold in {city}? Answer in {unit}."],
        "vague": [("What's the weather like right now?", "city"), ("Is it cold outside? Answer in {unit}.", "city")],
        "direct": "It is currently 18 degrees and partly cloudy there.",
        "need": {"city": "Which city would you like the weather for?"},
    },
    {
        "tool": _tool(
            "book_flight",
            "Books a one-way flight between two airports on a day.",
            ["origin", "destination", "day"],
            origin=_param("string", "IATA code of the departure airport, e.g. 'JFK'."),
            destination=_param("string", "IATA code of the arrival airport, e.g. 'LHR'."),
            day=_param("string", "Day of departure, e.g. 'Monday'."),
        ),
        "slots": {
            "origin": ["JFK", "SFO", "CDG", "NRT"],
            "destination": ["LHR", "FRA", "SYD", "GRU"],
            "day": ["Monday", "Friday", "Sunday"],
        },
        "ask": [
            "Book me a flight from {origin} to {destination} on {day}.",
            "I need a ticket {origin} to {destination}, leaving {day}.",
        ],
        "vague": [
            ("Book me a flight to {destination} on {day}, please.", "origin"),
            ("Get me a plane ticket from {origin} to {destination}.", "day"),
        ],
        "direct": "Your flight is booked: seat 14C, confirmation code QX7P2.",
        "need": {
            "origin": "Which airport will you be departing from?",
            "day": "On which day would you like to fly?",
        },
    },
    {
        "tool": _tool(
            "get_exchange_rate",
            "Returns the exchange rate between two currencies.",
            ["from_currency", "to_currency"],
            from_currency=_param("string", "Three-letter code of the source currency."),
            to_currency=_param("string", "Three-letter code of the target currency."),
        ),
        "slots": {"from_currency": ["USD", "EUR", "JPY"], "to_currency": ["GBP", "INR", "CAD"]},
        "ask": [
            "What is the exchange rate from {from_currency} to {to_currency}?",
            "How many {to_currency} do I get for one {from_currency}?",
        ],
        "vague": [
            ("What is the exchange rate into {to_currency} today?", "from_currency"),
            ("How much is one {from_currency} worth?", "to_currency"),
        ],
        "direct": "One unit buys about 0.79 of the other today.",
        "need": {
            "from_currency": "Which currency are you converting from?",
            "to_currency": "Which currency would you like to convert into?",
        },
    },
    {
        "tool": _tool(
            "get_stock_price",
            "Returns the latest trading price of a stock.",
            ["symbol"],
            symbol=_param("string", "The ticker symbol, e.g. 'AAPL'."),
            exchange=_param("string", "The stock exchange.", default="NASDAQ"),
        ),
        "slots": {"symbol": ["AAPL", "NVDA", "AMZN", "TSLA"], "exchange": ["NASDAQ", "NYSE"]},
        "ask": ["What is {symbol} trading at?", "Give me the latest price of {symbol} on the {exchange}."],
        "vague": [
            ("How is my favourite stock doing today?", "symbol"),
            ("What's the share price on the {exchange} right now?", "symbol"),
        ],
        "direct": "It is trading at 187.32, up 1.4% today.",
        "need": {"symbol": "Which stock ticker would you like the price for?"},
    },
    {
        "tool": _tool(
            "translate_text",
            "Translates text into a target language.",
            ["text", "target_language"],
            text=_param("string", "The text to translate."),
            target_language=_param("string", "The language to translate into, e.g. 'Spanish'."),
        ),
        "slots": {
            "text": ["good morning", "thank you", "where is the station"],
            "target_language": ["Spanish", "German", "Japanese"],
        },
        "ask": ["Translate '{text}' into {target_language}.", "How do I say '{text}' in {target_language}?"],
        "vague": [
            ("Translate this into {target_language} for me.", "text"),
            ("Can you translate '{text}'?", "target_language"),
        ],
        "direct": "That would be: 'buenos dias'.",
        "need": {
            "text": "What text would you like me to translate?",
            "target_language": "Which language should I translate it into?",
        },
    },
    {
        "tool": _tool(
            "set_reminder",
            "Sets a reminder for a task, optionally on a given day.",
            ["task"],
            task=_param("string", "What to be reminded of."),
            day=_param("string", "Day of the reminder.", default="today"),
        ),
        "slots": {"task": ["buy milk", "call the dentist", "water the plants"], "day": ["Monday", "Saturday"]},
        "ask": ["Remind me to {task}.", "Set a reminder to {task} on {day}."],
        "vague": [("Set a reminder for me.", "task"), ("Remind me about something on {day}.", "task")],
        "direct": "Done, I will remind you.",
        "need": {"task": "What should I remind you about?"},
    },
    {
        "tool": _tool(
            "search_restaurants",
            "Finds restaurants in a city, optionally by cuisine.",
            ["city"],
            city=_param("string", "The city to search in."),
            cuisine=_param("string", "Type of food, e.g. 'Thai'.", default="any"),
        ),
        "slots": {"city": ["Rome", "Austin", "Seoul", "Lisbon"], "cuisine": ["Thai", "Mexican", "vegan"]},
        "ask": ["Find me a {cuisine} restaurant in {city}.", "Where can I eat in {city}?"],
        "vague": [("Find me a good {cuisine} place nearby.", "city"), ("I'm hungry, where should I eat?", "city")],
        "direct": "Try Casa Verde on Main Street, it has great reviews.",
        "need": {"city": "In which city should I look for restaurants?"},
    },
    {
        "tool": _tool(
            "send_message",
            "Sends a text message to a contact.",
            ["contact", "text"],
            contact=_param("string", "Name of the contact."),
            text=_param("string", "The message text."),
        ),
        "slots": {"contact": ["Anna", "Ben", "Carlos"], "text": ["running late", "see you soon", "happy birthday"]},
        "ask": ["Text {contact} saying '{text}'.", "Send '{text}' to {contact}."],
        "vague": [("Send a message to {contact}.", "text"), ("Text '{text}' to my friend.", "contact")],
        "direct": "I've sent the message for you.",
        "need": {"text": "What should the message say?", "contact": "Who should I send it to?"},
    },
    {
        "tool": _tool(
            "get_definition",
            "Looks up the definition of an English word.",
            ["word"],
            word=_param("string", "The word to define."),
        ),
        "slots": {"word": ["serendipity", "ephemeral", "ubiquitous", "gregarious"]},
        "ask": ["What does '{word}' mean?", "Define the word {word}."],
        "vague": [("What does this word mean?", "word"), ("Can you define a word for me?", "word")],
        "direct": "It means a happy accident, something good found by chance.",
        "need": {"word": "Which word would you like defined?"},
    },
    {
        "tool": _tool(
            "play_song",
            "Plays a song on the speaker.",
            ["track"],
            track=_param("string", "Title of the song."),
            artist=_param("string", "Name of the artist.", default="any"),
        ),
        "slots": {"track": ["Yellow", "Hurt", "Clocks"], "artist": ["Coldplay", "Adele"]},
        "ask": ["Play {track} by {artist}.", "Put on the song {track}."],
        "vague": [("Play something by {artist}.", "track"), ("Play me a song.", "track")],
        "direct": "Now playing your song.",
        "need": {"track": "Which song would you like me to play?"},
    },
]

# Requests that no catalogued tool can serve, with what a model should (and should not) say.
OUT_OF_SCOPE = [
    ("Order me a large pepperoni pizza for delivery.", "Your pizza is on its way, arriving in 30 minutes."),
    ("Book a haircut for Saturday morning.", "Your haircut is booked for Saturday at 10:00."),
    ("Turn off the lights in the living room.", "The living room lights are now off."),
    ("Call my mother.", "Calling your mother now."),
    ("Renew my library books.", "Your books have been renewed for two weeks."),
    ("What's the traffic like on the highway?", "Traffic is light, about 20 minutes to downtown."),
    ("Reserve a tennis court for tomorrow.", "Court 3 is reserved for you tomorrow at 9."),
    ("Check my bank balance.", "Your balance is 2,314.55."),
]

CANNOT = [  # short: a length-normalised score (acc_norm) then weighs the choice of answer, not its wording
    "Sorry, I can't help with that.",
    "I'm afraid I can't do that.",
    "None of my tools can do that.",
]


def _slots(template: str, entry: dict) -> list[str]:
    """The parameters a template names, in the tool's parameter order."""
    return [name for name in entry["tool"]["parameters"]["properties"] if "{" + name + "}" in template]


def _call(rng: random.Random, entry: dict, template: str) -> tuple[str, dict]:
    """A question from the template with its slots filled, and the call that answers it (exactly those slots)."""
    values = {name: rng.choice(entry["slots"][name]) for name in _slots(template, entry)}
    return template.format(**values), {"name": entry["tool"]["name"], "arguments": values}


def _example(rng: random.Random, category: str) -> dict:
    """One When2Call-style example: tools offered, question, and the four candidate answers."""
    entry = rng.choice(CATALOG)
    others = rng.sample([e for e in CATALOG if e is not entry], rng.randint(0, 1))
    held_out = None
    if category == "cannot_answer":
        question, direct = rng.choice(OUT_OF_SCOPE)
        tools = [e["tool"] for e in others]
        call = _call(rng, entry, entry["ask"][0])[1]  # what a model that hallucinates a fit would call
        target = None
        orig_question = question
    else:
        orig_question, call = _call(rng, entry, rng.choice(entry["ask"]))
        question = orig_question
        tools = [e["tool"] for e in [entry, *others]]
        rng.shuffle(tools)
        target, direct = entry["tool"], entry["direct"]
        if category == "request_for_info":
            template, held_out = rng.choice(entry["vague"])
            question = template.format(**{n: rng.choice(entry["slots"][n]) for n in _slots(template, entry)})
    asks = entry["need"]
    return {
        "category": category,
        "question": question,
        "orig_question": orig_question,
        "tools": tools,
        "target_tool": target,
        "held_out_param": held_out,
        "calls": [call],
        "entry": entry,
        "answers": {
            "direct": direct,
            "tool_call": json.dumps(call),
            "request_for_info": asks[held_out] if held_out else next(iter(asks.values())),
            "cannot_answer": rng.choice(CANNOT),
        },
    }


def _assistant_text(example: dict, category: str) -> str:
    if category == "tool_call":
        return "<TOOLCALL>" + json.dumps(example["calls"]) + "</TOOLCALL>"
    return example["answers"][category]


def _sft_row(rng: random.Random) -> dict:
    category = rng.choice(CATEGORIES)
    ex = _example(rng, category)
    if category == "tool_call" and rng.random() < PARALLEL_SHARE:  # two calls of the same tool
        question, call = _call(rng, ex["entry"], rng.choice(ex["entry"]["ask"]))
        if call != ex["calls"][0]:
            ex["calls"].append(call)
            ex["question"] += " Also: " + question
    return {
        "tools": ex["tools"],
        "messages": [
            {"role": "user", "content": ex["question"]},
            {"role": "assistant", "content": _assistant_text(ex, category)},
        ],
    }


def _pref_row(rng: random.Random) -> dict:
    category = rng.choice(CATEGORIES)
    ex = _example(rng, category)
    wrong = rng.choice([c for c in (*CATEGORIES, "direct") if c != category])
    return {
        "tools": ex["tools"],
        "messages": [{"role": "user", "content": ex["question"]}],
        "chosen_response": {"role": "assistant", "content": _assistant_text(ex, category)},
        "rejected_response": {"role": "assistant", "content": _assistant_text(ex, wrong)},
    }


def _test_row(rng: random.Random, index: int, seen: set) -> dict:
    """Test row `index`, its category cycling through CATEGORIES; drawn again until its question and tools
    are no training row's."""
    category = CATEGORIES[index % len(CATEGORIES)]
    ex = _example(rng, category)
    for _ in range(10_000):
        if row_key(ex["question"], ex["tools"]) not in seen:
            break
        ex = _example(rng, category)
    else:
        raise RuntimeError(f"no held-out {category} test row left: the training parts hold them all; shrink SIZES")
    return {
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": "fcft sample",
        "source_id": f"sample_{index}",
        "question": ex["question"],
        "correct_answer": category,
        "answers": ex["answers"],
        "target_tool": json.dumps(ex["target_tool"]) if ex["target_tool"] else None,
        "tools": [json.dumps(t) for t in ex["tools"]],
        "orig_tools": [json.dumps(t) for t in ex["tools"]],
        "orig_question": ex["orig_question"],
        "held_out_param": ex["held_out_param"],
    }


def row_key(question: str, tools: list) -> tuple[str, frozenset]:
    """What makes a row the same question: its text and the names of the tools it offers (in any order).
    Tools are dicts (training parts) or JSON strings (test part)."""
    return question, frozenset((json.loads(t) if isinstance(t, str) else t)["name"] for t in tools)


def training_keys(parts: dict[str, list[dict]]) -> set:
    """The row_key of every training row (SFT and preference)."""
    return {
        row_key(row["messages"][0]["content"], row["tools"])
        for part in ("train_sft", "train_pref")
        for row in parts[part]
    }


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All three parts, each from its own seeded stream so resizing one leaves the others unchanged
    (the test part skips, besides, whatever the training parts hold)."""
    parts = {
        "train_sft": [_sft_row(rng) for rng in [random.Random(f"{seed}-sft")] for _ in range(SIZES["train_sft"])],
        "train_pref": [_pref_row(rng) for rng in [random.Random(f"{seed}-pref")] for _ in range(SIZES["train_pref"])],
    }
    seen = training_keys(parts)
    rng = random.Random(f"{seed}-test")
    parts["test"] = [_test_row(rng, i, seen) for i in range(SIZES["test"])]
    return parts


def write(out_dir: Path = SAMPLE_DIR, seed: int = 0) -> None:
    write_parts(generate(seed), out_dir)


if __name__ == "__main__":
    main(__doc__, write, SAMPLE_DIR)
