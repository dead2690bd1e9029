"""Tool-call accuracy without a judge (fcft/eval/toolcalls.py) on hand-made cases: right call, wrong tool, wrong
argument value, extra argument, missing argument, a call to a tool the row doesn't offer, a malformed call, no call."""

from __future__ import annotations

import json

import pytest

from fcft.eval import toolcalls
from fcft.eval.toolcalls import Case, Unparseable, json_equal, score_case, summary

OFFERED = ["get_weather", "get_time"]
REF = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]


def call(name="get_weather", **arguments):
    return [{"name": name, "arguments": arguments}]


# The eight hand-made rows: the first seven have a reference call; "no call" is a text row answered with text.
CASES = {
    "right call": Case(OFFERED, REF, call(city="Paris", days=3.0)),  # 3.0 == 3 as JSON numbers
    "wrong tool": Case(OFFERED, REF, call("get_time", city="Paris", days=3)),
    "wrong value": Case(OFFERED, REF, call(city="paris", days=3)),  # strings compare exactly
    "extra argument": Case(OFFERED, REF, call(city="Paris", days=3, units="C")),
    "missing argument": Case(OFFERED, REF, call(city="Paris")),
    "unoffered tool": Case(OFFERED, REF, call("get_forecast", city="Paris", days=3)),
    "malformed call": Case(OFFERED, REF, Unparseable('<tool_call>{"name": "get_weather", </tool_call>', "bad JSON")),
    "no call": Case(OFFERED, None, None),
}


@pytest.mark.parametrize(
    "name, decision, name_ok, exact, tp, generated, reference, unoffered",
    [
        ("right call", True, True, True, 2, 2, 2, False),
        ("wrong tool", True, False, False, 0, 0, 0, False),  # no call of the reference's name: no argument pair
        ("wrong value", True, True, False, 1, 2, 2, False),
        ("extra argument", True, True, False, 2, 3, 2, False),
        ("missing argument", True, True, False, 1, 1, 2, False),
        ("unoffered tool", True, False, False, 0, 0, 0, True),
        ("malformed call", True, False, False, 0, 0, 0, None),  # an attempt: the decision was right, the call wasn't
        ("no call", True, None, None, 0, 0, 0, None),
    ],
)
def test_each_hand_made_case(name, decision, name_ok, exact, tp, generated, reference, unoffered):
    row = score_case(CASES[name])
    assert row["decision_correct"] is decision
    assert row["name_correct"] is name_ok
    assert row["arguments_exact"] is exact
    assert (row["argument_tp"], row["argument_generated"], row["argument_reference"]) == (tp, generated, reference)
    assert row["unoffered"] is unoffered
    assert row["unparseable"] is (name == "malformed call")


def test_summary_of_the_hand_made_cases():
    out = summary(list(CASES.values()), resamples=200)
    assert out["n"] == 8
    # every row decided right: seven attempted where the reference calls, the text row answered with text
    assert (out["call_decision_accuracy"], out["call_decision_accuracy_n"]) == (1.0, 8)
    assert (out["call_recall"], out["call_recall_n"]) == (1.0, 7)
    assert (out["false_call_rate"], out["false_call_rate_n"]) == (0.0, 1)
    # names right in: right call, wrong value, extra, missing = 4 of the 7 attempts (malformed counts as wrong)
    assert (out["tool_name_accuracy"], out["tool_name_accuracy_n"]) == (4 / 7, 7)
    assert (out["exact_arguments_accuracy"], out["exact_arguments_accuracy_n"]) == (1 / 7, 7)
    # name-paired arguments: tp 2+1+2+1 = 6; generated 2+2+3+1 = 8; reference 2+2+2+2 = 8
    assert (out["argument_precision"], out["argument_precision_n"]) == (6 / 8, 8)
    assert (out["argument_recall"], out["argument_recall_n"]) == (6 / 8, 8)
    assert out["argument_f1"] == pytest.approx(2 * 6 / 16)
    # six rows with parsed calls, one of them to get_forecast
    assert (out["unoffered_call_rate"], out["unoffered_call_rate_n"], out["unoffered_calls"]) == (1 / 6, 6, 1)
    assert (out["unparseable_rate"], out["unparseable"]) == (1 / 8, 1)
    for key in toolcalls.KEYS:
        low, high = out[f"{key}_ci95"]
        assert 0.0 <= low <= out[key] <= high <= 1.0, key


