"""Training speed: fcft's SFT trainer against a plain TRL script, same rows, same model, one run.

    python benchmarks/train_speed.py                        # 8 timed steps per variant, 2 rounds
    python benchmarks/train_speed.py --steps 20 --rounds 3 --hidden 512 --trl-default

Variants, each on a freshly built copy of the same randomly initialised Qwen3 (default: 6 layers, hidden 256,
4 heads of 64, 2 KV heads, MLP 768, float32, sdpa; fcft's tiny 1,685-token vocabulary) and the same tokenized
rows (the bundled sample's 480 SFT rows in the qwen2_5 format, input_ids + completion_mask as fcft prepares them;
146-427 tokens, 259 on average), batch 8, no gradient accumulation, seed 42:

- trl:          a plain TRL script: SFTConfig + SFTTrainer on the tokenized rows, activation_checkpointing=False,
                bf16=False (float32 as fcft's spec here)
- fcft padded:  fcft.train.methods.sft.train with method.batching=padded (random order, as TRL)
- fcft grouped: the same with method.batching=grouped (fcft's default: rows of similar length batched together)
- trl default:  (--trl-default) the plain script with SFTConfig's own defaults: activation checkpointing ON and
                bf16 mixed precision ON (autocast, on a CPU too)

Activation checkpointing: TRL's SFTConfig turns it on by default (`gradient_checkpointing=True`, transformers 5's
`activation_checkpointing`), recomputing each layer's activations in the backward pass; fcft's spec has
method.gradient_checkpointing false, so fcft does not recompute. Precision: SFTConfig also defaults to bf16=True,
bf16 autocast around a float32 model, on a CPU as on a GPU; fcft trains in model.dtype (float32 for this model:
bf16=False). The plain script sets both off, so both do the same work; --trl-default times TRL's defaults beside
them.

The variants run one after another in rounds, the order reversed each round (trl, padded, grouped, then grouped,
padded, trl) so that a drift in the machine's load hits them alike. Per variant the first step is a warm-up and not
timed. Printed: median step time (wall) and process CPU time per step (less sensitive to other jobs on a shared
machine), real (non-pad) tokens per second, padding share (pad tokens / tokens in the batches the model was fed,
counted at its forward), and the time per real token against trl's, wall and CPU. Compare per token, not per step:
a grouped run's batches hold other rows than a random one's (transformers' sampler puts each mega-batch's longest
rows first, so a short grouped run's steps are longer ones); trl and fcft padded get the same batches (same seed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH = 8
LEARNING_RATE = 1e-4
SEED = 42


def compose_spec(batching: str, steps: int, max_length: int):
    """fcft's validated spec for the SFT runs: the embedded default with the benchmark's batch and steps."""
    from hydra import compose, initialize_config_dir

    from fcft import spec as run_spec
    from fcft.spec.hydra_schema import register_schema

    register_schema()
    overrides = [
        "method=sft",
        "compute=cpu",
        "tracking=none",
        "eval.enabled=false",
        f"model.max_length={max_length}",
        f"method.max_steps={steps}",
        f"method.per_device_train_batch_size={BATCH}",
        "method.gradient_accumulation_steps=1",
        f"method.learning_rate={LEARNING_RATE}",
        "method.logging_steps=1000",
        f"method.seed={SEED}",
        f"method.batching={batching}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run_spec.validate(compose(config_name="config", overrides=overrides))


def build_model(tokenizer, hidden: int, layers: int):
    """eval_speed.py's random Qwen3 (the same shape rules), in float32, to train."""
    from eval_speed import build_model as random_qwen3

    return random_qwen3(tokenizer, hidden, layers, "float32").train()


class Meter:
    """Step times (a trainer callback) and the tokens and pad tokens of every batch the model is fed."""

    def __init__(self):
        self.steps, self.cpu, self.pads, self.tokens, self.started = [], [], 0, 0, None

    def forward_hook(self, module, args, kwargs):
        if not module.training:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        self.tokens += ids.numel()
        self.pads += int((mask == 0).sum()) if mask is not None else 0

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                meter.started = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                meter.steps.append(time.perf_counter() - meter.started[0])
                meter.cpu.append(time.process_time() - meter.started[1])

        return Clock()


