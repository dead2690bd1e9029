"""Tool-call accuracy of generated answers against When2Call's reference, with no judge: per row, what the model
generated (calls, plain text, or a call attempt that didn't parse) beside what the reference does.

A row is a `Case`: the names of the tools the row offers, the reference (a list of calls, or None when the right
answer is text: When2Call's request_for_info and cannot_answer rows) and the generated answer (a list of calls,
None for plain text, or `Unparseable` for text that tried to be a call and didn't parse, e.g. a `<tool_call>` block
holding broken JSON). A call is {"name": str, "arguments": dict}; an empty list counts as no call. Tool names are
compared exactly: if the generation side renamed tools on the way to a server (When2Call's inference script turns
"." into "_"), it maps the names back before scoring.

"Attempted" below means the model tried to call: parsed calls or an unparseable attempt. Calls are matched as a
multiset (parallel calls have no order): each reference call pairs with the first unpaired generated call of the
same name.

    call_decision_accuracy   all rows: attempted iff the reference calls
    call_recall              rows whose reference calls: share attempted
    false_call_rate          rows whose reference is text: share attempted (a call where none was wanted)
    tool_name_accuracy       rows where the reference calls and the model attempted: the generated names equal the
                             reference's as a multiset (an unparseable attempt counts as wrong)
    exact_arguments_accuracy the same rows: names equal and every paired call's arguments JSON-equal the
                             reference's (same keys, equal values; an extra or missing argument is wrong)
    argument_precision       over the arguments of name-paired calls in those rows: generated arguments whose key is
    argument_recall          in the reference with an equal value / all generated arguments (precision), / all
    argument_f1              reference arguments (recall); micro-averaged over arguments; F1 of the two. A wrong
                             value lowers both, an extra argument precision, a missing one recall.
    unoffered_call_rate      rows with parsed calls: share calling at least one tool the row doesn't offer
    unparseable_rate         all rows: share of unparseable call attempts

Values compare as JSON values (`json_equal`): numbers by value, so 1 == 1.0 (JSON has one number type, and a server
may write 5.0 for an integer 5); booleans only equal booleans (true != 1); strings exactly (case and whitespace
count; "5" != 5); null only null; lists in order; objects by keys and values.

Each rate comes with a 95% percentile interval from the bootstrap over rows (`fcft.eval.metrics`' percentile
function; for the argument rates, the ratio of resampled sums: arguments cluster in rows) and its denominator, as
flat keys: `<key>`, `<key>_ci95`, `<key>_n` (the eval block's convention). A rate with no rows is None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from fcft.data.formats import ToolCallError, check_call
from fcft.eval.metrics import _interval


@dataclass(frozen=True)
class Unparseable:
    """A call attempt that didn't parse; `text` (the raw answer) and `error` are kept for the per-row report."""

    text: str = ""
    error: str = ""


Generated = Union[None, Sequence[dict], Unparseable]


@dataclass(frozen=True)
class Case:
    offered: Sequence[str]  # names of the tools the row offers
    reference: Optional[Sequence[dict]]  # the reference calls; None when the right answer is text
    generated: Generated  # the model's calls; None for text; Unparseable for a failed call attempt


KEYS = (
    "call_decision_accuracy",
    "call_recall",
    "false_call_rate",
    "tool_name_accuracy",
    "exact_arguments_accuracy",
    "argument_precision",
    "argument_recall",
    "argument_f1",
    "unoffered_call_rate",
    "unparseable_rate",
)


