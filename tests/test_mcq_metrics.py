"""When2Call's metrics: scikit-learn's macro-F1 and confusion matrix, NVIDIA's published numbers, the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from fcft.data.formats import CATEGORIES
from fcft.eval import metrics as mcq_metrics

# NVIDIA's when2call-qwen2_5 on Qwen2.5-1.5B-Instruct, n=3652 (research notes §1.5): rows = true, columns =
# predicted, in CATEGORIES order, and the metrics lm-eval + additional_metrics.py reported for it.
PUBLISHED_CONFUSION = [[0, 0, 0, 0], [16, 1228, 42, 9], [18, 704, 330, 10], [131, 556, 442, 166]]
PUBLISHED = {"acc": 0.4720700985761227, "macro_f1": 0.3063392216685031}


def _rows_from_confusion(counts):
    gold = np.repeat(np.arange(4), [sum(row) for row in counts])
    predicted = np.concatenate([np.repeat(np.arange(4), row) for row in counts])
    return gold, predicted


def test_published_when2call_numbers_come_out_exactly():
    gold, predicted = _rows_from_confusion(PUBLISHED_CONFUSION)
    metrics = mcq_metrics.summary(gold, predicted, predicted, np.ones(len(gold), bool), resamples=10)
    assert metrics["n"] == 3652
    assert metrics["acc"] == pytest.approx(PUBLISHED["acc"], abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(PUBLISHED["macro_f1"], abs=1e-12)
    assert [list(row.values()) for row in metrics["confusion"].values()] == PUBLISHED_CONFUSION
    assert list(metrics["confusion"]) == [f"true:{c}" for c in CATEGORIES]
    assert list(metrics["confusion"]["true:direct"]) == [f"pred:{c}" for c in CATEGORIES]


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_and_confusion_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    gold = rng.choice([1, 2, 3], size=n)  # When2Call's gold is never `direct`
    allowed = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)  # some labels never predicted
    predicted = rng.choice(allowed, size=n)
    assert mcq_metrics.macro_f1(gold, predicted) == pytest.approx(
        f1_score(gold, predicted, average="macro"), abs=1e-12
    )
    expected = confusion_matrix(gold, predicted, labels=range(4))
    assert (mcq_metrics.confusion_counts(gold, predicted) == expected).all()
    assert np.array([list(r.values()) for r in mcq_metrics.confusion(gold, predicted).values()]).shape == (4, 4)


def test_predictions_follow_lm_eval_argmax_and_character_length():
    lls = [[-10.0, -10.0, -12.0, -20.0], [-5.0, -20.0, -40.0, -6.0]]
    lengths = [[10, 10, 40, 100], [1, 40, 100, 20]]
    predicted, predicted_norm = mcq_metrics.predictions(lls, lengths)
    assert predicted.tolist() == [0, 0]  # a tie goes to the first choice, as np.argmax
    assert predicted_norm.tolist() == [3, 3]  # -0.2 and -0.3 per character win


def test_tool_hallucination_rate_counts_tool_calls_without_tools():
    cannot, tool, info = (CATEGORIES.index(c) for c in ("cannot_answer", "tool_call", "request_for_info"))
    gold = np.array([cannot, cannot, cannot, cannot, tool])
    predicted = np.array([tool, info, tool, tool, tool])
    has_tools = np.array([False, False, True, False, False])
    # Eligible: rows 0, 1, 3 (cannot_answer, no tools); tool_call predicted in rows 0 and 3.
    assert mcq_metrics.tool_hallucination_rate(gold, predicted, has_tools) == pytest.approx(2 / 3)
    assert mcq_metrics.tool_hallucination_rate(gold, predicted, np.ones(5, bool)) is None


def test_bootstrap_equals_a_plain_resampling_loop():
    rng = np.random.default_rng(7)
    gold = rng.choice([1, 2, 3], size=40)
    predicted = np.where(rng.random(40) < 0.6, gold, rng.choice(4, size=40))
    predicted_norm = np.where(rng.random(40) < 0.5, gold, rng.choice(4, size=40))
    intervals = mcq_metrics.bootstrap_ci(gold, predicted, predicted_norm, resamples=200, seed=3)

    draws = np.random.default_rng(3).integers(0, 40, size=(200, 40))
    acc_norm = [np.mean(predicted_norm[d] == gold[d]) for d in draws]
    f1 = [f1_score(gold[d], predicted[d], average="macro") for d in draws]
    assert intervals["acc_norm_ci95"] == pytest.approx(list(np.percentile(acc_norm, [2.5, 97.5])), abs=1e-12)
    assert intervals["macro_f1_ci95"] == pytest.approx(list(np.percentile(f1, [2.5, 97.5])), abs=1e-12)

    low, high = intervals["acc_norm_ci95"]
    assert low <= np.mean(predicted_norm == gold) <= high and low < high
    assert mcq_metrics.bootstrap_ci(gold, predicted, predicted_norm, 200, 3) == intervals  # seeded
    assert mcq_metrics.bootstrap_ci(gold, predicted, predicted_norm, 200, 4) != intervals