def run_trl(model, tokenizer, dataset, out: str, steps: int, max_length: int, meter: Meter, defaults: bool):
    """The plain TRL script: what a user would write for the same rows and settings."""
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        activation_checkpointing=defaults,  # SFTConfig's default is True
        bf16=defaults,  # SFTConfig's default is True (autocast); fcft: the model's dtype, float32 here
        max_length=max_length,
        completion_only_loss=True,
        eos_token=tokenizer.eos_token,
        seed=SEED,
        data_seed=SEED,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        report_to="none",
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[meter.callback()]
    )
    trainer.train()


def run_fcft(batching, model, tokenizer, dataset, out: str, steps: int, max_length: int, meter: Meter):
    from fcft.train.methods import sft

    spec = compose_spec(batching, steps, max_length)
    sft.train(spec, model, tokenizer, dataset, Path(out), "cpu", callbacks=[meter.callback()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round (plus 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--trl-default", action="store_true", help="also time TRL with its defaults (see above)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import torch
    from transformers import AutoTokenizer

    from fcft import tiny
    from fcft.data import formats
    from fcft.data.prepare import sft_dataset
    from fcft.data.when2call import load_part

    tokenizer = AutoTokenizer.from_pretrained(tiny.ensure())
    spec = compose_spec("padded", 1, args.max_length)
    rows = load_part(spec.data, "train_sft").rows
    dataset = sft_dataset(rows, formats.get("qwen2_5"), tokenizer, args.max_length)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    params = sum(p.numel() for p in build_model(tokenizer, args.hidden, args.layers).parameters())
    print(
        f"{len(dataset)} rows, {min(lengths)}-{max(lengths)} tokens ({statistics.mean(lengths):.0f} on average); "
        f"Qwen3 {args.layers} layers, hidden {args.hidden}, {params / 1e6:.1f} M parameters, float32, sdpa; "
        f"batch {BATCH}; {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "activation checkpointing and bf16 autocast: OFF in every variant below but 'trl default' (TRL's SFTConfig "
        "defaults both ON; fcft's method.gradient_checkpointing is false, its precision the model's float32)"
    )

    variants = {
        "trl": lambda *a: run_trl(*a, defaults=False),
        "fcft padded": lambda *a: run_fcft("padded", *a),
        "fcft grouped": lambda *a: run_fcft("grouped", *a),
    }
    if args.trl_default:
        variants["trl default"] = lambda *a: run_trl(*a, defaults=True)
    meters = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="fcft-train-speed-") as tmp:
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                model, meter = build_model(tokenizer, args.hidden, args.layers), Meter()
                model.register_forward_pre_hook(meter.forward_hook, with_kwargs=True)
                out = str(Path(tmp) / f"{name.replace(' ', '-')}-{round_}")
                variants[name](model, tokenizer, dataset, out, args.steps + 1, args.max_length, meter)
                meters[name].append(meter)
                print(f"  round {round_ + 1} {name:13s} {statistics.median(meter.steps[1:]):6.3f} s/step")

    print(
        f"\n{'variant':14s} {'median s/step':>13s} {'cpu s/step':>10s} {'tokens/s':>9s} {'padding':>8s} "
        f"{'s/token vs trl':>14s} {'cpu/token vs trl':>16s}"
    )
    base = None
    for name, runs in meters.items():
        steps = [t for meter in runs for t in meter.steps[1:]]
        cpu = [t for meter in runs for t in meter.cpu[1:]]
        pads, tokens = sum(m.pads for m in runs), sum(m.tokens for m in runs)
        real = tokens - pads  # the warm-up steps' tokens too: times below include them
        wall_per_token, cpu_per_token = sum(sum(m.steps) for m in runs) / real, sum(sum(m.cpu) for m in runs) / real
        base = base or (wall_per_token, cpu_per_token)
        print(
            f"{name:14s} {statistics.median(steps):13.3f} {statistics.median(cpu):10.3f} {1 / wall_per_token:9.0f} "
            f"{pads / tokens:8.1%} {wall_per_token / base[0]:14.3f} {cpu_per_token / base[1]:16.3f}"
        )


if __name__ == "__main__":
    main()
