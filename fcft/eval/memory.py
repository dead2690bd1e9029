"""How many rows the MCQ scorer runs per forward pass when eval.batch_size is null: on a GPU, as many as its free
memory holds (estimated from the model's shape and the longest rows); elsewhere `CPU_ROWS`, and on a CPU as many
such passes side by side as it has cores (torch's threads) and its free memory holds.

`rows_per_batch` is the estimate, a pure function of numbers (testable without a GPU); `auto_rows` reads the
free memory with `torch.cuda.mem_get_info` and the row lengths from the scorer's groups; `cpu_workers` reads the
host's available memory.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CPU_ROWS = 1  # on a CPU a row's prompt already fills the cores; more rows per pass spill the caches (slower)
MOST_ROWS = 256
HEADROOM = 0.8  # of the free memory; the rest absorbs the allocator's fragmentation and what the estimate misses


def rows_per_batch(
    config,
    prompt_tokens: int,
    continuation_tokens: int,
    dtype_bytes: int,
    free_bytes: int,
    eager: bool = False,
) -> int:
    """Rows per batch whose prompt pass and continuation pass fit in `headroom` of `free_bytes` (1 at least).

    Per row: the key/value cache of the prompt and the continuations (kept between the passes), plus the larger
    of the two passes' transients: one layer's activations over the prompt (MLP or attention projections; with
    eager attention also its scores, heads x prompt^2 in float32), or over the continuations the logits (model
    dtype, then one row's float32 log-softmax) and the 4-D attention mask.
    """
    text = getattr(config, "text_config", None) or config
    hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    total = prompt_tokens + continuation_tokens

    cache = 2 * layers * kv_heads * head_dim * total * dtype_bytes
    per_token = (max(3 * intermediate, (2 * heads + 2 * kv_heads) * head_dim) + 4 * hidden) * dtype_bytes
    prompt_pass = per_token * prompt_tokens + (4 * heads * prompt_tokens**2 if eager else 0)
    continuation_pass = (
        per_token * continuation_tokens
        + continuation_tokens * vocab * (dtype_bytes + 8)  # logits; one row's float32 copy and log-softmax
        + continuation_tokens * total * (4 * heads if eager else 1)  # the mask (bool) or eager's float scores
    )
    per_row = cache + max(prompt_pass, continuation_pass)
    return max(1, min(MOST_ROWS, int(free_bytes * HEADROOM) // per_row))


def cpu_workers(model, prompt_tokens: int, continuation_tokens: int) -> int:
    """Rows scored side by side on a CPU, one per core: torch's thread count, at most as many rows as the host's
    available memory holds; 1 for a model off the CPU."""
    import psutil
    import torch

    if next(model.parameters()).device.type != "cpu":
        return 1
    fits = _rows_that_fit(model, prompt_tokens, continuation_tokens, psutil.virtual_memory().available)
    return max(1, min(torch.get_num_threads(), fits))


def auto_rows(model, prompt_tokens: int, continuation_tokens: int) -> int:
    """Rows per batch for `model`: from its GPU's free memory, for rows as long as the given ones; CPU_ROWS off GPU."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_ROWS
    free, _ = torch.cuda.mem_get_info(device)
    rows = _rows_that_fit(model, prompt_tokens, continuation_tokens, free)
    log.info(
        "eval.batch_size=null: %d rows per pass (%.1f GiB free on %s; longest prompt %d tokens, choices %d)",
        rows,
        free / 2**30,
        device,
        prompt_tokens,
        continuation_tokens,
    )
    return rows


def _rows_that_fit(model, prompt_tokens: int, continuation_tokens: int, free_bytes: int) -> int:
    """`rows_per_batch` for this model: its dtype's size and whether its attention is eager."""
    dtype_bytes = model.get_input_embeddings().weight.element_size()
    eager = getattr(model.config, "_attn_implementation", None) == "eager"
    return rows_per_batch(model.config, prompt_tokens, continuation_tokens, dtype_bytes, free_bytes, eager)
