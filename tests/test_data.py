"""When2Call loading: the bundled sample and the real rows load; bad files and rows are named precisely."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from fcft.data import SAMPLE_DIR, make_sample
from fcft.data.formats import CATEGORIES
from fcft.data.when2call import DataError, load_part


def _data(**paths):
    base = {"hub_id": None, "train_path": None, "pref_path": None, "test_path": None, "on_bad_row": "error"}
    return OmegaConf.create({**base, **{k: str(v) if v is not None else None for k, v in paths.items()}})


def test_bundled_sample_is_what_the_generator_makes(tmp_path):
    make_sample.write(tmp_path)
    for part in ("train_sft", "train_pref", "test"):
        assert (tmp_path / f"{part}.jsonl").read_bytes() == (SAMPLE_DIR / f"{part}.jsonl").read_bytes(), part


def test_sample_parts_load_with_all_categories():
    sft = load_part(_data(train_path=SAMPLE_DIR / "train_sft.jsonl"), "train_sft")
    pref = load_part(_data(pref_path=SAMPLE_DIR / "train_pref.jsonl"), "train_pref")
    test = load_part(_data(test_path=SAMPLE_DIR / "test.jsonl"), "test")
    assert (len(sft.rows), len(pref.rows), len(test.rows)) == (320, 160, 48)
    assert any("<TOOLCALL>" in r["answer"] for r in sft.rows)
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
            "line 2: field 'tools[0]' must be a tool object with a 'name'",
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
            "line 1: field 'messages' needs at least 2 messages, got 1",
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
            "line 1: field 'tools[0]' must be a tool object with a 'name'",
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
    assert f"{path} row 2: field 'chosen_response' must be dict, got str" in skipped.skipped[1]


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
    with pytest.raises(DataError, match=r"bad.parquet row 0: field 'messages' needs at least 2 messages"):
        load_part(_data(train_path=tmp_path / "bad.parquet"), "train_sft")


def test_unsupported_suffix_and_empty_file_are_refused(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'; use one of .jsonl, .json, .parquet"):
        load_part(_data(test_path=tmp_path / "rows.csv"), "test")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no usable test rows"):
        load_part(_data(test_path=tmp_path / "empty.jsonl"), "test")
