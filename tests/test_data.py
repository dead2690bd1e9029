"""When2Call loading: the bundled sample and the real rows load; bad files and rows are named precisely."""

from __future__ import annotations

import json

import pytest

from fcft.data import SAMPLE_DIR, make_sample
from fcft.data.formats import CATEGORIES
from fcft.data.when2call import DataError, load_part
from fcft.spec.options import DataSpec, OnBadRow


def _data(on_bad_row: str = "error", **paths) -> DataSpec:
    """The data spec of a run reading these local files."""
    return DataSpec(name="files", on_bad_row=OnBadRow(on_bad_row), **{k: str(v) for k, v in paths.items()})


def test_bundled_sample_is_what_the_generator_makes(tmp_path):
    make_sample.write(tmp_path)
    for part in ("train_sft", "train_pref", "test"):
        assert (tmp_path / f"{part}.jsonl").read_bytes() == (SAMPLE_DIR / f"{part}.jsonl").read_bytes(), part


def test_sample_parts_load_with_all_categories():
    sft = load_part(_data(train_path=SAMPLE_DIR / "train_sft.jsonl"), "train_sft")
    pref = load_part(_data(pref_path=SAMPLE_DIR / "train_pref.jsonl"), "train_pref")
    test = load_part(_data(test_path=SAMPLE_DIR / "test.jsonl"), "test")
    assert (len(sft.rows), len(pref.rows), len(test.rows)) == (480, 160, 48)
    assert any(r["messages"][-1].get("tool_calls") for r in sft.rows)  # When2Call's <TOOLCALL> answers, as calls
    assert {r["correct_answer"] for r in test.rows} == {"tool_call", "request_for_info", "cannot_answer"}
    assert all(isinstance(t, str) for part in (sft, pref, test) for r in part.rows for t in r["tools"])


def test_real_when2call_rows_load(real_test_rows):
    test = load_part(_data(test_path=real_test_rows), "test")
    assert len(test.rows) == 90 and not test.skipped
    assert all(set(r["answers"]) == set(CATEGORIES) for r in test.rows)


def test_limit_takes_the_first_rows():
    test = load_part(_data(test_path=SAMPLE_DIR / "test.jsonl"), "test", limit=5)
    first = [json.loads(line)["uuid"] for line in (SAMPLE_DIR / "test.jsonl").read_text().splitlines()[:5]]
    assert [r["uuid"] for r in test.rows] == first


GOOD_TEST_ROW = json.loads((SAMPLE_DIR / "test.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({k: v for k, v in GOOD_TEST_ROW.items() if k != "question"}), "line 2: missing field 'question'"),
        (
            json.dumps({**GOOD_TEST_ROW, "correct_answer": "maybe"}),
            "line 2: field 'correct_answer' is 'maybe'; valid: direct",
        ),
        (json.dumps({**GOOD_TEST_ROW, "tools": ["{broken"]}), "line 2: field 'tools[0]' is not valid JSON"),
        (json.dumps({**GOOD_TEST_ROW, "answers": {"direct": "x"}}), "line 2: field 'answers.tool_call' is missing"),
        (
            json.dumps({**GOOD_TEST_ROW, "answers": {**GOOD_TEST_ROW["answers"], "tool_call": "{'name': 'f'}"}}),
            "line 2: field 'answers.tool_call' is not valid JSON",
        ),
        (
            json.dumps({**GOOD_TEST_ROW, "answers": {**GOOD_TEST_ROW["answers"], "tool_call": '{"name": "f"}'}}),
            """line 2: field 'answers.tool_call': tool call "f" needs an "arguments" object""",
        ),
        (
            json.dumps({**GOOD_TEST_ROW, "tools": ['{"description": "no name"}']}),
            "line 2: field 'tools[0]' must be a tool definition with a 'name'",
        ),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
    ],
)
def test_bad_test_rows_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(GOOD_TEST_ROW) + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        load_part(_data(test_path=path), "test")
    assert str(path) in str(err.value) and message in str(err.value)
    skipped = load_part(_data(test_path=path, on_bad_row="skip"), "test")
    assert len(skipped.rows) == 1 and len(skipped.skipped) == 1 and message in skipped.skipped[0]


