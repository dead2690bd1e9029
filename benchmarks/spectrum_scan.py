"""Cost of fcft's Spectrum scan on a randomly initialised Qwen3-0.6B-shaped model, against the published scan.

    python benchmarks/spectrum_scan.py                 # 28 layers, as Qwen3-0.6B (about 3 GB of memory)
    python benchmarks/spectrum_scan.py --layers 4      # a quicker look; the scan grows linearly with layers
    python benchmarks/spectrum_scan.py --device cuda

Baseline: cognitivecomputations/spectrum computes the SNR of every module with a weight, the embeddings and
lm_head (151936 x 1024) and the 1-D norms included. fcft computes it only where the ranking needs it (2-D
weights of types with several modules). Both pick the same layers; the script checks it. It also times the
cache key (a hash of all weights), paid on every Spectrum run, cache hit or not.
"""

from __future__ import annotations

import argparse
import time


def qwen3_0_6b(layers: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    model.tie_weights()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02) if param.ndim == 2 else param.fill_(1.0)
    return model


def published_snr(weight) -> float:
    """spectrum.py's computation: torch.linalg.svdvals in float32; 1-D weights as 1 x n matrices."""
    import math

    import torch

    w = weight.detach().float()
    w = w if w.ndim == 2 else w.unsqueeze(0)
    s = torch.linalg.svdvals(w)
    sigma = (torch.quantile(s, 0.75) - torch.quantile(s, 0.25)) / 1.349
    n, m = w.shape
    beta = n / m if n < m else m / n
    threshold = sigma * math.sqrt((1 + math.sqrt(beta)) ** 2)
    signal, noise = s[s > threshold].sum().item(), s[s <= threshold].sum().item()
    return (signal / noise if noise != 0 else math.inf) / s[0].item()


def published_scan(model) -> dict[str, dict]:
    """Every module with a weight, as spectrum.py does."""
    from tqdm.auto import tqdm

    from fcft.train import spectrum

    modules = dict(model.named_modules())
    named = [(kind, name) for kind, names in spectrum.weight_modules(model).items() for name in names]
    return {
        name: {"type": kind, "snr": published_snr(modules[name].weight)}
        for kind, name in tqdm(named, desc="published scan", unit="module")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from fcft.train import spectrum

    model = qwen3_0_6b(args.layers).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: Qwen3-0.6B shape, {args.layers} layers, {params / 1e6:.0f} M parameters, bf16, on {args.device}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    timings = {}
    start = time.perf_counter()
    spectrum.weights_key(model)
    timings["cache key (hash of the weights)"] = time.perf_counter() - start
    start = time.perf_counter()
    ours = spectrum.scan(model)
    timings["fcft scan"] = time.perf_counter() - start
    start = time.perf_counter()
    theirs = published_scan(model)
    timings["published scan (baseline)"] = time.perf_counter() - start

    assert spectrum.select(ours, 50) == spectrum.select(theirs, 50), "the two scans picked different layers"
    matrices = sum(entry["snr"] is not None for entry in ours.values())
    baseline = timings["published scan (baseline)"]
    print(f"\n{matrices} matrices ranked by fcft, {len(theirs)} modules by the baseline; same layers picked at 50%")
    print(f"{'step':<34} {'seconds':>9} {'x baseline':>11}")
    for step, seconds in timings.items():
        print(f"{step:<34} {seconds:>9.2f} {seconds / baseline:>11.3f}")
    if args.layers != 28:  # the layers' matrices grow linearly; the embeddings are scanned once (baseline only)
        print(f"\nfcft scan extrapolated to 28 layers: {timings['fcft scan'] / args.layers * 28:.1f} s")


if __name__ == "__main__":
    main()
