"""This process's place in a run of several processes.

`accelerate launch` (like torchrun) starts one process per device and tells each its RANK and WORLD_SIZE;
a run started without it is rank 0 of 1. Every rank trains; only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """The process's index on its own machine (its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def load_gathered(model_spec, device: str, path: Path):
    """The saved model at `path`, loaded whole in this process alone. Under ZeRO-3 each rank holds a shard
    of the trained weights, so rank 0 evaluates the gathered copy the trainer saved; loading it outside
    DeepSpeed's zero.Init (which the trainer switched on for this process) keeps the others out of it."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from fcft import models

    unset_hf_deepspeed_config()
    return models.load_model(model_spec, device, str(path))
