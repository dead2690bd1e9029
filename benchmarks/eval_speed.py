"""When2Call MCQ evaluation speed: fcft's cached scorer against lm-evaluation-harness, same rows, same model, one run.

    python benchmarks/eval_speed.py                       # the 90 real rows, qwen2_5, each backend at its fastest
    python benchmarks/eval_speed.py --format llama3_2 --hidden 512 --layers 8 --batch-size 8
    python benchmarks/eval_speed.py --shape Qwen3-0.6B --limit 6    # a real model's shape and vocabulary, 6 rows

The model is a randomly initialised Qwen3 (default: hidden 256, 4 layers, 4 heads of 64, 2 KV heads, MLP 768;
~3.6 M parameters with fcft's tiny 1,685-token vocabulary), big enough that the forward passes, not Python,
take the time; `--shape Qwen3-0.6B` takes that model's shape and its real vocabulary size (151,936: the logits
lm-eval computes at every position cost there what they cost on the real model): slow on a CPU, so with
`--limit`. The rows are the 90 real When2Call test rows in ../shared (prompts of ~160-3,600 tokens with this
tokenizer, ~1,394 on average; choices ~60). Both backends score all rows; the script asserts that they pick the
same answer on every row (argmax and length-normalised) and give the same acc, acc_norm and macro-F1, then
prints both times and their ratio, and the arithmetic each did, counted by hooks on the model in the same runs:
tokens through the layers, rows of vocabulary logits, and the query-key pairs its attention kernel computed
(causal from scratch: about half the square; with an explicit mask: the whole rectangle), as FLOPs. At equal
speed per FLOP the time ratio is the arithmetic ratio; above it, fcft runs faster per FLOP.

Batch: by default fcft as `eval.batch_size: null` runs it (on a CPU one row per pass, a prompt and its four
choices, on each core side by side) and lm-eval one request per pass, its own default and its fastest on a
CPU (measured, 2 cores: 45 s at 1 request, 57 s at 4, 66 s at 8, 93 s at 32: longer passes spill the caches).
`--batch-size N` gives fcft N rows per pass and lm-eval the same rows (4N requests); `--lm-eval-requests N`
sets lm-eval's alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL_ROWS = ROOT.parent / "shared" / "data" / "when2call" / "test_sample.jsonl"


def build_model(tokenizer, hidden: int, layers: int, dtype: str, shape: str = "tiny"):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if shape == "tiny":
        sizes = dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            num_key_value_heads=max(1, hidden // 128),
            head_dim=64,
            intermediate_size=3 * hidden,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        )
    else:  # the tiny tokenizer's ids are below 4096 either way
        from gpu import QWEN3, SHAPES, VOCAB

        sizes = dict(SHAPES[shape], **QWEN3, vocab_size=VOCAB)
    config = Qwen3Config(
        **sizes, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.config._attn_implementation = "sdpa"
    return model


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


class Work:
    """The arithmetic of the forward passes run while counting: tokens through the layers, rows of vocabulary
    logits, and query-key pairs of attention as its kernel computes them (no mask and nothing cached: causal,
    q(q+1)/2; an explicit mask: the whole q x k rectangle), from hooks on the first layer's attention and the
    LM head (thread-safe: one tuple appended per call)."""

    def __init__(self, model):
        self.model, self.calls, self.logit_rows, self.hooks = model, [], [], []

    def __enter__(self):
        attention = self.model.model.layers[0].self_attn
        head = self.model.get_output_embeddings()
        self.hooks = [
            attention.register_forward_pre_hook(self._attention, with_kwargs=True),
            head.register_forward_pre_hook(lambda m, args: self.logit_rows.append(args[0].shape[:-1].numel())),
        ]
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()

    def _attention(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        mask, cache = kwargs.get("attention_mask"), kwargs.get("cache", kwargs.get("past_key_values"))
        batch, q = hidden.shape[:2]
        past = cache.get_seq_length(0) if cache is not None else 0
        if mask is None:
            pairs = q * (q + 1) // 2 if past == 0 else q * (past + q)
        else:
            pairs = q * mask.shape[-1]
        self.calls.append((batch * q, batch * pairs))

    def totals(self) -> tuple[int, int, int]:
        """(tokens through the layers, rows of logits, attention pairs)."""
        return sum(c[0] for c in self.calls), sum(self.logit_rows), sum(c[1] for c in self.calls)

    def flops(self) -> float:
        config = self.model.config
        tokens, logit_rows, pairs = self.totals()
        layers = sum(p.numel() for p in self.model.model.layers.parameters())
        per_pair = 4 * config.num_attention_heads * config.head_dim * config.num_hidden_layers
        return 2 * layers * tokens + 2 * config.hidden_size * config.vocab_size * logit_rows + per_pair * pairs

    def __str__(self) -> str:
        tokens, logit_rows, pairs = self.totals()
        return f"{tokens:,} tokens, {logit_rows:,} logit rows, {pairs:,} attention pairs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=REAL_ROWS, help="When2Call test rows (.jsonl)")
    parser.add_argument("--format", default="qwen2_5", help="prompt format (qwen2_5 | llama3_2 | blog)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per pass (lm-eval: 4 requests per row); default: as fcft runs",
    )
    parser.add_argument("--lm-eval-requests", type=int, default=None, help="lm-eval's requests per pass")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16")
    parser.add_argument("--shape", default="tiny", help="tiny (--hidden, --layers) | Qwen3-0.6B | Qwen3-1.7B")
    parser.add_argument("--limit", type=int, default=None, help="the first N rows only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from fcft import tiny
    from fcft.data import formats
    from fcft.data.prepare import mcq_item
    from fcft.data.when2call import load_part
    from fcft.eval.lm_eval_backend import score as lm_eval_score
    from fcft.eval.mcq import summarise
    from fcft.eval.scorer import context_length, score

    tokenizer = AutoTokenizer.from_pretrained(tiny.ensure())
    data = OmegaConf.create({"hub_id": None, "test_path": str(args.rows), "on_bad_row": "error"})
    items = [mcq_item(row, formats.get(args.format)) for row in load_part(data, "test").rows][: args.limit]
    model = build_model(tokenizer, args.hidden, args.layers, args.dtype, args.shape)
    max_length = context_length(model, tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    rows = args.batch_size  # None: fcft's eval.batch_size null (1 row on a CPU, from free memory on a GPU)
    requests = args.lm_eval_requests or (4 * args.batch_size if args.batch_size else 1)
    print(
        f"{len(items)} rows ({args.rows.name}), format {args.format}, Qwen3 {parameters / 1e6:.1f} M parameters "
        f"({args.shape}: hidden {model.config.hidden_size}, {model.config.num_hidden_layers} layers, vocabulary "
        f"{model.config.vocab_size:,}, {args.dtype}); per pass: fcft {rows or 'default'} rows, "
        f"lm-eval {requests} requests; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )

    score(model, tokenizer, items[:2], rows, max_length)  # warm-up: thread pools, kernels
    with Work(model) as our_work:
        ours, our_wall, our_cpu = timed(score, model, tokenizer, items, rows, max_length)
    with Work(model) as their_work:
        theirs, their_wall, their_cpu = timed(lm_eval_score, model, tokenizer, items, None, max_length, requests)

    (our_metrics, our_samples), (their_metrics, their_samples) = summarise(items, ours), summarise(items, theirs)
    for key in ("predicted", "predicted_norm"):
        assert [s[key] for s in our_samples] == [s[key] for s in their_samples], f"{key} differs between backends"
    for key in ("acc", "acc_norm", "macro_f1"):
        assert abs(our_metrics[key] - their_metrics[key]) <= 1e-9, key
    largest = max(abs(a - b) for row_a, row_b in zip(ours, theirs) for a, b in zip(row_a, row_b))
    print(
        f"identical predictions on all {len(items)} rows; acc {our_metrics['acc']:.4f}, acc_norm "
        f"{our_metrics['acc_norm']:.4f}, macro_f1 {our_metrics['macro_f1']:.4f} from both; largest "
        f"log-likelihood difference {largest:.2e}"
    )
    print(f"{'backend':10} {'wall s':>8} {'cpu s':>8}")
    print(f"{'fcft':10} {our_wall:8.1f} {our_cpu:8.1f}")
    print(f"{'lm_eval':10} {their_wall:8.1f} {their_cpu:8.1f}")
    print(f"lm_eval / fcft: {their_wall / our_wall:.2f}x wall, {their_cpu / our_cpu:.2f}x cpu")
    print(f"work, fcft: {our_work}; {our_work.flops() / 1e12:.3f} TFLOP")
    print(f"work, lm_eval: {their_work}; {their_work.flops() / 1e12:.3f} TFLOP")
    arithmetic = their_work.flops() / our_work.flops()
    print(
        f"lm_eval / fcft arithmetic: {arithmetic:.2f}x; speed per FLOP, fcft / lm_eval: "
        f"{their_wall / our_wall / arithmetic:.2f}"
    )


if __name__ == "__main__":
    main()
