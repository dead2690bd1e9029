"""Load and validate training and test rows, from local files or the hub, into plain normalised rows.

    train_sft  -> {"tools": [str], "messages": [message, ...]}
    train_pref -> {"tools": [str], "prompt": [message, ...], "chosen": message, "rejected": message}
    test       -> {"uuid", "tools": [str], "question", "answers": {category: str}, "correct_answer", ...}

Training rows come in either of two shapes, told apart row by row, and leave in one (fcft/data/messages.py):
When2Call's (`messages` [user, assistant] with a `<TOOLCALL>[...]</TOOLCALL>` answer; `messages` [user] with
`chosen_response` and `rejected_response`) and the Hugging Face / TRL conversational convention (`messages` of any
length with OpenAI-style `tool_calls` and `tool` results; `prompt` + `chosen` + `rejected`). The test part is
When2Call's multiple-choice rows.

Tools are JSON text, one string per tool: a string from the data is kept byte for byte (NVIDIA's Qwen
task pastes it into the prompt as is), a dict becomes `canonical_json(dict)`. Dicts read through Arrow
(parquet files, the hub) lose their null-valued fields: Arrow gives every tool the fields of all tools,
filled with nulls, and they are taken back out; keep tools as JSON strings for byte-exact prompts.
`answers.tool_call` stays as the data wrote it (a JSON call): it is checked here and rendered by a format later.

`load_part(..., single_turn=FORMAT)` (every format but chat_template) also checks that a training row is one
question and one answer, the most NVIDIA's and the recipe's prompt formats can render.

Every row is checked before any training: a bad row raises DataError naming the file, the line (or row
index) and the field, unless `data.on_bad_row=skip`, which skips it and counts it in the returned report.
In a .jsonl file each line is decoded on its own, so a line that isn't UTF-8 or isn't JSON (a truncated last
line among them) is such a row. A .json or .parquet file is read whole: a byte that isn't UTF-8, JSON that
doesn't parse, or a file pyarrow can't read stops the run, naming the file (and the line and column), as
does an empty file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from fcft.data import messages
from fcft.data.formats import CATEGORIES, ToolCallError, check_call
from fcft.data.messages import DataError

# part -> When2Call's (hub config, hub split); data.<part>_split names another dataset's
# `generate`: the rows eval.generate scores (fcft/eval/agent.py reads them through data's test keys)
HUB_PARTS = {
    "train_sft": ("train_sft", "train"),
    "train_pref": ("train_pref", "train"),
    "test": ("test", "mcq"),
    "generate": ("test", "llm_judge"),
}
PATH_KEYS = {"train_sft": "train_path", "train_pref": "pref_path", "test": "test_path", "generate": "test_path"}
SPLIT_KEYS = {"train_sft": "train_split", "train_pref": "pref_split", "test": "test_split", "generate": "test_split"}
SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class Loaded:
    rows: list[dict]
    source: str
    skipped: list[str] = field(default_factory=list)  # one reason per skipped row
    where: list[str] = field(default_factory=list)  # per row, where the source has it ("line 3", "row 2")

    def locate(self, err: Exception) -> DataError:
        """A RowError from preparing these rows, as a DataError naming the source and the row's line."""
        index = getattr(err, "index", None)
        place = self.where[index] if index is not None and index < len(self.where) else "a row"
        return DataError(f"{self.source} {place}: {err}")


