"""Run on this machine: the worker in this process, or `accelerate launch` of it in several processes.

compute.num_processes and compute.strategy decide (conf/compute/: cpu_ddp2, cpu_zero3, gpu, gpu_zero3...).
The subprocess's output streams to this terminal; rank 0 writes the run directory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import fcft
from fcft import rundir
from fcft.runs import jobs
from fcft.spec import RunSpec, SpecError
from fcft.spec.check import remote_paths
from fcft.spec.options import Accelerator
from launchers.processes import batch_plan, in_one_process, processes_per_machine, worker_command


class LocalLauncher:
    """This machine; it takes no settings (a SageMaker instance setting is refused, naming launcher=sagemaker)."""

    def check(self, spec: RunSpec) -> None:
        if spec.compute.accelerator == Accelerator.cuda:
            import torch

            if not torch.cuda.is_available():
                raise SpecError(
                    f"compute.accelerator: 'cuda' (compute={spec.compute.name}) needs a CUDA GPU and none is "
                    "visible here; use compute=local (GPU when visible, else CPU) or compute=cpu"
                )
        processes_per_machine(spec)  # null (one per GPU) needs a GPU here
        for key, value in remote_paths(spec).items():
            raise SpecError(
                f"{key}: '{value}' is read by a SageMaker job (launcher=sagemaker: an input channel); launcher=local "
                "reads local files: download it and give its path"
            )

    def launch(self, spec: RunSpec, run_dir: Path) -> dict:
        run_dir = Path(run_dir)
        processes = processes_per_machine(spec)
        print(f"fcft: {batch_plan(spec, processes)}", flush=True)
        if in_one_process(spec, processes):
            from fcft import worker

            return worker.run(spec, run_dir)
        command = worker_command(spec, run_dir / rundir.SPEC, processes)
        # The child imports the same fcft as this process, wherever it was started from.
        source = str(Path(fcft.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        print(f"fcft: {' '.join(command)}", flush=True)
        status = subprocess.run(command, env=env).returncode
        if status != 0:
            reason = (rundir.RunDir(run_dir).error() or {}).get("message", "see the output above")
            raise jobs.RunFailed(f"the worker processes exited with status {status}: {reason}")
        return rundir.RunDir(run_dir).metrics()
