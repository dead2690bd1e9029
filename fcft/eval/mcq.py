"""When2Call multiple-choice evaluation: log-likelihood of each of the four answers given the prompt.

`evaluate` is the entry point: items in, (metrics, per-row samples) out, through one of two backends that
give the same log-likelihoods (to float rounding):

    fcft     `score` below: each row's prompt runs once and its four answers are scored on the prompt's
             cached keys/values
    lm_eval  lm-evaluation-harness itself (`fcft.lm_eval_backend`), for cross-checking

Both follow lm-eval 0.4's multiple-choice scoring: a choice's log-likelihood is the sum of its tokens'
log-probabilities after the prompt, the prompt and choice split into tokens by `_encode_pair`'s rule
(`split_tokens`: the prompt's trailing whitespace moves into the continuation; no BOS is added), and a
prompt + choice longer than the model's maximum length + 1 loses tokens from the left. The metrics are
`fcft.mcq_metrics`'s.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from dataclasses import dataclass

from fcft.data.formats import CATEGORIES
from fcft.data.prepare import McqItem, mcq_item, split_tokens
from fcft.eval import memory
from fcft.eval import metrics as mcq_metrics

log = logging.getLogger(__name__)

BACKENDS = ("fcft", "lm_eval")
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer name a length
_TOKENIZER_INFINITY = 10**30  # transformers' "no limit" model_max_length is ~1e30


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
    per pass from the GPU's free memory (`fcft.eval.memory`), 8 on a CPU."""
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


def context_length(model, tokenizer) -> int:
    """The longest sequence the model takes, resolved as lm-eval's HFLM does (config, then tokenizer)."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < _TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


# --- the fcft backend ---------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One context and the continuations scored after it: normally a row's prompt and its four choices."""

    item: int
    choices: list[int]  # choice index of each continuation
    context: list[int]
    continuations: list[list[int]]


def score(
    model, tokenizer, items: list[McqItem], batch_size: int | None = None, max_length: int | None = None
) -> list[list[float]]:
    """Sum of log-probabilities of each choice's tokens after its prompt; one list of 4 per item.

    Rows are sorted by prompt length and taken `batch_size` at a time (None: `memory.auto_rows`). The prompts
    run once, right-padded (a causal model's real tokens never see the padding after them), filling a
    key/value cache; the last prompt token is held back. Then the continuations, each starting with that last
    prompt token, run on their row's cached keys/values: all of a row's continuations side by side in one
    sequence, in one pass for the batch, with a 4-D attention mask letting each see its row's real prompt
    tokens and its own earlier tokens only (sdpa and eager attention); with other attention kernels
    (flash-attention), which take no such mask, `batch_size` continuations at a time sorted by length, on a
    copy of their rows' cache. So a row's numbers don't depend on its batch-mates, and the long prompt is
    computed once instead of four times.
    """
    import torch
    from tqdm.auto import tqdm

    max_length = max_length or context_length(model, tokenizer)
    groups = sorted(_groups(tokenizer, items, max_length), key=lambda g: -len(g.context))
    if batch_size is None and groups:  # sized for the longest rows, which come first
        longest_choices = max(sum(map(len, g.continuations)) for g in groups)
        batch_size = memory.auto_rows(model, len(groups[0].context), longest_choices)
    results = [[math.nan] * len(item.choices) for item in items]
    was_training = model.training
    model.eval()
    total = sum(len(g.continuations) for g in groups)
    try:
        with torch.inference_mode(), tqdm(total=total, desc="Scoring choices", unit="choice") as bar:
            for start in range(0, len(groups), batch_size):
                batch = groups[start : start + batch_size]
                prompts = _PromptCache(model, [g.context for g in batch])
                if prompts.packable:
                    sums = prompts.packed_logprobs([g.continuations for g in batch])
                    for group, values in zip(batch, sums):
                        for k, value in zip(group.choices, values):
                            results[group.item][k] = value
                    bar.update(sum(map(len, sums)))
                    continue
                pending = sorted(
                    ((g, k) for g, group in enumerate(batch) for k in range(len(group.continuations))),
                    key=lambda gk: -len(batch[gk[0]].continuations[gk[1]]),
                )
                for first in range(0, len(pending), batch_size):
                    chunk = pending[first : first + batch_size]
                    sums = prompts.continuation_logprobs([(g, batch[g].continuations[k]) for g, k in chunk])
                    for (g, k), value in zip(chunk, sums):
                        results[batch[g].item][batch[g].choices[k]] = value
                    bar.update(len(chunk))
    finally:
        model.train(was_training)
    return results