def _messages(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"tools": [], "messages": [{"role": "user", "content": "hi"}]},
            "line 1: field 'messages' has no assistant message to train on",
        ),
        (
            {"tools": [], "messages": _messages("hi", '<TOOLCALL>[{"name": "f", "arguments": {]</TOOLCALL>')},
            "line 1: field 'messages[1].content': <TOOLCALL> content is not valid JSON",
        ),
        (
            {"tools": [], "messages": _messages("hi", '<TOOLCALL>[{"arguments": {}}]</TOOLCALL>')},
            "line 1: field 'messages[1].content': a tool call must be a JSON object with a string \"name\"",
        ),
        (
            {"tools": [], "messages": _messages("hi", '<TOOLCALL>[{"name": "f", "arguments": {}}]')},
            "line 1: field 'messages[1].content': <TOOLCALL> tags must wrap the whole answer",
        ),
        (
            {"tools": ['{"name": "f",'], "messages": _messages("hi", "ok")},
            "line 1: field 'tools[0]' is not valid JSON",
        ),
        (
            {"tools": [7], "messages": _messages("hi", "ok")},
            "line 1: field 'tools[0]' must be a tool definition with a 'name'",
        ),
        ({"messages": _messages("hi", "ok")}, "line 1: missing field 'tools'"),
    ],
)
def test_bad_training_rows_name_the_field(tmp_path, row, message):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        load_part(_data(train_path=path), "train_sft")
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_preference_rows_name_the_response(tmp_path):
    good = json.loads((SAMPLE_DIR / "train_pref.jsonl").read_text().splitlines()[0])
    bad = {**good, "rejected_response": {"role": "assistant", "content": "<TOOLCALL>nope</TOOLCALL>"}}
    path = tmp_path / "pref.json"
    path.write_text(json.dumps([good, bad, {**good, "chosen_response": "text"}]))
    with pytest.raises(DataError) as err:
        load_part(_data(pref_path=path), "train_pref")
    assert f"{path} row 1: field 'rejected_response.content': <TOOLCALL> content is not valid JSON" in str(err.value)
    skipped = load_part(_data(pref_path=path, on_bad_row="skip"), "train_pref")
    assert len(skipped.rows) == 1 and len(skipped.skipped) == 2
    assert f"{path} row 2: field 'chosen_response' must be list or dict, got str" in skipped.skipped[1]


def test_json_and_parquet_files_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (SAMPLE_DIR / "train_pref.jsonl").read_text().splitlines()[:3]]
    (tmp_path / "pref.json").write_text(json.dumps(rows))
    assert len(load_part(_data(pref_path=tmp_path / "pref.json"), "train_pref").rows) == 3
    pq.write_table(
        pa.Table.from_pylist([{**r, "tools": [json.dumps(t) for t in r["tools"]]} for r in rows]),
        tmp_path / "pref.parquet",
    )
    assert len(load_part(_data(pref_path=tmp_path / "pref.parquet"), "train_pref").rows) == 3


