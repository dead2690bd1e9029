"""Generate fcft's bundled When2Call-shaped sample data (synthetic, seeded, nothing copied).

    python -m fcft.data.make_sample            # rewrites fcft/data/sample/*.jsonl

Writes the three parts of When2Call in the hub's own schemas:
- train_sft.jsonl:  tools (list of dicts), messages [user, assistant]; tool calls as <TOOLCALL>[...]</TOOLCALL>
- train_pref.jsonl: tools, messages [user], chosen_response, rejected_response (assistant message dicts)
- test.jsonl:       uuid, source, source_id, question, correct_answer, answers{direct, tool_call,
                    request_for_info, cannot_answer}, target_tool, tools (list of JSON strings), orig_tools,
                    orig_question, held_out_param
The same seed always gives the same bytes, so the files in git are reproducible from this script.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path

from fcft.data import SAMPLE_DIR

SIZES = {"train_sft": 320, "train_pref": 160, "test": 48}
CATEGORIES = ("tool_call", "request_for_info", "cannot_answer")


def _tool(name, description, required, **properties):
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "dict", "required": list(required), "properties": properties},
    }


def _param(kind, description, **extra):
    return {"type": kind, "description": description, **extra}


# Each entry: the tool, slot values for its parameters, question templates (one per phrasing), a
# hallucinated direct answer, and a question for each required parameter when it is held out.
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
        "ask": [
            "What's the weather like in {city} right now?",
            "Is it raining in {city}? Give me the weather in {unit}.",
        ],
        "vague": ["What's the weather like right now?", "Is it going to be cold today?"],
        "direct": "It is currently 18 degrees and partly cloudy there.",
        "need": {"city": "Which city would you like the weather for?"},
    },
    {
        "tool": _tool(
            "book_flight",
            "Books a one-way flight between two airports on a date.",
            ["origin", "destination", "date"],
            origin=_param("string", "IATA code of the departure airport, e.g. 'JFK'."),
            destination=_param("string", "IATA code of the arrival airport, e.g. 'LHR'."),
            date=_param("string", "Departure date in YYYY-MM-DD format."),
        ),
        "slots": {
            "origin": ["JFK", "SFO", "CDG", "NRT"],
            "destination": ["LHR", "FRA", "SYD", "GRU"],
            "date": ["2025-03-14", "2025-07-02", "2025-11-20"],
        },
        "ask": [
            "Book me a flight from {origin} to {destination} on {date}.",
            "I need a one-way ticket {origin} to {destination}, leaving {date}.",
        ],
        "vague": ["Book me a flight to {destination}, please.", "Can you get me a plane ticket from {origin}?"],
        "direct": "Your flight is booked: seat 14C, confirmation code QX7P2.",
        "need": {
            "origin": "Which airport will you be departing from?",
            "date": "On which date would you like to fly?",
        },
    },
    {
        "tool": _tool(
            "convert_currency",
            "Converts an amount of money from one currency to another.",
            ["amount", "from_currency", "to_currency"],
            amount=_param("float", "The amount of money to convert."),
            from_currency=_param("string", "Three-letter code of the source currency."),
            to_currency=_param("string", "Three-letter code of the target currency."),
        ),
        "slots": {
            "amount": [20, 150.5, 1000, 75],
            "from_currency": ["USD", "EUR", "JPY"],
            "to_currency": ["GBP", "INR", "CAD"],
        },
        "ask": [
            "How much is {amount} {from_currency} in {to_currency}?",
            "Convert {amount} {from_currency} to {to_currency} for me.",
        ],
        "vague": ["How much is that in {to_currency}?", "Convert {amount} dollars, please."],
        "direct": "That comes to about 92.40 at today's rate.",
        "need": {
            "amount": "How much money would you like to convert?",
            "to_currency": "Which currency would you like to convert it into?",
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
        "vague": ["How is my favourite stock doing today?", "What's the share price right now?"],
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
            "text": ["good morning", "where is the station?", "thank you very much"],
            "target_language": ["Spanish", "German", "Japanese"],
        },
        "ask": ["Translate '{text}' into {target_language}.", "How do I say '{text}' in {target_language}?"],
        "vague": ["Translate this into {target_language} for me.", "Can you translate '{text}'?"],
        "direct": "That would be: 'buenos dias'.",
        "need": {
            "text": "What text would you like me to translate?",
            "target_language": "Which language should I translate it into?",
        },
    },
    {
        "tool": _tool(
            "set_alarm",
            "Sets an alarm at a time with an optional label.",
            ["time"],
            time=_param("string", "Alarm time in 24-hour HH:MM format."),
            label=_param("string", "A label for the alarm.", default="Alarm"),
        ),
        "slots": {"time": ["06:30", "07:15", "21:00"], "label": ["gym", "meds", "meeting"]},
        "ask": ["Set an alarm for {time}.", "Wake me up at {time} with the label {label}."],
        "vague": ["Set an alarm for me.", "Can you add a {label} alarm?"],
        "direct": "Done, your alarm is set.",
        "need": {"time": "What time should the alarm go off (HH:MM)?"},
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
        "vague": ["Find me a good {cuisine} place nearby.", "I'm hungry, where should I eat?"],
        "direct": "Try Casa Verde on Main Street, it has great reviews.",
        "need": {"city": "In which city should I look for restaurants?"},
    },
    {
        "tool": _tool(
            "send_email",
            "Sends an email.",
            ["to", "subject", "body"],
            to=_param("string", "Recipient email address."),
            subject=_param("string", "Subject line."),
            body=_param("string", "Body text of the email."),
        ),
        "slots": {
            "to": ["ana@example.com", "team@example.org"],
            "subject": ["Lunch", "Report"],
            "body": ["See you at noon.", "The report is attached."],
        },
        "ask": ["Email {to} with subject '{subject}' saying '{body}'.", "Send '{body}' to {to}, subject {subject}."],
        "vague": ["Send an email to {to}.", "Email the team about the {subject}."],
        "direct": "I've sent the email for you.",
        "need": {"body": "What should the email say?", "subject": "What subject line should I use?"},
    },
    {
        "tool": _tool(
            "calculate_bmi",
            "Computes body mass index from weight and height.",
            ["weight_kg", "height_m"],
            weight_kg=_param("float", "Body weight in kilograms."),
            height_m=_param("float", "Height in metres."),
        ),
        "slots": {"weight_kg": [58, 72.5, 90], "height_m": [1.62, 1.75, 1.9]},
        "ask": [
            "What's the BMI for {weight_kg} kg and {height_m} m?",
            "I weigh {weight_kg} kg and I'm {height_m} m tall. What's my BMI?",
        ],
        "vague": ["What's my BMI? I weigh {weight_kg} kg.", "Can you work out my body mass index?"],
        "direct": "Your BMI is 23.1, which is in the healthy range.",
        "need": {"height_m": "How tall are you, in metres?"},
    },
    {
        "tool": _tool(
            "play_song",
            "Plays a song on the speaker.",
            ["track"],
            track=_param("string", "Title of the song."),
            artist=_param("string", "Name of the artist.", default="any"),
        ),
        "slots": {"track": ["Yellow", "Hurt", "Clocks"], "artist": ["Coldplay", "Johnny Cash"]},
        "ask": ["Play {track} by {artist}.", "Put on the song {track}."],
        "vague": ["Play something by {artist}.", "Play me a song."],
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

CANNOT = [
    "I'm sorry, but I can't help with that: none of the available tools can do it.",
    "I apologize, but I don't have a tool that can handle that request.",
    "Sorry, that is outside what I am able to do with the tools I have.",
]


def _fill(rng: random.Random, template: str, slots: dict) -> tuple[str, dict]:
    values = {name: rng.choice(options) for name, options in slots.items()}
    return template.format(**values), values


def _example(rng: random.Random, category: str) -> dict:
    """One When2Call-style example: tools offered, question, and the four candidate answers."""
    entry = rng.choice(CATALOG)
    others = rng.sample([e for e in CATALOG if e is not entry], rng.randint(0, 3))
    if category == "cannot_answer":
        question, direct = rng.choice(OUT_OF_SCOPE)
        tools = [e["tool"] for e in [entry, *others]][: rng.randint(0, 3)]
        call_entry, call_args = entry, _fill(rng, entry["ask"][0], entry["slots"])[1]
        target, held_out = None, None
        orig_question = question
    else:
        template = rng.choice(entry["ask"])
        question, values = _fill(rng, template, entry["slots"])
        call_entry = entry
        call_args = {name: values[name] for name in entry["slots"] if "{" + name + "}" in template}
        tools = [e["tool"] for e in [entry, *others]]
        rng.shuffle(tools)
        target, held_out, orig_question, direct = entry["tool"], None, question, entry["direct"]
        if category == "request_for_info":
            held_out = rng.choice(sorted(entry["need"]))
            vague = [t for t in entry["vague"] if "{" + held_out + "}" not in t]
            question = (rng.choice(vague) if vague else entry["vague"][0]).format(**values)
    required = set(call_entry["tool"]["parameters"]["required"])
    call_args = {k: v for k, v in call_args.items() if k in required or rng.random() < 0.7}
    for name in required - set(call_args):
        call_args[name] = rng.choice(call_entry["slots"][name])
    call = {"name": call_entry["tool"]["name"], "arguments": call_args}
    asks = call_entry["need"]
    return {
        "category": category,
        "question": question,
        "orig_question": orig_question,
        "tools": tools,
        "target_tool": target,
        "held_out_param": held_out,
        "calls": [call],
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
    if category == "tool_call" and rng.random() < 0.15:  # a parallel call: same tool, second slot value
        second = _example(rng, "tool_call")
        if second["calls"][0]["name"] in {t["name"] for t in ex["tools"]}:
            ex["calls"].append(second["calls"][0])
            ex["question"] += " Also: " + second["question"]
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


def _test_row(rng: random.Random, index: int) -> dict:
    category = CATEGORIES[index % len(CATEGORIES)]
    ex = _example(rng, category)
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


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All three parts, each from its own seeded stream so resizing one leaves the others unchanged."""
    return {
        "train_sft": [_sft_row(rng) for rng in [random.Random(f"{seed}-sft")] for _ in range(SIZES["train_sft"])],
        "train_pref": [_pref_row(rng) for rng in [random.Random(f"{seed}-pref")] for _ in range(SIZES["train_pref"])],
        "test": [_test_row(rng, i) for rng in [random.Random(f"{seed}-test")] for i in range(SIZES["test"])],
    }


def write(out_dir: Path = SAMPLE_DIR, seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for part, rows in generate(seed).items():
        path = out_dir / f"{part}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tmp.replace(path)
        print(f"wrote {len(rows):4d} rows to {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(args.out, args.seed)