def _groups(tokenizer, items: list[McqItem], max_length: int) -> list[_Group]:
    """Each row's prompt + choices as lm-eval tokenizes them; a row whose prompt + some choice is longer than
    max_length + 1 tokens gets one group per choice, its prompt cut from the left as lm-eval cuts it."""
    groups, truncated = [], 0
    for index, item in enumerate(items):
        if not item.prompt.rstrip():
            raise ValueError(f"test row {item.uuid}: the prompt is empty (or only whitespace); nothing to score after")
        pairs = split_tokens(tokenizer, [item.prompt] * len(item.choices), list(item.choices))
        longest = max(len(ctx) + len(cont) for ctx, cont in pairs)
        shared = all(ctx == pairs[0][0] for ctx, _ in pairs)
        if longest <= max_length + 1 and shared:
            groups.append(_Group(index, list(range(len(pairs))), pairs[0][0], [cont for _, cont in pairs]))
            continue
        for choice, (ctx, cont) in enumerate(pairs):
            if len(cont) > max_length:
                raise ValueError(
                    f"test row {item.uuid}: choice {CATEGORIES[choice]} alone is {len(cont)} tokens, "
                    f"longer than the model's maximum length {max_length}"
                )
            keep = max_length + 1 - len(cont)
            groups.append(_Group(index, [choice], ctx[-keep:], [cont]))
        truncated += longest > max_length + 1
    if truncated:
        log.warning(
            "%d of %d test rows are longer than the model's maximum length (%d tokens): their prompts "
            "lose tokens from the left, as lm-eval does",
            truncated,
            len(items),
            max_length,
        )
    return groups