class RowError(DataError):
    """A row that loaded but can't be rendered (e.g. by a chat template); `index` is its place in Loaded.rows."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def load_part(data, part: str, limit: Optional[int] = None, single_turn: Optional[str] = None) -> Loaded:
    """Rows of one part (`train_sft`, `train_pref`, `test`) as the data spec says, validated. `single_turn`: the
    name of a format that renders one question and one answer only; each training row must then be one."""
    path = getattr(data, PATH_KEYS[part])
    config, split = hub_split(data, part)
    raw = _read_file(Path(path)) if path else _read_hub(data.hub_id, config, split, part)
    source = path or f"{data.hub_id} ({'/'.join(x for x in (config, split) if x)})"
    normalise = NORMALISERS[part]
    loaded, seen = Loaded(rows=[], source=source), 0
    for where, row in raw:
        if limit is not None and len(loaded.rows) >= limit:
            break
        seen += 1
        try:
            normalised = normalise(row)
            if single_turn is not None and part != "test":
                _single_turn(normalised, single_turn)
            loaded.rows.append(normalised)
            loaded.where.append(where)
        except DataError as err:
            message = f"{source} {where}: {err}"
            if data.on_bad_row != "skip":
                raise DataError(message + " (data.on_bad_row=skip skips such rows)") from None
            loaded.skipped.append(message)
    if not loaded.rows:
        why = f"{len(loaded.skipped)} skipped" if seen else ("the file holds none" if path else "the split is empty")
        raise DataError(f"{source}: no usable {part} rows ({why})")
    return loaded


def _read_file(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) pairs of a local file; a row that can't be decoded or parsed comes as a `_Malformed`."""
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a data file in it")
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}")
    try:
        if not path.stat().st_size:
            raise DataError(f"{path}: the file is empty (0 bytes)")
        if path.suffix == ".json":
            return _read_json(path, path.read_bytes())
    except OSError as err:
        raise DataError(f"{path}: can't read the file ({err.strerror or err})") from None
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a file that isn't parquet
        raise DataError(
            f"{path}: not a readable parquet file ({type(err).__name__}: {err}); "
            "a parquet file is read whole, so data.on_bad_row=skip can't skip its rows"
        ) from None
    return ((f"row {i}", _without_arrow_nulls(row)) for i, row in enumerate(table.to_pylist()))


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """One row per non-blank line; a line that isn't UTF-8 or JSON is a malformed row, skippable like others."""
    number = 0
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    text = line.decode("utf-8").lstrip("\ufeff")  # a byte-order mark may open the file
                except UnicodeDecodeError as err:
                    yield f"line {number}", _Malformed(_not_utf8(line, err.start))
                    continue
                if not text.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(text)
                except json.JSONDecodeError as err:
                    cut = "" if line.endswith(b"\n") else "; the file ends in this line: is it truncated?"
                    yield f"line {number}", _Malformed(f"not valid JSON ({err.msg} at column {err.colno}){cut}")
    except OSError as err:
        raise DataError(f"{path} line {number + 1}: can't read the file ({err.strerror or err})") from None


def _read_json(path: Path, data: bytes) -> Iterator[tuple[str, Any]]:
    """The rows of a .json file holding one list; it is decoded and parsed whole, so a fault can't be skipped."""
    whole = "; a .json file is parsed whole, so data.on_bad_row=skip can't skip it (one row per line: use .jsonl)"
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as err:
        start, line = data.rfind(b"\n", 0, err.start) + 1, data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path} line {line}: {_not_utf8(data[start:], err.start - start)}{whole}") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        at_end = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")  # ran out of text
        cut = "; the file ends early: is it truncated?" if at_end else ""
        message = f"not valid JSON ({err.msg} at column {err.colno}){cut}{whole}"
        raise DataError(f"{path} line {err.lineno}: {message}") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: a .json data file must hold a list of rows, got {type(rows).__name__}")
    return ((f"row {i}", row) for i, row in enumerate(rows))


def _not_utf8(line: bytes, start: int) -> str:
    """'not valid UTF-8 (byte 0xff at column C)': C counts characters from 1, as JSON's columns do."""
    column = len(line[:start].decode("utf-8").lstrip("\ufeff")) + 1
    return f"not valid UTF-8 (byte 0x{line[start]:02x} at column {column})"


def hub_split(data, part: str) -> tuple[Optional[str], str]:
    """(config or None, split) of a part read from data.hub_id: data.<part>_split as `split` or `config/split`,
    else When2Call's."""
    named = getattr(data, SPLIT_KEYS[part], None)
    if named is None:
        return HUB_PARTS[part]
    config, _, split = named.rpartition("/")
    return config or None, split


