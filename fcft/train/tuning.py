"""Which parameters train: every one (full), LoRA adapters through PEFT (lora; qlora: on 4-bit weights, which
fcft.models loads), or the layers a Spectrum scan picks (spectrum, fcft/train/spectrum.py)."""

from __future__ import annotations

from pathlib import Path

from fcft.spec.options import SpectrumTuning


def prepare(spec, model, run_dir: Path):
    """Set up the model for the spec's tuning before a trainer is built; returns the PEFT config or None.

    Adapters are added by the TRL trainer from the returned config; Spectrum freezes the model here.
    """
    if isinstance(spec.tuning, SpectrumTuning):
        from fcft.train import spectrum

        spectrum.apply(spec.tuning, model, run_dir)
    return peft_config(spec.tuning)


def peft_config(tuning):
    """A PEFT config for adapter tunings, None when the model's own parameters train."""
    if not tuning.adapters:
        return None
    from peft import LoraConfig

    targets = list(tuning.lora_target_modules)
    return LoraConfig(
        r=tuning.lora_r,
        lora_alpha=tuning.lora_alpha,
        lora_dropout=tuning.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
