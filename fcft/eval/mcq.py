"""When2Call multiple-choice evaluation: log-likelihood of each of the four answers given the prompt.

`evaluate` is the entry point: items in, (metrics, per-row samples) out, through one of two backends that
give the same log-likelihoods (to float rounding):

    fcft     `fcft.eval.scorer`: each row's prompt runs once and its four answers are scored on the
             prompt's cached keys/values
    lm_eval  lm-evaluation-harness itself (`fcft.eval.lm_eval_backend`), for cross-checking

Both follow lm-eval 0.4's multiple-choice scoring: a choice's log-likelihood is the sum of its tokens'
log-probabilities after the prompt, the prompt and choice split into tokens by `_encode_pair`'s rule
(`split_tokens`: the prompt's trailing whitespace moves into the continuation; no BOS is added), and a
prompt + choice longer than the model's maximum length + 1 loses tokens from the left. The metrics are
`fcft.mcq_metrics`'s.
"""

from __future__ import annotations

from fcft.data.formats import CATEGORIES
from fcft.data.prepare import McqItem, mcq_item
from fcft.eval import metrics as mcq_metrics
from fcft.eval.scorer import context_length, score

BACKENDS = ("fcft", "lm_eval")


def evaluate(
    model,
    tokenizer,
    items: list[McqItem],
    batch_size: int | None = None,
    backend: str = "fcft",
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """(metrics, samples) for the items; samples hold one dict per item in input order. batch_size None: rows
    per pass from the GPU's free memory (`fcft.eval.memory`); on a CPU 1, on each core side by side."""
    max_length = context_length(model, tokenizer)
    if backend == "lm_eval":
        from fcft.eval import lm_eval_backend

        loglikelihoods = lm_eval_backend.score(model, tokenizer, items, batch_size, max_length)
    elif backend == "fcft":
        loglikelihoods = score(model, tokenizer, items, batch_size, max_length)
    else:
        raise ValueError(f"unknown evaluation backend '{backend}'; valid: {', '.join(BACKENDS)}")
    return summarise(items, loglikelihoods, resamples, seed)


def evaluate_rows(model, tokenizer, rows: list[dict], fmt, eval_spec) -> tuple[dict, list[dict], list[McqItem]]:
    """(the eval block of metrics.json, the per-row samples, the items) for When2Call test rows, scored in format
    `fmt` as `eval_spec` (the run spec's eval) says. The worker writes the files; `eval.baseline` keeps only the
    block, of the starting model, as `eval_base`."""
    e, items = eval_spec, [mcq_item(row, fmt) for row in rows]
    metrics, samples = evaluate(
        model, tokenizer, items, e.batch_size, str(e.backend), e.bootstrap_resamples, e.bootstrap_seed
    )
    return {**metrics, "format": fmt.name, "backend": str(e.backend)}, samples, items


def summarise(items: list[McqItem], loglikelihoods: list[list[float]], resamples: int = 1000, seed: int = 0):
    """(metrics, samples) from per-row log-likelihoods."""
    lengths = [[len(choice) for choice in item.choices] for item in items]
    predicted, predicted_norm = mcq_metrics.predictions(loglikelihoods, lengths)
    samples = [
        {
            "uuid": item.uuid,
            "gold": CATEGORIES[item.gold],
            "predicted": CATEGORIES[pred],
            "predicted_norm": CATEGORIES[pred_norm],
            "loglikelihoods": list(lls),
        }
        for item, pred, pred_norm, lls in zip(items, predicted, predicted_norm, loglikelihoods)
    ]
    gold = [item.gold for item in items]
    has_tools = [item.has_tools for item in items]
    return mcq_metrics.summary(gold, predicted, predicted_norm, has_tools, resamples, seed), samples


def requests(items: list[McqItem]) -> list[dict]:
    """What each row asks of the model (eval/requests.jsonl): the prompt, the choices and the gold index."""
    return [{"uuid": i.uuid, "prompt": i.prompt, "choices": list(i.choices), "gold": i.gold} for i in items]
