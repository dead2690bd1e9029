"""Where a model's weights come from, and loading them: a local path, a hub id, the embedded tiny model, or
the weights a previous run saved (`method.init_from`).

`source_problem` and `init_from_problem` answer at validation time, without loading anything, whether the
weights can be reached (offline included); `load` does the loading for the worker.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from fcft import distributed, rundir
from fcft.spec.options import ModelSpec
from fcft.spec.upgrade import written


def source_problem(model: ModelSpec) -> Optional[str]:
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


def resolve_source(model: ModelSpec) -> str:
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


def attn_implementation(model: ModelSpec, device: str) -> str:
    if model.attn_implementation != "auto":
        return model.attn_implementation
    if device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def _revision(model: ModelSpec, source: str) -> Optional[str]:
    """model.revision applies to the hub id only, not to local directories."""
    return model.revision if source == model.hub_id else None


def load_tokenizer(model: ModelSpec, source: Optional[str] = None):
    from transformers import AutoTokenizer

    source = source or resolve_source(model)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=_revision(model, source))
    if model.chat_template is not None:  # replaces the tokenizer's own; save_pretrained then writes it with the model
        tokenizer.chat_template = Path(model.chat_template).read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: ModelSpec, device: str, source: Optional[str] = None, quantization=None, revision=None):
    """The weights in model.dtype on `device`; with a `quantization` config (bitsandbytes), quantized as they load."""
    import torch
    from transformers import AutoModelForCausalLM

    source = source or resolve_source(model)
    loaded = AutoModelForCausalLM.from_pretrained(
        source,
        revision=revision or _revision(model, source),
        dtype=getattr(torch, model.dtype),
        attn_implementation=attn_implementation(model, device),
        quantization_config=quantization,
        device_map={"": device} if quantization is not None else None,
    )
    return loaded if quantization is not None else loaded.to(device)


def quantization_config(spec):
    """bitsandbytes 4-bit settings when the tuning loads 4-bit weights (qlora), else None."""
    t = spec.tuning
    if not t.four_bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=t.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=t.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=getattr(torch, spec.model.dtype),
    )


def load(spec, device: str):
    """(model, tokenizer) a run starts from: the model spec's weights, or those and the tokenizer a previous run
    saved (method.init_from, adapters merged in model.dtype); 4-bit when the tuning says so."""
    quantization = quantization_config(spec)
    if spec.method.init_from is None:
        source = resolve_source(spec.model)
        return load_model(spec.model, device, source, quantization), load_tokenizer(spec.model, source)
    run = Path(spec.method.init_from)
    return _run_weights(run, spec.model, device, quantization), load_tokenizer(spec.model, str(run / rundir.MODEL))


# --- method.init_from: a previous run's weights ---------------------------------------------------------------


def init_from_problem(init_from: str, model: ModelSpec) -> Optional[str]:
    """Why `init_from` can't start this run, or None when it can."""
    run = Path(os.path.expanduser(init_from))
    if not run.is_dir():
        return (
            f"'{init_from}' is neither a run directory nor an MLflow run id (32 hexadecimal characters, or runs:/<id>)"
        )
    if _is_model_dir(run):
        return (
            f"{run} is a model directory; pass the run directory that holds it ({run.parent}), "
            f"or start from plain weights with model.path={run}"
        )
    if not _is_model_dir(run / rundir.MODEL):
        return (
            f"{run} has no model/ to start from (a run that trains saves one; method=none runs and failed runs don't)"
        )
    if (problem := rundir.RunDir(run).not_finished()) is not None:
        return f"{problem}; method.init_from takes a finished run"
    try:
        previous = written(run / rundir.SPEC).model.name
    except Exception as err:  # missing or broken spec.yaml
        return f"{run} has no readable spec.yaml ({type(err).__name__}): not a fcft run directory"
    if previous != model.name:
        return f"{run} trained model '{previous}' but this run names model '{model.name}': add model={previous}"
    return _base_problem(run)


def _base_problem(run: Path) -> Optional[str]:
    """Why the weights under a run's adapter can't be reached (an adapter merges into them), or None."""
    if not (run / rundir.MODEL / "adapter_config.json").is_file():
        return None
    previous = written(run / rundir.SPEC)
    parent = previous.method.get("init_from")
    if parent:
        if not _is_model_dir(Path(parent) / rundir.MODEL):
            return f"{run} holds an adapter for the weights of {parent}, which has no model/ any more"
        return _base_problem(Path(parent))
    problem = source_problem(previous.model)
    return f"{run} holds an adapter for weights that can't be reached: {problem}" if problem else None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _run_weights(run: Path, model: ModelSpec, device: str, quantization=None):
    """The weights a run saved: its model/ as it is, or its adapter merged into the weights it trained on."""
    model_dir = run / rundir.MODEL
    if not (model_dir / "adapter_config.json").is_file():
        return load_model(model, device, str(model_dir), quantization)
    merged = _merged_adapter(run, model, device)
    if quantization is None:
        return merged
    # bitsandbytes quantizes while loading: reload the merged weights from a temporary copy.
    with tempfile.TemporaryDirectory(prefix="fcft-merged-") as tmp:
        merged.save_pretrained(tmp)
        del merged
        return load_model(model, device, tmp, quantization)


def _merged_adapter(run: Path, model: ModelSpec, device: str):
    """A LoRA run's adapter merged (PEFT merge_and_unload) into the weights it trained on, in model.dtype.

    Those are the base model's, or, for a run that itself started from `init_from`, that run's weights.
    """
    from peft import PeftModel

    previous = written(run / rundir.SPEC)
    parent = previous.method.get("init_from")
    if parent:
        base = _run_weights(Path(parent), model, device)
    else:
        base = load_model(model, device, resolve_source(previous.model), revision=previous.model.get("revision"))
    return PeftModel.from_pretrained(base, str(run / rundir.MODEL)).merge_and_unload()


def load_gathered(model: ModelSpec, device: str, path: Path):
    """The model saved at `path`, loaded whole in this process alone. Under ZeRO-3 each rank holds a shard
    of the trained weights, so rank 0 evaluates the gathered copy the trainer saved, loaded outside
    DeepSpeed's zero.Init (which the trainer switched on for this process and would wait for the others)."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    return load_model(model, device, str(path))
