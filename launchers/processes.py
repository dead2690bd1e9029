"""The command that runs the worker on one machine, shared by the local launcher and the SageMaker entry
script: the worker itself for one plain process, else `accelerate launch` with the strategy's config
(configs/) and one process per device.

On CPUs, DDP needs accelerate's multi-GPU launcher: `--cpu` and a MULTI_CPU config silently start one
process. With --multi_gpu the processes talk over gloo, and the trainer's `use_cpu=True` (from
compute.accelerator) keeps them on the CPU.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fcft.spec import RunSpec, SpecError
from fcft.spec.options import Strategy

CONFIGS = Path(__file__).resolve().parent / "configs"
ACCELERATE_CONFIGS = {Strategy.ddp: CONFIGS / "ddp.yaml", Strategy.zero3: CONFIGS / "deepspeed_zero3.yaml"}
MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Machines:
    """The machines of one run: how many, which one this is, and where rank 0 listens."""

    count: int = 1
    rank: int = 0
    main_ip: str = "127.0.0.1"
    port: Optional[int] = None  # None: a free port on this machine (a single-machine run)


def processes_per_machine(spec: RunSpec, gpus: Optional[int] = None) -> int:
    """compute.num_processes, or one per GPU when it is null (`gpus`: the count, else asked of torch)."""
    if spec.compute.num_processes is not None:
        return spec.compute.num_processes
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus < 1:
        raise SpecError(
            "compute.num_processes: null means one process per GPU, and no GPU is visible here; "
            "set compute.num_processes, or run on a GPU machine"
        )
    return gpus


def in_one_process(spec: RunSpec, processes: int) -> bool:
    """True when the run needs no launcher: one process and no DeepSpeed."""
    return processes == 1 and spec.compute.strategy != Strategy.zero3


def worker_command(
    spec: RunSpec, spec_path: Path, processes: int, machines: Machines = Machines(), run_dir: Optional[Path] = None
) -> list[str]:
    """argv that runs `python -m fcft.worker spec_path` with `processes` processes on each machine."""
    worker = ["-m", "fcft.worker", str(spec_path), *(["--run-dir", str(run_dir)] if run_dir else [])]
    total = processes * machines.count
    if in_one_process(spec, total):
        return [sys.executable, *worker]
    strategy = spec.compute.strategy
    if strategy == Strategy.none:
        raise SpecError(f"compute.strategy: 'none' runs one process, not {total}; pick ddp or zero3")
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIGS[strategy]),
        "--num_processes",
        str(total),
        "--num_machines",
        str(machines.count),
        "--machine_rank",
        str(machines.rank),
        "--main_process_ip",
        machines.main_ip,
        "--main_process_port",
        str(machines.port or free_port()),
        "--mixed_precision",
        MIXED_PRECISION[spec.model.dtype],
        "--dynamo_backend",
        "no",
        *worker,
    ]


def batch_plan(spec: RunSpec, processes: int) -> str:
    """One line saying how the global batch is made, e.g. '2 processes (ddp) x 4 per device x 1 accumulation = 8'."""
    m = spec.method
    where = f"{processes} process{'es' if processes > 1 else ''} ({spec.compute.strategy})"
    if not spec.trains:
        return f"{where}, evaluation only"
    accumulation = m.accumulation_steps(processes)
    total = processes * m.per_device_train_batch_size * accumulation
    return f"{where} x {m.per_device_train_batch_size} per device x {accumulation} accumulation = global batch {total}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
