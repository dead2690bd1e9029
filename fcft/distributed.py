"""This process's place in a run of several processes.

`accelerate launch` (like torchrun) starts one process per device and tells each its RANK and WORLD_SIZE;
a run started without it is rank 0 of 1. Every rank trains; only rank 0 writes the run directory.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """The process's index on its own machine (its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0
