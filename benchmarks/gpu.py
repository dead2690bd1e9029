"""GPU benchmark: fcft's training and evaluation on one CUDA GPU, no hub access, in under 8 minutes on an H100/H200.

    python benchmarks/gpu.py                    # writes benchmarks/results/gpu-<card>.md and .json
    python benchmarks/gpu.py --cpu-smoke        # every code path on tiny shapes on CPU (< 1 min): no GPU numbers

Models: randomly initialised Qwen3 in Qwen3-0.6B's and Qwen3-1.7B's shapes (28 layers, hidden 1024 / 2048, 16 heads
of 128, 8 KV heads, MLP 3072 / 6144, tied embeddings) with the real vocabulary size (151,936), bfloat16. Rows: random
token ids (seeded), 256-1,536 tokens per SFT row (the last 64 are the answer), DPO pairs of a 256-1,024-token prompt
and two 32-256-token answers; MCQ: the bundled sample's When2Call test rows rendered with fcft's tiny tokenizer.

Measured, each through fcft's own trainers (fcft.train.methods.sft / preference) with batch 8:

- SFT tokens/s and MFU, sdpa vs flash_attention_2, with method.batching padded, grouped and padding_free
  (flash-attention only); flash-attention variants are skipped, with a note, where flash-attn is not installed.
- DPO step time (method.batching=grouped, sdpa; reference = a frozen copy, as fcft's full tuning).
- MCQ rows/s: fcft's cached scorer against lm-evaluation-harness's HFLM given the same in-memory model.
- Peak GPU memory of each (torch.cuda.max_memory_allocated).

MFU = useful training FLOPs per second / the card's dense bf16 peak. Useful FLOPs per step, over the real (non-pad)
tokens only: 6 * N * T + 6 * L * H * d * sum(s_i^2), with N the parameters (tied embeddings counted once, as the LM
head's matmul), T the real tokens, L layers, H query heads of size d, s_i each row's length (causal attention:
QK^T and AV forward 2 * s^2 * H * d per layer, x3 for forward + backward). Padding and recomputation count as
waste, so padded batches show a lower MFU for the same kernels.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VOCAB = 151_936
SHAPES = {
    "Qwen3-0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16),
    "Qwen3-1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
}
QWEN3 = dict(num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, max_position_embeddings=32768)
SMOKE = {"smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)}
SMOKE_QWEN3 = dict(QWEN3, num_key_value_heads=2, head_dim=16)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}
BATCH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU: check the code paths")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (GPU 10, smoke 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False here): run it on a GPU "
            "machine, or with --cpu-smoke to check its code paths on tiny shapes on CPU"
        )
    bench = Bench(smoke=args.cpu_smoke, steps=args.steps or (1 if args.cpu_smoke else 10))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fcft-gpu-bench-") as tmp:
        bench.tmp = Path(tmp)
        for name, shape in (SMOKE if args.cpu_smoke else SHAPES).items():
            bench.model_name, bench.shape = name, dict(shape, **(SMOKE_QWEN3 if args.cpu_smoke else QWEN3))
            bench.sft()
            bench.dpo()
            bench.mcq()
    bench.write(args.out, time.perf_counter() - started)


class Bench:
    def __init__(self, smoke: bool, steps: int):
        import torch
        from transformers import AutoTokenizer

        from fcft import tiny

        self.smoke, self.steps, self.results, self.notes = smoke, steps, [], []
        self.device = "cpu" if smoke else "cuda"
        self.dtype = torch.float32 if smoke else torch.bfloat16
        self.vocab = 4096 if smoke else VOCAB  # the tiny tokenizer's ids are below 4096 either way
        self.card = "cpu-smoke" if smoke else torch.cuda.get_device_name(0)
        self.peak = None if smoke else next((v for k, v in PEAK_BF16.items() if k in self.card), None)
        self.tokenizer = AutoTokenizer.from_pretrained(tiny.ensure())
        self.lengths = (16, 64) if smoke else (256, 1536)

    # --- models, rows, specs -----------------------------------------------------------------------------------

    def model(self, attention: str):
        import torch
        from transformers import Qwen3Config, Qwen3ForCausalLM

        config = Qwen3Config(vocab_size=self.vocab, attn_implementation=attention, **self.shape)
        config.pad_token_id, config.eos_token_id = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        torch.manual_seed(0)
        with torch.device(self.device):
            return Qwen3ForCausalLM(config).to(self.dtype)

    def sft_rows(self):
        from datasets import Dataset

        rng, lo, hi = random.Random(0), *self.lengths
        ids = [
            [rng.randrange(self.vocab) for _ in range(rng.randint(lo, hi))] for _ in range(BATCH * (self.steps + 2))
        ]
        answer = max(4, lo // 4)
        return Dataset.from_dict(
            {"input_ids": ids, "completion_mask": [[0] * (len(r) - answer) + [1] * answer for r in ids]}
        )

    def pref_rows(self):
        from datasets import Dataset

        rng, lo, hi = random.Random(1), self.lengths[0], self.lengths[1] * 2 // 3

        def ids(a, b):
            return [rng.randrange(self.vocab) for _ in range(rng.randint(a, b))]

        n = BATCH * (self.steps + 2)
        rows = [(ids(lo, hi), ids(lo // 8, lo), ids(lo // 8, lo)) for _ in range(n)]
        return Dataset.from_dict(
            {k: [r[i] for r in rows] for i, k in enumerate(("prompt_ids", "chosen_ids", "rejected_ids"))}
        )

    def spec(self, method: str, attention: str, batching: str):
        from hydra import compose, initialize_config_dir

        from fcft import spec as run_spec
        from fcft.spec.hydra_schema import register_schema

        register_schema()
        overrides = [
            f"method={method}",
            f"compute={'cpu' if self.smoke else 'local'}",
            "tracking=none",
            "eval.enabled=false",
            f"model.dtype={'float32' if self.smoke else 'bfloat16'}",
            f"model.attn_implementation={attention}",
            "model.max_length=4096",
            f"method.max_steps={self.steps + 2}",
            f"method.per_device_train_batch_size={BATCH}",
            "method.gradient_accumulation_steps=1",
            "method.learning_rate=1e-5",
            "method.logging_steps=1000",
            f"method.batching={batching}",
        ]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return run_spec.validate(compose(config_name="config", overrides=overrides))

    # --- measurements --------------------------------------------------------------------------------------------

    def sft(self) -> None:
        from fcft.train.methods import sft

        variants = [("sdpa", "padded"), ("sdpa", "grouped"), ("flash_attention_2", "padded")]
        variants += [("flash_attention_2", "padding_free")]
        for attention, batching in variants:
            if attention == "flash_attention_2" and not self.smoke and not _installed("flash_attn"):
                self.notes.append(f"{self.model_name} SFT {attention} {batching}: skipped, flash-attn not installed")
                continue
            if self.smoke and attention == "flash_attention_2":
                attention = "sdpa"  # CPU: sdpa stands in (padding_free on sdpa: a block-diagonal mask, slow but exact)
                if batching == "padded":
                    continue
            model, meter = self.model(attention), Meter(self.device)
            dataset, out = self.sft_rows(), self.tmp / f"sft-{attention}-{batching}"
            if self.smoke and batching == "padding_free":  # fcft refuses padding_free on CPU: TRL directly
                self._trl_padding_free(model, dataset, out, meter)
            else:
                sft.train(
                    self.spec("sft", attention, batching), model, self.tokenizer, dataset, out, self.device, [meter]
                )
            self.record("sft", attention, batching, meter, model)
            self.release(model)

    def _trl_padding_free(self, model, dataset, out, meter) -> None:
        from trl import SFTConfig, SFTTrainer

        from fcft.train.args import common_args

        spec = self.spec("sft", "sdpa", "padded")
        config = SFTConfig(
            **common_args(spec, out, "cpu"), max_length=None, completion_only_loss=True, padding_free=True
        )
        SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=self.tokenizer, callbacks=[meter]
        ).train()

    def dpo(self) -> None:
        from fcft.train.methods import preference

        model, meter = self.model("sdpa"), Meter(self.device)
        spec = self.spec("dpo", "sdpa", "grouped")
        preference.train(spec, model, self.tokenizer, self.pref_rows(), self.tmp / "dpo", self.device, [meter])
        self.record("dpo", "sdpa", "grouped", meter, model, flops=False)
        self.release(model)

    def mcq(self) -> None:
        from fcft.data import formats
        from fcft.data.prepare import mcq_item
        from fcft.data.when2call import load_part
        from fcft.eval.scorer import context_length, score

        spec = self.spec("sft", "sdpa", "padded")  # the bundled sample's test rows
        rows = load_part(spec.data, "test").rows[: 8 if self.smoke else None]
        items = [mcq_item(row, formats.get("qwen2_5")) for row in rows]
        model = self.model("sdpa").eval()
        max_length = context_length(model, self.tokenizer)
        backends = {"fcft": score}
        if _installed("lm_eval"):
            from fcft.eval.lm_eval_backend import score as lm_eval_score

            backends["lm_eval"] = lm_eval_score
        else:
            self.notes.append("MCQ lm_eval: skipped, lm-evaluation-harness not installed (pip install 'fcft[eval]')")
        score(model, self.tokenizer, items[:2], BATCH, max_length)  # warm-up
        for backend, function in backends.items():
            self.reset_memory()
            started = time.perf_counter()
            function(model, self.tokenizer, items, BATCH, max_length)
            self.sync()
            seconds = time.perf_counter() - started
            self.results.append(
                dict(model=self.model_name, what=f"mcq {backend}", rows=len(items), seconds=round(seconds, 3),
                     rows_per_s=round(len(items) / seconds, 2), peak_gib=self.peak_gib())
            )  # fmt: skip
            print(self.results[-1])
        self.release(model)

    # --- bookkeeping ---------------------------------------------------------------------------------------------

    def record(self, method, attention, batching, meter, model, flops: bool = True) -> None:
        steps = meter.steps[2:] or meter.steps  # two warm-up steps
        seconds = statistics.median(steps)
        timed = slice(len(meter.steps) - len(steps), None)
        tokens = sum(meter.real[timed]) / len(steps)
        result = dict(model=self.model_name, what=method, attention=attention, batching=batching,
                      step_s=round(seconds, 4), real_tokens_per_s=round(tokens / seconds),
                      padding=round(sum(meter.pads[timed]) / max(1, sum(meter.fed[timed])), 4),
                      peak_gib=self.peak_gib())  # fmt: skip
        if flops:
            n = sum(p.numel() for p in model.parameters())
            s = self.shape
            squares = sum(meter.squares[timed]) / len(steps)
            per_step = 6 * n * tokens + 6 * s["num_hidden_layers"] * s["num_attention_heads"] * s["head_dim"] * squares
            result["tflops"] = round(per_step / seconds / 1e12, 2)
            result["mfu"] = round(per_step / seconds / self.peak, 4) if self.peak else None
        self.results.append(result)
        print(result)

    def release(self, model) -> None:
        del model
        gc.collect()
        if not self.smoke:
            import torch

            torch.cuda.empty_cache()
        self.reset_memory()

    def reset_memory(self) -> None:
        if not self.smoke:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        if self.smoke:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def sync(self) -> None:
        if not self.smoke:
            import torch

            torch.cuda.synchronize()

    def write(self, out: Path, seconds: float) -> None:
        import torch
        import transformers
        import trl

        slug = "".join(c if c.isalnum() else "-" for c in self.card.lower()).strip("-")
        out.mkdir(parents=True, exist_ok=True)
        meta = dict(card=self.card, torch=torch.__version__, transformers=transformers.__version__,
                    trl=trl.__version__, flash_attn=_installed("flash_attn"), batch=BATCH, steps=self.steps,
                    peak_bf16_flops=self.peak, seconds=round(seconds, 1), notes=self.notes)  # fmt: skip
        (out / f"gpu-{slug}.json").write_text(json.dumps({"meta": meta, "results": self.results}, indent=1) + "\n")
        keys = list(dict.fromkeys(k for r in self.results for k in r))
        lines = [f"# benchmarks/gpu.py on {self.card}", "", "```", json.dumps(meta, indent=1), "```", ""]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in self.results]
        (out / f"gpu-{slug}.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / f'gpu-{slug}.md'} and .json in {seconds:.0f} s")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def Meter(device: str):
    """A trainer callback timing each step (CUDA synchronised) and, through a forward pre-hook it installs on the
    model at train begin, the tokens fed per step: real ones, pad ones, and the sum of squared row lengths."""
    from transformers import TrainerCallback

    class _Meter(TrainerCallback):
        def __init__(self):
            self.steps, self.real, self.pads, self.fed, self.squares = [], [], [], [], []
            self.hooked = False

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not self.hooked:
                model.register_forward_pre_hook(self.count, with_kwargs=True)
                self.hooked = True

        def on_step_begin(self, args, state, control, **kwargs):
            self.sync()
            self.real.append(0), self.pads.append(0), self.fed.append(0), self.squares.append(0)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.sync()
            self.steps.append(time.perf_counter() - self.started)

        def sync(self):
            if device != "cpu":
                import torch

                torch.cuda.synchronize()

        def count(self, module, args, kwargs):
            if not module.training or not self.real:
                return
            ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
            mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
            if mask is not None:
                lengths = mask.sum(dim=1).tolist()
            elif positions is not None:  # padding-free: one row of sequences end to end, positions restart at 0
                starts = (positions[0] == 0).nonzero().flatten().tolist() + [positions.shape[1]]
                lengths = [b - a for a, b in zip(starts, starts[1:])]
            else:
                lengths = [ids.shape[1]] * ids.shape[0]
            self.real[-1] += sum(lengths)
            self.fed[-1] += ids.numel()
            self.pads[-1] += ids.numel() - sum(lengths)
            self.squares[-1] += sum(length * length for length in lengths)

    return _Meter()


if __name__ == "__main__":
    main()
