"""fcft's multiple-choice scorer: the sum of log-probabilities of each choice's tokens after its row's prompt.

Each prompt runs once and its choices are scored on the prompt's cached keys/values, side by side in one pass
(lm-eval runs prompt + choice as four full sequences). With one row per pass (a CPU's default, on each core
side by side), rows go in token order and each reuses the keys/values of the prefix it shares with the row
before when that is at least half its prompt: When2Call's rows repeat tool lists, so neighbours share long
prefixes (on its 90 test rows with fcft's tiny tokenizer: 24% of the prompt tokens in the qwen2_5 format, 17%
under the half rule; 35% and 20% in llama3_2).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from dataclasses import dataclass

from fcft.data.formats import CATEGORIES
from fcft.data.prepare import McqItem, split_tokens
from fcft.eval import memory, side_by_side

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer name a length
_TOKENIZER_INFINITY = 10**30  # transformers' "no limit" model_max_length is ~1e30


@dataclass
class _Group:
    """One context and the continuations scored after it: normally a row's prompt and its four choices."""

    item: int
    choices: list[int]  # choice index of each continuation
    context: list[int]
    continuations: list[list[int]]


def context_length(model, tokenizer) -> int:
    """The longest sequence the model takes, resolved as lm-eval's HFLM does (config, then tokenizer)."""
    config = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(config, attr, None) is not None:
            return int(getattr(config, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < _TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


def score(
    model, tokenizer, items: list[McqItem], batch_size: int | None = None, max_length: int | None = None
) -> list[list[float]]:
    """Sum of log-probabilities of each choice's tokens after its prompt; one list of 4 per item.

    `batch_size` rows per pass (None: `memory.auto_rows`: from a GPU's free memory; on a CPU 1, on each of its
    cores side by side, `memory.cpu_workers`). Each prompt runs once (but its last token) into a key/value
    cache; then the continuations, each starting with that last prompt token, run on their row's cached
    keys/values: all of a row's continuations side by side in one sequence, in one pass, with a 4-D attention
    mask letting each see its row's real prompt tokens and its own earlier tokens only (sdpa and eager
    attention). So a row's numbers don't depend on its batch-mates, and the long prompt is computed once
    instead of four times.

    One row per pass (`_one_row_at_a_time`): rows in token order, each prompt computing only what follows the
    prefix it shares with the row before; side by side on a CPU, each core takes a run of rows that reuse each
    other's prefixes (`_families`) at a time, with its own cache (`side_by_side`). More (`_batches`): rows
    sorted by prompt length, prompts right-padded (a causal model's real tokens never see the padding after
    them); attention kernels that take no 4-D mask (flash-attention) score `batch_size` continuations at a
    time, sorted by length, on a copy of their rows' cache.
    """
    import torch
    from tqdm.auto import tqdm

    max_length = max_length or context_length(model, tokenizer)
    groups = sorted(_groups(tokenizer, items, max_length), key=lambda g: -len(g.context))
    workers = 1
    if batch_size is None and groups:  # sized for the longest rows, which come first
        longest_choices = max(sum(map(len, g.continuations)) for g in groups)
        batch_size = memory.auto_rows(model, len(groups[0].context), longest_choices)
        workers = memory.cpu_workers(model, len(groups[0].context), longest_choices)
    results = [[math.nan] * len(item.choices) for item in items]
    was_training = model.training
    model.eval()
    total = sum(len(g.continuations) for g in groups)
    try:
        with torch.inference_mode(), tqdm(total=total, desc="Scoring choices", unit="choice") as bar:
            if batch_size == 1 and _mask_dtype(model) is not None:
                families = _families(sorted(groups, key=lambda g: g.context))
                workers = min(workers, len(families))
                if workers > 1:  # the longest first, so that no core is left with a long one at the end
                    families.sort(key=lambda family: -sum(_work(g) for g in family))
                    log.info("Scoring %d rows one per pass, %d side by side on the CPU", len(groups), workers)
                scored = side_by_side.run(lambda family: _one_row_at_a_time(model, family), families, workers)
            else:
                scored = _batches(model, groups, batch_size)
            for group, values in scored:
                for k, value in zip(group.choices, values):
                    results[group.item][k] = value
                bar.update(len(values))
    finally:
        model.train(was_training)
    return results


def _one_row_at_a_time(model, groups: list[_Group]):
    """(group, its continuations' sums) for each group (given in token order), one per pass, each prompt computing
    only what follows the prefix it reuses (`_reused`) from the row before."""
    import torch

    cache, held = _new_cache(model), []  # held: the tokens whose keys/values the cache holds
    device = next(model.parameters()).device
    for group in groups:
        context = group.context[:-1]
        shared = _reused(held, context)
        _keep(cache, shared)
        if len(context) > shared:
            ids = torch.tensor([context[shared:]], device=device)
            model(input_ids=ids, use_cache=True, logits_to_keep=1, **{_cache_argument(model): cache})
        held = context
        [sums] = _packed_logprobs(model, cache, [len(context)], [group.context[-1]], [group.continuations])
        _keep(cache, len(context))  # drop the continuations' keys/values
        yield group, sums


def _reused(held: list[int], context: list[int]) -> int:
    """How many leading tokens of `context` to take from a cache holding `held`: their shared prefix when that is
    at least half the context, else none. The rest attends over the cache through an explicit mask, which costs
    more per token than a pass from scratch (sdpa's causal fast path; measured on a CPU: 1,380 tokens after 20
    cached 0.144 s, from scratch 0.107 s), so a short shared prefix costs more than it saves."""
    shared = _shared_prefix(held, context)
    return shared if shared >= len(context) / 2 else 0


def _families(groups: list[_Group]) -> list[list[_Group]]:
    """Groups in token order cut into runs where each reuses the prefix of the one before (`_reused`): scored
    apart, each run with a cache of its own, they compute what one pass over all of them computes."""
    families: list[list[_Group]] = []
    for group in groups:
        if families and _reused(families[-1][-1].context[:-1], group.context[:-1]):
            families[-1].append(group)
        else:
            families.append([group])
    return families


def _work(group: _Group) -> int:
    """A rough measure of a group's scoring work: its tokens, the prompt's attention weighing in quadratically."""
    tokens = len(group.context) + sum(map(len, group.continuations))
    return tokens + len(group.context) ** 2 // 1024


def _batches(model, groups: list[_Group], batch_size: int):
    """(group, its continuations' sums) for each group, `batch_size` groups per pass."""
    for start in range(0, len(groups), batch_size):
        batch = groups[start : start + batch_size]
        prompts = _PromptCache(model, [g.context for g in batch])
        if prompts.packable:
            yield from zip(batch, prompts.packed_logprobs([g.continuations for g in batch]))
            continue
        pending = sorted(
            ((g, k) for g, group in enumerate(batch) for k in range(len(group.continuations))),
            key=lambda gk: -len(batch[gk[0]].continuations[gk[1]]),
        )
        sums = [[math.nan] * len(group.continuations) for group in batch]
        for first in range(0, len(pending), batch_size):
            chunk = pending[first : first + batch_size]
            values = prompts.continuation_logprobs([(g, batch[g].continuations[k]) for g, k in chunk])
            for (g, k), value in zip(chunk, values):
                sums[g][k] = value
        yield from zip(batch, sums)


def _shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
        self.packable = bool(width) and _mask_dtype(model) is not None
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
        """Per prompt row, the sum of log-probabilities of each of its continuations (`_packed_logprobs`); the
        cache then holds the continuations too and is dropped."""
        lengths = [int(n) for n in self.lengths]
        sums = _packed_logprobs(self.model, self.cache, lengths, self.last, continuations, self.mask)
        self.cache = None
        return sums


def _packed_logprobs(model, cache, lengths, last, continuations, prompt_mask=None) -> list[list[float]]:
    """Per prompt row, the sum of log-probabilities of each of its continuations, all scored in one pass on the
    rows' cached prompts (`lengths` real tokens each, `prompt_mask` marking them; None: all real): a row's
    continuations lie side by side, each at the positions right after the row's prompt, the first input of
    each being the prompt's held-back `last` token. The cache grows by the continuations."""
    import torch

    if prompt_mask is None:
        prompt_mask = torch.ones((len(lengths), max(lengths)), dtype=torch.bool)
    segments = [[[last[row]] + cont[:-1] for cont in conts] for row, conts in enumerate(continuations)]
    width = max(sum(map(len, segs)) for segs in segments)
    ids = torch.zeros((len(segments), width), dtype=torch.long)
    positions = torch.zeros((len(segments), width), dtype=torch.long)
    owner = torch.full((len(segments), width), -1)  # which continuation a position holds; -1: padding
    for row, segs in enumerate(segments):
        at = 0
        for k, seg in enumerate(segs):
            ids[row, at : at + len(seg)] = torch.tensor(seg)
            positions[row, at : at + len(seg)] = lengths[row] + torch.arange(len(seg))
            owner[row, at : at + len(seg)] = k
            at += len(seg)
    steps = torch.arange(width)
    own = (owner[:, :, None] == owner[:, None, :]) & (steps[None, None, :] <= steps[None, :, None])
    own |= torch.eye(width, dtype=torch.bool)  # a padding position sees itself: no empty softmax row
    keep = torch.cat([prompt_mask[:, None, :].expand(-1, width, -1), own], dim=2)[:, None]
    mask_dtype = _mask_dtype(model)
    if mask_dtype is not torch.bool:  # eager attention adds the mask to its scores
        keep = torch.zeros(keep.shape, dtype=mask_dtype).masked_fill(~keep, torch.finfo(mask_dtype).min)
    device = next(model.parameters()).device
    logits = model(
        input_ids=ids.to(device),
        attention_mask=keep.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{_cache_argument(model): cache},
    ).logits
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


def _keep(cache, length: int) -> None:
    """Cut the cache to its first `length` positions (views: nothing is copied)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]