def json_equal(a, b) -> bool:
    """Equality of two parsed JSON values as the module docstring defines it."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


def case_from_when2call(row: dict, generated: Generated) -> Case:
    """A Case from a When2Call test row (tools as JSON strings or dicts; the reference call is
    `answers["tool_call"]` when `correct_answer` is tool_call, else the reference is text)."""
    tools = [json.loads(t) if isinstance(t, str) else t for t in row["tools"]]
    reference = None
    if row["correct_answer"] == "tool_call":
        call = row["answers"]["tool_call"]
        reference = [json.loads(call) if isinstance(call, str) else call]
    return Case(offered=[t["name"] for t in tools], reference=reference, generated=generated)


def score_case(case: Case, index: int = 0) -> dict:
    """Per-row outcome (what `summary` aggregates, and what a per-row report can write). Keys that don't apply to
    the row are None. `index` names the row in errors."""
    if isinstance(case.reference, Unparseable):
        raise ValueError(f"row {index}: the reference can't be Unparseable (a list of calls, or None for text)")
    reference = _calls(case.reference, index, "reference")
    unparseable = isinstance(case.generated, Unparseable)
    generated = None if unparseable else _calls(case.generated, index, "generated")
    attempted = unparseable or generated is not None
    out = dict.fromkeys(("name_correct", "arguments_exact", "unoffered"))
    out.update(
        reference_calls=reference is not None,
        attempted=attempted,
        unparseable=unparseable,
        decision_correct=attempted == (reference is not None),
        argument_tp=0,
        argument_generated=0,
        argument_reference=0,
    )
    if generated is not None:
        offered = set(case.offered)
        out["unoffered"] = any(call["name"] not in offered for call in generated)
    if reference is None or not attempted:
        return out
    if unparseable:
        out.update(name_correct=False, arguments_exact=False)
        return out
    pairs = _pair(reference, generated)
    out["name_correct"] = len(pairs) == len(reference) == len(generated)
    exact = True
    for ref, gen in pairs:
        ref_args, gen_args = ref["arguments"], gen["arguments"]
        out["argument_tp"] += sum(k in ref_args and json_equal(v, ref_args[k]) for k, v in gen_args.items())
        out["argument_generated"] += len(gen_args)
        out["argument_reference"] += len(ref_args)
        exact = exact and json_equal(ref_args, gen_args)
    out["arguments_exact"] = out["name_correct"] and exact
    return out


def summary(cases: Sequence[Case], resamples: int = 1000, seed: int = 0) -> dict:
    """The tool-call metrics of `cases`: for each of KEYS, the value, its 95% interval and its denominator, plus
    `n` (rows) and the counts `unparseable` and `unoffered_calls`."""
    rows = [score_case(case, i) for i, case in enumerate(cases)]
    boot = bootstrap_rows(len(rows), resamples, seed)

    def column(key):
        return np.array([np.nan if r[key] is None else float(r[key]) for r in rows], dtype=np.float64)

    calls, text = column("reference_calls") == 1, column("reference_calls") == 0
    both = calls & (column("attempted") == 1)
    out = {"n": len(rows)}
    add_rate(out, "call_decision_accuracy", column("decision_correct"), np.ones(len(rows), bool), boot)
    add_rate(out, "call_recall", column("attempted"), calls, boot)
    add_rate(out, "false_call_rate", column("attempted"), text, boot)
    add_rate(out, "tool_name_accuracy", column("name_correct"), both, boot)
    add_rate(out, "exact_arguments_accuracy", column("arguments_exact"), both, boot)
    tp, n_gen, n_ref = column("argument_tp"), column("argument_generated"), column("argument_reference")
    _ratio(out, "argument_precision", tp, n_gen, boot)
    _ratio(out, "argument_recall", tp, n_ref, boot)
    _ratio(out, "argument_f1", 2 * tp, n_gen + n_ref, boot)  # F1 = 2tp / (generated + reference)
    add_rate(out, "unoffered_call_rate", column("unoffered"), ~np.isnan(column("unoffered")), boot)
    add_rate(out, "unparseable_rate", column("unparseable"), np.ones(len(rows), bool), boot)
    out["unparseable"] = sum(r["unparseable"] for r in rows)
    out["unoffered_calls"] = sum(bool(r["unoffered"]) for r in rows)
    return out


def bootstrap_rows(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] row indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, max(n, 1), size=(resamples, n))


def add_rate(out: dict, key: str, hits: np.ndarray, where: np.ndarray, boot: np.ndarray) -> None:
    """Sets out[key] (the share of `hits` among rows `where`), out[key_ci95] and out[key_n]. The interval resamples
    all rows and keeps those `where`, so the denominator varies between resamples as it would between samples.
    Also used by fcft.eval.judge."""
    hits, where = np.asarray(hits, dtype=np.float64), np.asarray(where, dtype=bool)
    _ratio(out, key, np.where(where, hits, 0.0), where.astype(np.float64), boot)


def _ratio(out: dict, key: str, numerator: np.ndarray, denominator: np.ndarray, boot: np.ndarray) -> None:
    total = denominator.sum()
    out[f"{key}_n"] = int(total)
    if total == 0:
        out[key], out[f"{key}_ci95"] = None, None
        return
    out[key] = float(numerator.sum() / total)
    num, den = numerator[boot].sum(axis=1), denominator[boot].sum(axis=1)
    ratios = num[den > 0] / den[den > 0]  # a resample without any eligible row has no value: dropped
    out[f"{key}_ci95"] = _interval(ratios) if len(ratios) else None


def _calls(calls, index: int, which: str) -> Optional[list[dict]]:
    if calls is None or isinstance(calls, Unparseable):
        return None
    if isinstance(calls, (str, dict)) or not isinstance(calls, Sequence):
        raise ValueError(f"row {index}: {which} must be a list of calls, None (text) or Unparseable; got {calls!r}")
    try:
        return [check_call(call) for call in calls] or None
    except ToolCallError as err:
        raise ValueError(f"row {index}: {which} call: {err} (mark a call that didn't parse as Unparseable)") from None


def _pair(reference: list[dict], generated: list[dict]) -> list[tuple[dict, dict]]:
    """Each reference call with the first unpaired generated call of the same name."""
    free, pairs = list(generated), []
    for ref in reference:
        for i, gen in enumerate(free):
            if gen["name"] == ref["name"]:
                pairs.append((ref, free.pop(i)))
                break
    return pairs
