"""Run on this machine: the worker in this process, or `accelerate launch` of it in several processes.

compute.num_processes and compute.strategy decide (conf/compute/: cpu_ddp2, cpu_zero3, gpu, gpu_zero3...).
The subprocess's output streams to this terminal; rank 0 writes the run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from omegaconf import DictConfig

import fcft
from fcft.runs import jobs
from fcft.spec import SPEC_FILE, SpecError
from launchers.processes import batch_plan, in_one_process, processes_per_machine, worker_command


class LocalLauncher:
    def check(self, spec: DictConfig) -> None:
        if spec.compute.instance_type is not None:
            raise SpecError(
                f"compute.instance_type: {spec.compute.instance_type} (compute={spec.compute.name}) is a SageMaker "
                "instance type and launcher=local runs on this machine: add launcher=sagemaker, or pick a local "
                "compute preset (local, cpu, cpu_ddp2, cpu_zero3, gpu, gpu_zero3)"
            )
        processes_per_machine(spec)  # null (one per GPU) needs a GPU here

    def launch(self, spec: DictConfig, run_dir: Path) -> dict:
        run_dir = Path(run_dir)
        processes = processes_per_machine(spec)
        print(f"fcft: {batch_plan(spec, processes)}", flush=True)
        if in_one_process(spec, processes):
            from fcft import worker

            return worker.run(spec, run_dir)
        command = worker_command(spec, run_dir / SPEC_FILE, processes)
        # The child imports the same fcft as this process, wherever it was started from.
        source = str(Path(fcft.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        print(f"fcft: {' '.join(command)}", flush=True)
        status = subprocess.run(command, env=env).returncode
        if status != 0:
            error = run_dir / jobs.ERROR_FILE
            reason = json.loads(error.read_text())["message"] if error.is_file() else "see the output above"
            raise jobs.RunFailed(f"the worker processes exited with status {status}: {reason}")
        return json.loads((run_dir / jobs.METRICS_FILE).read_text())
