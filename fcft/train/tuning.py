"""Which parameters train: full fine-tuning, or LoRA adapters through PEFT."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def peft_config(tuning: DictConfig):
    """A PEFT config for adapter tunings, None when every parameter trains."""
    if tuning.name == "full":
        return None
    from peft import LoraConfig

    targets = OmegaConf.to_container(tuning.lora_target_modules)
    return LoraConfig(
        r=tuning.lora_r,
        lora_alpha=tuning.lora_alpha,
        lora_dropout=tuning.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