def test_parquet_dict_tools_lose_arrows_null_fields(tmp_path):
    """Arrow gives each tool dict the fields of every tool; the nulls it fills in must not reach prompts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (SAMPLE_DIR / "train_sft.jsonl").read_text().splitlines()[:20]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sft.parquet")
    loaded = load_part(_data(train_path=tmp_path / "sft.parquet"), "train_sft").rows
    for row, original in zip(loaded, rows):
        assert "null" not in "".join(row["tools"])
        assert [json.loads(t) for t in row["tools"]] == original["tools"]  # same content (key order may differ)
    bad = pa.Table.from_pylist([{**rows[0], "messages": rows[0]["messages"][:1]}])
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet row 0: field 'messages' has no assistant message"):
        load_part(_data(train_path=tmp_path / "bad.parquet"), "train_sft")


def test_unsupported_suffix_and_empty_file_are_refused(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'; use one of .jsonl, .json, .parquet"):
        load_part(_data(test_path=tmp_path / "rows.csv"), "test")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match=r"blank.jsonl: no usable test rows \(the file holds none\)"):
        load_part(_data(test_path=tmp_path / "blank.jsonl"), "test")
    (tmp_path / "none.json").write_text("[]")
    with pytest.raises(DataError, match=r"none.json: no usable test rows \(the file holds none\)"):
        load_part(_data(test_path=tmp_path / "none.json"), "test")
    for name in ("empty.jsonl", "empty.json", "empty.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError) as err:
            load_part(_data(test_path=tmp_path / name, on_bad_row="skip"), "test")
        assert str(err.value) == f"{tmp_path / name}: the file is empty (0 bytes)"


# --- files that can't be decoded or parsed: named by file and line, skipped row by row where they can be ------


def _utf8_line(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode() + b"\n"


def test_a_jsonl_line_that_isnt_utf8_is_a_bad_row(tmp_path):
    path = tmp_path / "test.jsonl"
    broken = '{"question": "Grüße '.encode() + b"\xff" + 'aus Köln"}\n'.encode()  # column 21: "ü" is one character
    path.write_bytes(_utf8_line(GOOD_TEST_ROW) + broken + _utf8_line({**GOOD_TEST_ROW, "uuid": "after"}))
    with pytest.raises(DataError) as err:
        load_part(_data(test_path=path), "test")
    assert str(err.value) == (
        f"{path} line 2: not valid UTF-8 (byte 0xff at column 21) (data.on_bad_row=skip skips such rows)"
    )
    loaded = load_part(_data(test_path=path, on_bad_row="skip"), "test")
    assert [r["uuid"] for r in loaded.rows] == [GOOD_TEST_ROW["uuid"], "after"]
    assert loaded.skipped == [f"{path} line 2: not valid UTF-8 (byte 0xff at column 21)"]


def test_a_latin1_file_names_each_bad_line(tmp_path):
    """A file saved in Latin-1 instead of UTF-8: every line with an accent is named; plain ASCII lines load."""
    path = tmp_path / "test.jsonl"
    rows = [GOOD_TEST_ROW, {**GOOD_TEST_ROW, "question": "Où est la gare ?"}, {**GOOD_TEST_ROW, "question": "Ça va"}]
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode("latin-1") + b"\n" for r in rows))
    loaded = load_part(_data(test_path=path, on_bad_row="skip"), "test")
    assert len(loaded.rows) == 1 and len(loaded.skipped) == 2
    assert loaded.skipped[0].startswith(f"{path} line 2: not valid UTF-8 (byte 0xf9 at column ")
    assert loaded.skipped[1].startswith(f"{path} line 3: not valid UTF-8 (byte 0xc7 at column ")


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _utf8_line(GOOD_TEST_ROW))
    assert len(load_part(_data(test_path=path), "test").rows) == 1


def test_a_truncated_last_line_is_named_and_skippable(tmp_path):
    path = tmp_path / "test.jsonl"
    whole = _utf8_line(GOOD_TEST_ROW)
    path.write_bytes(whole * 2 + whole[: len(whole) // 2])  # a copy cut off mid-row, no final newline
    with pytest.raises(DataError) as err:
        load_part(_data(test_path=path), "test")
    message = str(err.value)
    assert message.startswith(f"{path} line 3: not valid JSON (")
    assert "the file ends in this line: is it truncated?" in message
    loaded = load_part(_data(test_path=path, on_bad_row="skip"), "test")
    assert len(loaded.rows) == 2 and len(loaded.skipped) == 1 and "line 3" in loaded.skipped[0]


def test_a_json_file_with_a_bad_byte_or_cut_short_is_named_and_not_skippable(tmp_path):
    path = tmp_path / "pref.json"
    rows = [json.loads(line) for line in (SAMPLE_DIR / "train_pref.jsonl").read_text().splitlines()[:2]]
    text = json.dumps(rows, indent=1)
    line = text[: text.index('"content"')].count("\n") + 1
    column = text.index('"content"') - text.rfind("\n", 0, text.index('"content"'))
    path.write_bytes(text.encode().replace(b'"content"', b'\xe9"content"', 1))
    for mode in ("error", "skip"):
        with pytest.raises(DataError) as err:
            load_part(_data(pref_path=path, on_bad_row=mode), "train_pref")
        assert str(err.value).startswith(f"{path} line {line}: not valid UTF-8 (byte 0xe9 at column {column}); ")
        assert "a .json file is parsed whole, so data.on_bad_row=skip can't skip it" in str(err.value)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"pref.json line \d+: not valid JSON \(.*file ends early: is it truncated"):
        load_part(_data(pref_path=path, on_bad_row="skip"), "train_pref")


@pytest.mark.parametrize("damage", ["truncated", "not parquet"])
def test_a_corrupt_parquet_file_is_named_with_what_pyarrow_said(tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD_TEST_ROW] * 3), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b'{"uuid": 1}\n')
    with pytest.raises(DataError) as err:
        load_part(_data(test_path=path, on_bad_row="skip"), "test")
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable parquet file (ArrowInvalid: ")
    assert "Parquet magic bytes not found" in message  # pyarrow's own words
    assert message.endswith("a parquet file is read whole, so data.on_bad_row=skip can't skip its rows")


def test_a_directory_is_refused_by_preflight_and_by_the_loader(tmp_path):
    from conftest import compose

    from fcft import spec as run_spec

    folder = tmp_path / "rows.jsonl"
    folder.mkdir()
    with pytest.raises(run_spec.SpecError, match=r"data.test_path: .*rows.jsonl is a directory; give a data file"):
        run_spec.validate(compose(f"data.test_path={folder}", "method=none"))
    with pytest.raises(DataError, match=r"rows.jsonl is a directory; give a data file in it"):
        load_part(_data(test_path=folder), "test")
