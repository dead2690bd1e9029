"""fcft's evaluator and lm-evaluation-harness itself give the same When2Call numbers: on the 90 real rows, in
both of NVIDIA's formats, for the tiny model untrained and trained."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import compose
from omegaconf import OmegaConf

from fcft import spec as run_spec
from fcft import worker
from fcft.data import formats
from fcft.data.prepare import mcq_item
from fcft.data.when2call import load_part
from fcft.eval import lm_eval_backend
from fcft.eval.mcq import evaluate, requests


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_dir, real_test_rows):
    """Real SFT steps on the tiny model through the worker, evaluated there by lm-eval, requests written."""
    run_dir = tmp_path_factory.mktemp("trained")
    spec = run_spec.validate(
        compose(
            "method.max_steps=6",
            "method.learning_rate=1e-3",
            "data.limit=48",
            "compute=cpu",
            "eval.backend=lm_eval",
            "eval.write_requests=true",
            "eval.limit=6",
            f"data.test_path={real_test_rows}",
        )
    )
    return run_dir, worker.run(spec, run_dir)


@pytest.fixture(scope="module")
def models(tiny_dir, trained_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = trained_run
    untrained = AutoModelForCausalLM.from_pretrained(tiny_dir)
    trained = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    return untrained, trained, AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def real_rows(real_test_rows):
    data = OmegaConf.create({"hub_id": None, "test_path": str(real_test_rows), "on_bad_row": "error"})
    return load_part(data, "test").rows


@pytest.mark.parametrize("fmt", ["qwen2_5", "llama3_2"])
def test_both_backends_give_the_same_predictions_and_metrics(fmt, models, real_rows):
    untrained, trained, tokenizer = models
    items = [mcq_item(row, formats.get(fmt)) for row in real_rows]
    assert len(items) == 90
    # Every row once per format: the untrained model scores the even rows, the trained one the odd rows.
    for model, part in ((untrained, items[0::2]), (trained, items[1::2])):
        ours, our_samples = evaluate(model, tokenizer, part, batch_size=8, backend="fcft")
        theirs, their_samples = evaluate(model, tokenizer, part, batch_size=8, backend="lm_eval")
        for key in ("predicted", "predicted_norm"):
            assert [s[key] for s in our_samples] == [s[key] for s in their_samples], key
        for a, b in zip(our_samples, their_samples):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=2e-3), a["uuid"]
        for key in ("acc", "acc_norm", "macro_f1"):
            assert abs(ours[key] - theirs[key]) <= 1e-9, key
        assert ours == theirs  # hallucination rate, confusion matrix and intervals too
        # lm-eval's own acc/acc_norm were held to its samples' inside the lm_eval backend (the check that
        # test_the_backend_refuses_lm_evals_metrics_when_its_samples_disagree exercises), so they equal fcft's too.


def test_the_backend_refuses_lm_evals_metrics_when_its_samples_disagree(real_rows):
    items = [mcq_item(row, formats.QWEN2_5) for row in real_rows[:4]]
    loglikelihoods = [[0.0, -1.0, -2.0, -3.0]] * 4  # every row predicts the first category
    acc = sum(item.gold == 0 for item in items) / 4
    lm_eval_backend._check_reported({"acc": acc, "acc_norm": acc}, items, loglikelihoods)  # agrees: no error
    with pytest.raises(RuntimeError, match=r"lm-eval reports acc=.* but its samples give"):
        lm_eval_backend._check_reported({"acc": acc + 0.25, "acc_norm": acc}, items, loglikelihoods)


def test_training_changed_the_models_answers(models, real_rows):
    untrained, trained, tokenizer = models
    items = [mcq_item(row, formats.QWEN2_5) for row in real_rows[:24]]
    before = [s["loglikelihoods"] for s in evaluate(untrained, tokenizer, items)[1]]
    after = [s["loglikelihoods"] for s in evaluate(trained, tokenizer, items)[1]]
    # The answers got likelier (by nats per choice): a different model from the untrained one, not a copy.
    gains = [a - b for row_a, row_b in zip(after, before) for a, b in zip(row_a, row_b)]
    assert sum(gains) / len(gains) > 1 and sum(g > 0 for g in gains) > 0.9 * len(gains)


def test_a_run_evaluated_by_lm_eval_records_backend_and_requests(trained_run, real_rows):
    run_dir, metrics = trained_run
    assert metrics["eval"]["backend"] == "lm_eval" and metrics["eval"]["n"] == 6
    assert metrics["eval"]["format"] == "qwen2_5" and len(metrics["eval"]["macro_f1_ci95"]) == 2
    written = [json.loads(line) for line in (run_dir / "eval" / "requests.jsonl").read_text().splitlines()]
    assert written == requests([mcq_item(row, formats.QWEN2_5) for row in real_rows[:6]])
    assert set(written[0]) == {"uuid", "prompt", "choices", "gold"}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["eval"] == metrics["eval"]


def test_lm_eval_backend_without_lm_eval_says_which_extra_to_install(monkeypatch, models, real_rows):
    untrained, _, tokenizer = models
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    with pytest.raises(run_spec.SpecError, match=r"eval.backend: lm_eval needs lm-evaluation-harness.*fcft\[eval\]"):
        run_spec.validate(compose("eval.backend=lm_eval"))
    with pytest.raises(ImportError, match=r"pip install 'fcft\[eval\]'"):
        evaluate(untrained, tokenizer, [mcq_item(real_rows[0], formats.QWEN2_5)], backend="lm_eval")
