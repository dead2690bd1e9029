"""When2Call's metrics from per-row multiple-choice scores, as NVIDIA's task and `additional_metrics.py` compute them.

Inputs are per-row arrays: the gold choice index, the 4 log-likelihoods, the choices' character lengths, and
whether the row offered any tools. Choice indices follow `CATEGORIES` (direct, tool_call, request_for_info,
cannot_answer).

    predicted        argmax of the log-likelihoods (lm-eval's `acc`; ties go to the first choice, as np.argmax)
    predicted_norm   argmax of log-likelihood / character length of the choice (lm-eval's `acc_norm`)
    macro_f1         scikit-learn's f1_score(gold, predicted, average="macro"): the mean F1 over the labels
                     present in gold or predicted (a category never seen in either doesn't count)
    tool_hallucination_rate  share of rows with gold cannot_answer and no tools where tool_call is predicted
    confusion        rows = true label, columns = predicted, always 4x4 in CATEGORIES order
                     ({"true:direct": {"pred:direct": n, ...}, ...}, additional_metrics.py's JSON shape)

As in NVIDIA's task, macro_f1, the hallucination rate and the confusion matrix use the unnormalised argmax.
`bootstrap_ci` gives seeded percentile intervals over rows for acc_norm and macro_f1.

numpy only: scikit-learn is not needed at run time (tests check macro_f1 against it).

`METRICS` lists the scalar metrics of the eval block, in the order they are shown: MLflow (eval/<key>), the
run's summary table, the sweep table and the sweep report iterate it. A new metric is computed in `summary`
and listed there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from fcft.data.formats import CATEGORIES

TOOL_CALL = CATEGORIES.index("tool_call")
CANNOT_ANSWER = CATEGORIES.index("cannot_answer")
K = len(CATEGORIES)


@dataclass(frozen=True)
class EvalMetric:
    """A scalar in metrics.json's eval block: how to read, rank and print it."""

    key: str
    higher_is_better: Optional[bool]  # None: a count, not a score
    interval: Optional[str] = None  # the key of its 95% interval [low, high], if it has one
    count: bool = False  # printed as an integer

    def show(self, block: dict) -> str:
        """The value (with its interval) as tables print it; "" when absent."""
        value = block.get(self.key)
        if value is None:
            return ""
        text = str(int(value)) if self.count else f"{value:.4f}"
        interval = block.get(self.interval) if self.interval else None
        return f"{text} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else text


METRICS = (
    EvalMetric("acc_norm", True, "acc_norm_ci95"),  # the headline: what sweeps rank and Optuna maximises
    EvalMetric("macro_f1", True, "macro_f1_ci95"),
    EvalMetric("tool_hallucination_rate", False),
    EvalMetric("acc", True),
    EvalMetric("n", None, count=True),
)
HEADLINE = METRICS[0]
# The generate block's scalars (eval.generate, fcft/eval/agent.py): tool-call accuracy, then the judge's accuracy
# (read from its "judge" sub-block), shown and logged (MLflow generate/<key>) like METRICS.
GENERATE_METRICS = (
    EvalMetric("call_decision_accuracy", True, "call_decision_accuracy_ci95"),
    EvalMetric("tool_name_accuracy", True, "tool_name_accuracy_ci95"),
    EvalMetric("exact_arguments_accuracy", True, "exact_arguments_accuracy_ci95"),
    EvalMetric("argument_f1", True, "argument_f1_ci95"),
    EvalMetric("unoffered_call_rate", False, "unoffered_call_rate_ci95"),
    EvalMetric("unparseable_rate", False, "unparseable_rate_ci95"),
    EvalMetric("judge_accuracy", True, "judge_accuracy_ci95"),
    EvalMetric("n", None, count=True),
)


# The ones a sweep's report and the results table show, one column each.
GENERATE_SHOWN = tuple(
    m for m in GENERATE_METRICS if m.key in ("call_decision_accuracy", "exact_arguments_accuracy", "judge_accuracy")
)