def _read_hub(hub_id: str, config: Optional[str], split: str, part: str) -> Iterator[tuple[str, Any]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(hub_id, config, split=split)
    except Exception as err:
        raise DataError(
            f"can't load {hub_id} config '{config}' split '{split}' ({type(err).__name__}: {err}); set "
            f"data.{SPLIT_KEYS[part]} to its split (or config/split), data.{PATH_KEYS[part]} to a local file, "
            "or go online"
        ) from None
    return ((f"row {i}", _without_arrow_nulls(row)) for i, row in enumerate(dataset))


def _without_arrow_nulls(row: Any) -> Any:
    """Arrow merges the dict tools of all rows into one struct type, giving each tool every field of every
    tool (null where it had none): take null fields back out of dict tools. JSON-string tools are untouched."""
    if isinstance(row, dict) and isinstance(row.get("tools"), list):
        row = {**row, "tools": [_drop_nulls(tool) if isinstance(tool, dict) else tool for tool in row["tools"]]}
    return row


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


@dataclass
class _Malformed:
    reason: str


# --- row normalisers: one per part --------------------------------------------------------------------


def _require(row: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if isinstance(row, _Malformed):
        raise DataError(row.reason)
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    if key not in row or row[key] is None:
        raise DataError(f"missing field '{key}'")
    if not isinstance(row[key], kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"field '{key}' must be {names}, got {type(row[key]).__name__}")
    return row[key]


def _tool_call_answer(answers: dict) -> str:
    """`answers.tool_call`: one call as JSON text, kept as is (NVIDIA's Qwen choice is this string)."""
    text = answers["tool_call"]
    try:
        check_call(json.loads(text))
    except json.JSONDecodeError as err:
        raise DataError(f"field 'answers.tool_call' is not valid JSON ({err.msg} at column {err.colno})") from None
    except ToolCallError as err:
        raise DataError(f"field 'answers.tool_call': {err}") from None
    return text


def _tools(row: Any) -> list[str]:
    return messages.tools(_require(row, "tools", (list, str)))


def _sft_row(row: Any) -> dict:
    """When2Call's [user, assistant] rows and conversational rows alike: `messages` with `tools`."""
    tools = _tools(row)
    conversation = messages.conversation(_require(row, "messages", list), "messages", messages.offered(tools))
    if not any(m["role"] == "assistant" for m in conversation):
        raise DataError("field 'messages' has no assistant message to train on")
    return {"tools": tools, "messages": conversation}


def _pref_row(row: Any) -> dict:
    """TRL's conversational preference rows (`prompt`, `chosen`, `rejected`) and When2Call's (`messages`,
    `chosen_response`, `rejected_response`)."""
    tools = _tools(row)
    names = messages.offered(tools)
    trl = isinstance(row, dict) and "prompt" in row
    keys = ("prompt", "chosen", "rejected") if trl else ("messages", "chosen_response", "rejected_response")
    prompt = messages.conversation(_require(row, keys[0], list), keys[0], names)
    if prompt[-1]["role"] not in ("user", "tool"):
        raise DataError(f"field '{keys[0]}' must end with a user or tool message, not {prompt[-1]['role']}")
    chosen = _answer_message(row, keys[1], names)
    rejected = _answer_message(row, keys[2], None)  # a rejected answer may well call a tool that isn't there
    return {"tools": tools, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def _answer_message(row: Any, key: str, names: Optional[set[str]]) -> dict:
    """One assistant message: TRL's one-message list, or When2Call's message object."""
    value, where = _require(row, key, (list, dict)), key
    if isinstance(value, list):
        if len(value) != 1:
            raise DataError(f"field '{key}' must hold exactly one assistant message, got {len(value)}")
        value, where = value[0], f"{key}[0]"
    return messages.message(value, where, names, role="assistant")


def _single_turn(row: dict, fmt_name: str) -> None:
    if "messages" in row:
        messages.single_turn(row["messages"], "messages", fmt_name)
    else:
        messages.single_turn(row["prompt"], "prompt", fmt_name)


def _test_row(row: Any) -> dict:
    answers = _require(row, "answers", dict)
    for category in CATEGORIES:
        if not isinstance(answers.get(category), str):
            raise DataError(f"field 'answers.{category}' is missing or not a string")
    correct = _require(row, "correct_answer", str)
    if correct not in CATEGORIES:
        raise DataError(f"field 'correct_answer' is '{correct}'; valid: {', '.join(CATEGORIES)}")
    return {
        **row,
        "uuid": str(_require(row, "uuid", (str, int))),
        "question": _require(row, "question", str),
        "tools": _tools(row),
        "answers": {**{c: answers[c] for c in CATEGORIES}, "tool_call": _tool_call_answer(answers)},
    }


def _generation_row(row: Any) -> dict:
    """A When2Call test row (`question`: its correct answer the reference), or a conversation (its last assistant
    turn the reference); its id kept (`uuid`, else `id`)."""
    if isinstance(row, dict) and "question" in row:
        return _test_row(row)
    normalised = _sft_row(row)
    ids = {k: str(row[k]) for k in ("uuid", "id") if isinstance(row.get(k), (str, int))}
    return {**normalised, **ids, **({"category": row["category"]} if isinstance(row.get("category"), str) else {})}


NORMALISERS = {"train_sft": _sft_row, "train_pref": _pref_row, "test": _test_row, "generate": _generation_row}
