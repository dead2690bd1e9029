"""This process's place in a run of several processes.

`accelerate launch` (like torchrun) starts one process per device and tells each its RANK and WORLD_SIZE;
a run started without it is rank 0 of 1. Every rank trains; only rank 0 writes the run directory.
Each rank leaves the process group (leave) when its part is done.
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


def leave() -> None:
    """End this process's part in the process group, if it joined one (once its work succeeded; each rank at
    its own time: rank 0 evaluates after the others have finished). A process that exits with the group still
    up can abort at exit (gloo's threads: "terminate called without an active exception"), and the launcher
    then stops every other rank with SIGTERM, rank 0 mid-evaluation."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