class _PromptCache:
    """A batch of prompts run once (all but their last token), and continuations scored on their cache."""

    def __init__(self, model, contexts: list[list[int]]):
        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.cache_argument = _cache_argument(model)
        self.last = [ctx[-1] for ctx in contexts]
        self.lengths = torch.tensor([len(ctx) - 1 for ctx in contexts])
        width = int(self.lengths.max())
        self.mask = torch.arange(width)[None, :] < self.lengths[:, None]
        self.cache = None
        self.mask_dtype = _mask_dtype(model)
        self.packable = bool(width) and self.mask_dtype is not None
        if width:
            ids = torch.zeros((len(contexts), width), dtype=torch.long)
            for row, ctx in enumerate(contexts):
                ids[row, : len(ctx) - 1] = torch.tensor(ctx[:-1])
            self.cache = _new_cache(model)
            # No attention mask: with right padding and causal attention, no real token sees a pad.
            model(input_ids=ids.to(self.device), use_cache=True, logits_to_keep=1, **{self.cache_argument: self.cache})

    def continuation_logprobs(self, requests: list[tuple[int, list[int]]]) -> list[float]:
        """Sum of log-probabilities of each (prompt row, continuation ids)."""
        import torch

        rows = torch.tensor([row for row, _ in requests])
        inputs = [[self.last[row]] + cont[:-1] for row, cont in requests]
        width = max(map(len, inputs))
        ids = torch.zeros((len(requests), width), dtype=torch.long)
        own = torch.zeros((len(requests), width), dtype=torch.bool)
        for r, tokens in enumerate(inputs):
            ids[r, : len(tokens)] = torch.tensor(tokens)
            own[r, : len(tokens)] = True
        mask = torch.cat([self.mask[rows], own], dim=1)
        positions = self.lengths[rows][:, None] + torch.arange(width)[None, :]
        cache = {} if self.cache is None else {self.cache_argument: _rows_of(self.cache, rows.to(self.device))}
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.long().to(self.device),
            position_ids=positions.to(self.device),
            use_cache=self.cache is not None,
            **cache,
        ).logits
        sums = []
        for r, (_, cont) in enumerate(requests):
            logprobs = torch.log_softmax(logits[r, : len(cont)].float(), dim=-1)
            targets = torch.tensor(cont, device=logprobs.device)[:, None]
            sums.append(logprobs.gather(-1, targets).sum())
        return torch.stack(sums).tolist()

    def packed_logprobs(self, continuations: list[list[list[int]]]) -> list[list[float]]:
        """Per prompt row, the sum of log-probabilities of each of its continuations, all scored in one pass:
        a row's continuations lie side by side, each at the positions right after the row's prompt."""
        import torch

        segments = [[[self.last[row]] + cont[:-1] for cont in conts] for row, conts in enumerate(continuations)]
        width = max(sum(map(len, segs)) for segs in segments)
        ids = torch.zeros((len(segments), width), dtype=torch.long)
        positions = torch.zeros((len(segments), width), dtype=torch.long)
        owner = torch.full((len(segments), width), -1)  # which continuation a position holds; -1: padding
        for row, segs in enumerate(segments):
            at = 0
            for k, seg in enumerate(segs):
                ids[row, at : at + len(seg)] = torch.tensor(seg)
                positions[row, at : at + len(seg)] = int(self.lengths[row]) + torch.arange(len(seg))
                owner[row, at : at + len(seg)] = k
                at += len(seg)
        steps = torch.arange(width)
        own = (owner[:, :, None] == owner[:, None, :]) & (steps[None, None, :] <= steps[None, :, None])
        own |= torch.eye(width, dtype=torch.bool)  # a padding position sees itself: no empty softmax row
        keep = torch.cat([self.mask[:, None, :].expand(-1, width, -1), own], dim=2)[:, None]
        if self.mask_dtype is not torch.bool:  # eager attention adds the mask to its scores
            keep = torch.zeros(keep.shape, dtype=self.mask_dtype).masked_fill(~keep, torch.finfo(self.mask_dtype).min)
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=keep.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            **{self.cache_argument: self.cache},
        ).logits
        self.cache = None  # it now holds the continuations too
        sums = []
        for row, conts in enumerate(continuations):
            used = sum(map(len, conts))
            logprobs = torch.log_softmax(logits[row, :used].float(), dim=-1)
            targets = torch.tensor([t for cont in conts for t in cont], device=logprobs.device)[:, None]
            picked = logprobs.gather(-1, targets)[:, 0]
            sums.append([part.sum() for part in picked.split([len(cont) for cont in conts])])
        return [torch.stack(row).tolist() for row in sums]


def _mask_dtype(model):
    """The dtype of a 4-D attention mask the model's attention takes (bool for sdpa, float for eager), or None."""
    import torch

    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation == "sdpa":
        return torch.bool
    if implementation == "eager":
        return model.get_input_embeddings().weight.dtype  # the scores' dtype (also in a 4-bit model)
    return None


def _new_cache(model):
    """An empty key/value cache for the model; refuses models with other than full attention."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise ValueError(
            f"{type(model).__name__} has sliding-window or other non-full attention layers, which "
            "fcft's cached scorer doesn't handle: use eval.backend=lm_eval"
        )
    return cache


def _rows_of(cache, rows):
    """A cache holding the given batch rows (repeats allowed) of `cache`, which stays as it was."""
    chosen = copy.copy(cache)
    chosen.layers = [copy.copy(layer) for layer in cache.layers]
    chosen.batch_select_indices(rows)
    return chosen


def _cache_argument(model) -> str:
    """The forward keyword that takes a cache: `cache`, or `past_key_values` in older transformers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