def generate_scalars(block: dict) -> dict:
    """The generate block with its judge's scalars lifted beside the tool-call ones (GENERATE_METRICS reads it)."""
    judged = block.get("judge") if isinstance(block.get("judge"), dict) else {}
    return {**block, **{k: judged[k] for k in ("judge_accuracy", "judge_accuracy_ci95") if k in judged}}


def predictions(loglikelihoods: Sequence[Sequence[float]], choice_lengths: Sequence[Sequence[int]]):
    """(predicted, predicted_norm) index arrays, as lm-eval's multiple_choice process_results picks them."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray(choice_lengths, dtype=np.float64)
    return lls.argmax(axis=1), (lls / lengths).argmax(axis=1)


def confusion_counts(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """4x4 counts, rows = true, columns = predicted."""
    return np.bincount(gold * K + predicted, minlength=K * K).reshape(K, K)


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    return float(_macro_f1_from_counts(confusion_counts(gold, predicted)[None])[0])


def _macro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Macro F1 of each [.., 4, 4] confusion matrix, over the labels present in gold or predicted."""
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    support_plus_predicted = counts.sum(axis=-1) + counts.sum(axis=-2)  # = 2tp + fn + fp
    present = support_plus_predicted > 0
    f1 = np.divide(2 * tp, support_plus_predicted, out=np.zeros(tp.shape), where=present)
    return f1.sum(axis=-1) / present.sum(axis=-1)


def confusion(gold: np.ndarray, predicted: np.ndarray) -> dict:
    counts = confusion_counts(gold, predicted)
    return {
        f"true:{true}": {f"pred:{pred}": int(counts[i, j]) for j, pred in enumerate(CATEGORIES)}
        for i, true in enumerate(CATEGORIES)
    }


def tool_hallucination_rate(gold: np.ndarray, predicted: np.ndarray, has_tools: np.ndarray) -> Optional[float]:
    """None when no row has gold cannot_answer and no tools (NVIDIA's script says 0.0 there)."""
    eligible = (gold == CANNOT_ANSWER) & ~has_tools
    if not eligible.any():
        return None
    return float((predicted[eligible] == TOOL_CALL).mean())


def bootstrap_ci(
    gold: np.ndarray, predicted: np.ndarray, predicted_norm: np.ndarray, resamples: int, seed: int
) -> dict:
    """95% percentile intervals [low, high] for acc_norm and macro_f1, resampling rows with replacement."""
    rng = np.random.default_rng(seed)
    n = len(gold)
    rows = rng.integers(0, n, size=(resamples, n))
    acc_norm = (predicted_norm == gold)[rows].mean(axis=1)
    codes = (gold * K + predicted)[rows] + (np.arange(resamples) * K * K)[:, None]
    counts = np.bincount(codes.ravel(), minlength=resamples * K * K).reshape(resamples, K, K)
    f1 = _macro_f1_from_counts(counts)
    return {"acc_norm_ci95": _interval(acc_norm), "macro_f1_ci95": _interval(f1)}


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def summary(gold, predicted, predicted_norm, has_tools, resamples: int = 1000, seed: int = 0) -> dict:
    """The metrics block: acc, acc_norm (+ CI), macro_f1 (+ CI), tool_hallucination_rate, confusion, n."""
    gold, predicted, predicted_norm = (np.asarray(a, dtype=np.int64) for a in (gold, predicted, predicted_norm))
    has_tools = np.asarray(has_tools, dtype=bool)
    intervals = bootstrap_ci(gold, predicted, predicted_norm, resamples, seed)
    return {
        "acc": float((predicted == gold).mean()),
        "acc_norm": float((predicted_norm == gold).mean()),
        "acc_norm_ci95": intervals["acc_norm_ci95"],
        "macro_f1": macro_f1(gold, predicted),
        "macro_f1_ci95": intervals["macro_f1_ci95"],
        "tool_hallucination_rate": tool_hallucination_rate(gold, predicted, has_tools),
        "confusion": confusion(gold, predicted),
        "n": int(len(gold)),
    }