def test_call_decisions_both_ways():
    cases = [
        Case(OFFERED, None, call()),  # a call where text was right
        Case(OFFERED, None, Unparseable("<tool_call>oops")),  # so is a failed attempt
        Case(OFFERED, None, []),  # an empty list is no call
        Case(OFFERED, REF, None),  # text where a call was right
    ]
    out = summary(cases, resamples=50)
    assert [score_case(c)["decision_correct"] for c in cases] == [False, False, True, False]
    assert (out["call_decision_accuracy"], out["false_call_rate"], out["false_call_rate_n"]) == (0.25, 2 / 3, 3)
    assert (out["call_recall"], out["call_recall_n"]) == (0.0, 1)
    # no row with a reference call was attempted: the name and argument rates have no rows
    assert out["tool_name_accuracy"] is None and out["tool_name_accuracy_ci95"] is None
    assert out["argument_precision"] is None and out["argument_precision_n"] == 0


def test_parallel_calls_match_as_a_multiset():
    reference = [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": "z"}}]
    swapped = Case(["a", "b"], reference, list(reversed(reference)))
    assert score_case(swapped)["arguments_exact"] is True
    one_short = score_case(Case(["a", "b"], reference, reference[:1]))
    assert (one_short["name_correct"], one_short["argument_tp"], one_short["argument_reference"]) == (False, 1, 1)
    doubled = score_case(Case(["a", "b"], reference[:1], reference[:1] * 2))  # the right call, made twice
    assert (doubled["name_correct"], doubled["arguments_exact"]) == (False, False)


@pytest.mark.parametrize(
    "a, b, equal",
    [
        (1, 1.0, True),
        (True, 1, False),
        (False, 0, False),
        (True, True, True),
        ("5", 5, False),
        ("Paris", "Paris ", False),
        (None, None, True),
        (None, "null", False),
        ([1, 2], [2, 1], False),
        ([1, {"k": 2.0}], [1.0, {"k": 2}], True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ({"a": [True]}, {"a": [1]}, False),
    ],
)
def test_json_equality(a, b, equal):
    assert json_equal(a, b) is equal and json_equal(b, a) is equal


def test_when2call_rows_give_their_reference(real_test_rows):
    rows = [json.loads(line) for line in real_test_rows.read_text().splitlines()]
    by_answer = {row["correct_answer"]: row for row in rows}
    tool_row = by_answer["tool_call"]
    reference = json.loads(tool_row["answers"]["tool_call"])
    case = toolcalls.case_from_when2call(tool_row, [reference])
    assert case.reference == [reference] and reference["name"] in case.offered
    assert score_case(case)["arguments_exact"] is True
    for answer in ("request_for_info", "cannot_answer"):
        assert toolcalls.case_from_when2call(by_answer[answer], None).reference is None
    # the reference answering every row scores perfectly on the 90 real rows
    cases = [
        toolcalls.case_from_when2call(
            row, [json.loads(row["answers"]["tool_call"])] if row["correct_answer"] == "tool_call" else None
        )
        for row in rows
    ]
    out = summary(cases, resamples=100)
    assert out["n"] == 90 and out["call_decision_accuracy"] == 1.0 and out["exact_arguments_accuracy_n"] == 30
    assert out["exact_arguments_accuracy"] == 1.0 and out["unoffered_call_rate"] == 0.0


def test_bad_input_is_refused_with_the_row():
    with pytest.raises(ValueError, match=r"row 2: generated call: .*arguments.*Unparseable"):
        summary([CASES["no call"]] * 2 + [Case(OFFERED, REF, [{"name": "get_weather", "arguments": "{}"}])])
    with pytest.raises(ValueError, match="row 0: generated must be a list of calls"):
        score_case(Case(OFFERED, REF, '{"name": "get_weather"}'))
    with pytest.raises(ValueError, match="reference can't be Unparseable"):
        score_case(Case(OFFERED, Unparseable(), None))


def test_intervals_are_seeded_and_empty_input_has_no_rates():
    cases = list(CASES.values()) * 3
    assert summary(cases, seed=1) == summary(cases, seed=1)
    empty = summary([], resamples=10)
    assert empty["n"] == 0 and all(empty[key] is None for key in toolcalls.KEYS)
