"""When2Call multiple-choice evaluation: log-likelihood of each of the four answers given the prompt.

`score` is the one entry point: items in, per-row log-likelihoods out; `evaluate` adds the metrics
(acc = argmax log-likelihood, acc_norm = argmax of log-likelihood / the choice's character length, as
lm-eval's multiple_choice does) and the per-row samples the run directory keeps.
"""

from __future__ import annotations

import math

from fcft.data.formats import CATEGORIES
from fcft.data.prepare import McqItem, split_tokens


def evaluate(model, tokenizer, items: list[McqItem], batch_size: int = 8) -> tuple[dict, list[dict]]:
    """(metrics, samples) for the items; samples hold one dict per item in input order."""
    loglikelihoods = score(model, tokenizer, items, batch_size)
    samples = []
    for item, lls in zip(items, loglikelihoods):
        normalised = [ll / len(choice) for ll, choice in zip(lls, item.choices)]
        samples.append({
            "uuid": item.uuid,
            "gold": CATEGORIES[item.gold],
            "predicted": CATEGORIES[_argmax(lls)],
            "predicted_norm": CATEGORIES[_argmax(normalised)],
            "loglikelihoods": lls,
        })  # fmt: skip
    n = len(samples)
    metrics = {
        "acc": sum(s["predicted"] == s["gold"] for s in samples) / n,
        "acc_norm": sum(s["predicted_norm"] == s["gold"] for s in samples) / n,
        "n": n,
    }
    return metrics, samples


def score(model, tokenizer, items: list[McqItem], batch_size: int = 8) -> list[list[float]]:
    """Sum of log-probabilities of each choice's tokens after its prompt; one list of 4 per item."""
    import torch
    from tqdm.auto import tqdm

    requests = []  # (item index, choice index, context ids, continuation ids)
    for i, item in enumerate(items):
        pairs = split_tokens(tokenizer, [item.prompt] * len(item.choices), list(item.choices))
        requests += [(i, j, ctx, cont) for j, (ctx, cont) in enumerate(pairs)]
    requests.sort(key=lambda r: -(len(r[2]) + len(r[3])))  # longest first: similar lengths share a batch
    results = [[math.nan] * len(item.choices) for item in items]
    per_batch = batch_size * len(CATEGORIES)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode(), tqdm(total=len(requests), desc="Scoring choices", unit="choice") as bar:
        for start in range(0, len(requests), per_batch):
            batch = requests[start : start + per_batch]
            sequences = [ctx + cont for _, _, ctx, cont in batch]
            width = max(map(len, sequences))
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(sequences):
                input_ids[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, (i, j, ctx, cont) in enumerate(batch):
                positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=device)
                targets = torch.tensor(cont, device=device)
                results[i][j] = logprobs[row, positions, targets].sum().item()
            bar.update(len(batch))
    return results


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)
