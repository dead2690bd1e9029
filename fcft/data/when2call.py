"""Load and validate When2Call's three parts, from local files or the hub, into plain normalised rows.

    train_sft  -> {"tools": [str], "question": str, "answer": str}
    train_pref -> {"tools": [str], "question": str, "chosen": str, "rejected": str}
    test       -> {"uuid", "tools": [str], "question", "answers": {category: str}, "correct_answer", ...}

Tools are JSON text, one string per tool: a string from the data is kept byte for byte (NVIDIA's Qwen
task pastes it into the prompt as is), a dict becomes `canonical_json(dict)`. Dicts read through Arrow
(parquet files, the hub) lose their null-valued fields: Arrow gives every tool the fields of all tools,
filled with nulls, and they are taken back out; keep tools as JSON strings for byte-exact prompts.
Answers stay as the data wrote them (`<TOOLCALL>[...]</TOOLCALL>` in training rows, a JSON call in
`answers.tool_call`); both are checked here and rendered by a format later.

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

from fcft.data.formats import CATEGORIES, ToolCallError, canonical_json, check_call, parse_toolcall

# part -> (hub config, hub split)
HUB_PARTS = {"train_sft": ("train_sft", "train"), "train_pref": ("train_pref", "train"), "test": ("test", "mcq")}
PATH_KEYS = {"train_sft": "train_path", "train_pref": "pref_path", "test": "test_path"}
SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """A data file or row that can't be used; the message names the file, the row and the field."""


@dataclass
class Loaded:
    rows: list[dict]
    source: str
    skipped: list[str] = field(default_factory=list)  # one reason per skipped row


def load_part(data, part: str, limit: Optional[int] = None) -> Loaded:
    """Rows of one part (`train_sft`, `train_pref`, `test`) as the data spec says, validated."""
    path = getattr(data, PATH_KEYS[part])
    raw = _read_file(Path(path)) if path else _read_hub(data.hub_id, part)
    source = path or f"{data.hub_id} ({'/'.join(HUB_PARTS[part])})"
    normalise = NORMALISERS[part]
    loaded, seen = Loaded(rows=[], source=source), 0
    for where, row in raw:
        if limit is not None and len(loaded.rows) >= limit:
            break
        seen += 1
        try:
            loaded.rows.append(normalise(row))
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


def _read_hub(hub_id: str, part: str) -> Iterator[tuple[str, Any]]:
    from datasets import load_dataset

    config, split = HUB_PARTS[part]
    try:
        dataset = load_dataset(hub_id, config, split=split)
    except Exception as err:
        raise DataError(
            f"can't load {hub_id} config '{config}' split '{split}' ({type(err).__name__}: {err}); "
            f"set data.{PATH_KEYS[part]} to a local file or go online"
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


def _tools(row: dict) -> list[str]:
    """Tools as JSON text: strings kept as they are, dicts serialised canonically (the hub has both)."""
    tools = []
    for i, tool in enumerate(_require(row, "tools", list)):
        parsed = tool
        if isinstance(tool, str):
            try:
                parsed = json.loads(tool)
            except json.JSONDecodeError as err:
                raise DataError(f"field 'tools[{i}]' is not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
            raise DataError(f"field 'tools[{i}]' must be a tool object with a 'name'")
        tools.append(tool if isinstance(tool, str) else canonical_json(tool))
    return tools


def _answer(text: str, key: str) -> str:
    """A training answer, its `<TOOLCALL>[...]</TOOLCALL>` (if any) checked."""
    try:
        parse_toolcall(text)
    except ToolCallError as err:
        raise DataError(f"field '{key}': {err}") from None
    return text


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


def _message(row: dict, key: str, index: Optional[int], role: str) -> str:
    value = _require(row, key, list if index is not None else dict)
    if index is not None:
        if len(value) <= index:
            raise DataError(f"field '{key}' needs at least {index + 1} messages, got {len(value)}")
        value, key = value[index], f"{key}[{index}]"
    if not isinstance(value, dict) or value.get("role") != role or not isinstance(value.get("content"), str):
        raise DataError(f"field '{key}' must be a {{'role': '{role}', 'content': str}} message")
    return value["content"]


def _sft_row(row: Any) -> dict:
    return {
        "tools": _tools(row),
        "question": _message(row, "messages", 0, "user"),
        "answer": _answer(_message(row, "messages", 1, "assistant"), "messages[1].content"),
    }


def _pref_row(row: Any) -> dict:
    return {
        "tools": _tools(row),
        "question": _message(row, "messages", 0, "user"),
        "chosen": _answer(_message(row, "chosen_response", None, "assistant"), "chosen_response.content"),
        "rejected": _answer(_message(row, "rejected_response", None, "assistant"), "rejected_response.content"),
    }


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


NORMALISERS = {"train_sft": _sft_row, "train_pref": _pref_row, "test": _test_row}
