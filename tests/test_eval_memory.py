"""eval.batch_size=null on a GPU: rows per pass from the free memory, estimated from the model's shape (numbers in,
no GPU needed)."""

from __future__ import annotations

from transformers import Qwen3Config

from fcft.eval.memory import HEADROOM, MOST_ROWS, rows_per_batch

GIB = 2**30
QWEN3_0_6B = Qwen3Config(
    hidden_size=1024,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    vocab_size=151936,
)


def test_rows_fill_the_free_memory_and_no_more():
    rows = rows_per_batch(QWEN3_0_6B, 3600, 240, 2, 80 * GIB)  # When2Call's longest rows, bf16, an 80 GB GPU
    cache_per_row = 2 * 28 * 8 * 128 * (3600 + 240) * 2  # keys and values of every layer, bf16
    logits_per_row = 240 * 151936 * 2
    assert rows * (cache_per_row + logits_per_row) <= HEADROOM * 80 * GIB
    assert (rows + 1) * (cache_per_row + logits_per_row) * 2 > HEADROOM * 80 * GIB  # not wastefully small
    assert rows_per_batch(QWEN3_0_6B, 3600, 240, 2, 40 * GIB) < rows
    assert rows_per_batch(QWEN3_0_6B, 1200, 240, 2, 80 * GIB) > rows  # shorter prompts, more rows
    assert rows_per_batch(QWEN3_0_6B, 3600, 240, 4, 80 * GIB) < rows  # float32
    assert rows_per_batch(QWEN3_0_6B, 3600, 240, 2, 80 * GIB, eager=True) < rows  # eager's prompt^2 scores


def test_rows_stay_between_one_and_the_cap():
    assert rows_per_batch(QWEN3_0_6B, 3600, 240, 2, 0) == 1
    tiny = Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    assert rows_per_batch(tiny, 100, 20, 4, 1000 * GIB) == MOST_ROWS
