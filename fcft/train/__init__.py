"""Training: one module per method (sft; preference = dpo + mpo), tuning choices in tuning.py and spectrum.py,
shared trainer arguments in args.py. `train` picks the method the spec names."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def train(spec: DictConfig, model, tokenizer, rows: list[dict], fmt, run_dir: Path, device: str, callbacks=()):
    """Tokenize the normalised training rows in `fmt` and train with the spec's method; returns the trainer.
    `callbacks`: transformers TrainerCallbacks (fcft's MLflow logging)."""
    from fcft.data.prepare import pref_dataset, sft_dataset

    max_length = spec.model.max_length
    if spec.method.name == "sft":
        from fcft.train.methods import sft

        return sft.train(
            spec, model, tokenizer, sft_dataset(rows, fmt, tokenizer, max_length), run_dir, device, callbacks
        )
    from fcft.train.methods import preference

    dataset = pref_dataset(rows, fmt, tokenizer, max_length)
    return preference.train(spec, model, tokenizer, dataset, run_dir, device, callbacks)


def train_part(method: str) -> str:
    """The When2Call part a method trains on."""
    return "train_sft" if method == "sft" else "train_pref"
