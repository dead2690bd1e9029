"""Where a model's weights come from, and loading them: a local path, a hub id, or the embedded tiny model.

`source_problem` answers at validation time, without loading anything, whether the weights can be
reached (offline included); `load_tokenizer` and `load_model` do the loading for the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from fcft import distributed


def source_problem(model: DictConfig) -> Optional[str]:
    """Why the model's weights can't be reached, or None when they can."""
    if model.path is not None:
        if not (Path(model.path) / "config.json").is_file():
            return f"model.path={model.path} is not a model directory (no config.json in it)"
        return None
    if model.embedded:
        return None
    if model.hub_id is None:
        return "model: set model.path to a local model directory or model.hub_id to a hub id"
    from fcft import hub

    return hub.problem(model.hub_id, "model", model.revision, "model.hub_id", "config.json")


def resolve_source(model: DictConfig) -> str:
    """A local directory or hub id that `from_pretrained` accepts."""
    if model.path is not None:
        return model.path
    if model.embedded:
        from fcft import tiny

        return str(tiny.ensure())
    return model.hub_id


def device_for(accelerator: str) -> str:
    """'cpu', 'cuda', or in a run of several processes on GPUs this process's own 'cuda:<local rank>'."""
    import torch

    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and distributed.world_size() > 1:
        return f"cuda:{distributed.local_rank()}"
    return str(accelerator)


def attn_implementation(model: DictConfig, device: str) -> str:
    if model.attn_implementation != "auto":
        return model.attn_implementation
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_tokenizer(model: DictConfig, source: Optional[str] = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source or resolve_source(model), revision=model.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: DictConfig, device: str, source: Optional[str] = None):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        source or resolve_source(model),
        revision=model.revision,
        dtype=getattr(torch, model.dtype),
        attn_implementation=attn_implementation(model, device),
    ).to(device)


def load_gathered(model: DictConfig, device: str, path: Path):
    """The model saved at `path`, loaded whole in this process alone. Under ZeRO-3 each rank holds a shard
    of the trained weights, so rank 0 evaluates the gathered copy the trainer saved, loaded outside
    DeepSpeed's zero.Init (which the trainer switched on for this process and would wait for the others)."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    return load_model(model, device, str(path))
