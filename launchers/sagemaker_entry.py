"""Inside a SageMaker training job: install fcft from the shipped source, run the worker on the job's spec
with one process per GPU of each instance (`accelerate launch`), and publish the outputs.

    python -m launchers.sagemaker_entry fcft_job/spec.yaml      (the job's command, run in its code dir)

- /opt/ml/model ($SM_MODEL_DIR) is the run directory: SageMaker uploads it as model.tar.gz.
- /opt/ml/output/data ($SM_OUTPUT_DATA_DIR) gets the same without model/: output.tar.gz, small, for metrics.
- On failure, the worker's error message goes to /opt/ml/output/failure: SageMaker shows it as the job's
  FailureReason.
Standard library only until fcft is installed (the image brings Python, torch and CUDA); from then on the
run directory's file names are fcft.rundir's.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

MODEL_DIR = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
OUTPUT_DIR = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
OUTPUT_DATA_DIR = Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
CONFIG_DIR = Path(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
MAIN_PORT = 29500
MIN_TORCH = (2, 4)  # pyproject.toml's torch>=2.4
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1 KiB of the failure file as FailureReason


def install(source: Path, spec_path: Path) -> None:
    """pip install fcft from `source` with the extras the job's spec needs, keeping the image's torch; once."""
    try:
        metadata.version("fcft")
        return  # this Python has it already (a prebuilt image: launcher.image_uri)
    except metadata.PackageNotFoundError:
        pass
    torch = image_torch()
    if torch is not None and tuple(int(p) for p in torch.split("+")[0].split(".")[:2]) < MIN_TORCH:
        raise RuntimeError(
            f"the image's torch {torch} is older than fcft needs (>= {'.'.join(map(str, MIN_TORCH))}): pick "
            "launcher.framework_version 2.4 or later, or a launcher.image_uri with a newer torch"
        )
    with tempfile.TemporaryDirectory() as tmp:
        command = install_command(source, spec_path, Path(tmp), torch)
        print(f"fcft: {' '.join(command)}", flush=True)
        started = time.monotonic()
        subprocess.run(command, check=True)
        print(f"fcft: installed in {time.monotonic() - started:.0f} s", flush=True)
    importlib.invalidate_caches()


def install_command(source: Path, spec_path: Path, tmp: Path, torch_version: Optional[str]) -> list[str]:
    """The pip command: fcft[<the spec's extras>] built from a copy of `source`, every other package pinned as fcft
    is tested (constraints.txt), torch pinned to the image's own build (made for its CUDA)."""
    pins = [line for line in (source / "constraints.txt").read_text().splitlines() if not line.startswith("torch==")]
    if torch_version:
        pins.append(f"torch=={torch_version}")
    constraints = tmp / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    copy = tmp / "fcft"  # build from a copy: the code channel may be read-only
    # Not the job's own folder (sagemaker_job.CODE_SPEC's; a literal: fcft can't be imported yet).
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("fcft_job"))
    extras_file = spec_path.parent / "extras.txt"  # sagemaker_job.EXTRAS
    extras = (
        [line.strip() for line in extras_file.read_text().splitlines() if line.strip()]
        if extras_file.is_file()
        else []
    )
    package = f"{copy}[{','.join(extras)}]" if extras else str(copy)
    packages = [package, *tracking_packages(os.environ.get("MLFLOW_TRACKING_URI", ""))]
    return [sys.executable, "-m", "pip", "install", "--no-cache-dir", "-c", str(constraints), *packages]


def image_torch() -> Optional[str]:
    """The torch version the image ships (its CUDA build), or None."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def tracking_packages(uri: str) -> list[str]:
    """What a tracking URI needs beyond fcft (which brings mlflow): the sagemaker-mlflow plugin for an ARN."""
    return ["sagemaker-mlflow>=0.1"] if uri.startswith("arn:") else []


def unpack_init_from() -> None:
    """method.init_from given as a SageMaker job's model.tar.gz in S3 (the recipe's DPO starting from its SFT job)
    arrives in the init_from channel as that archive: unpack it where the job's spec expects the run directory,
    <job root>/init_from (sagemaker_job.job_path)."""
    channel = CONFIG_DIR.parent / "data" / "init_from"
    archives = sorted(channel.glob("*.tar.gz")) if channel.is_dir() else []
    if not archives:
        return
    target = CONFIG_DIR.parents[1] / "init_from"
    target.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    print(f"fcft: unpacked {', '.join(a.name for a in archives)} into {target} (method.init_from)", flush=True)


def machines():
    """This job's instances (resourceconfig.json): how many, which one this is, and the first one's name."""
    from launchers.processes import Machines

    path = CONFIG_DIR / "resourceconfig.json"
    if not path.is_file():
        return Machines()
    config = json.loads(path.read_text())
    hosts = sorted(config["hosts"])
    return Machines(count=len(hosts), rank=hosts.index(config["current_host"]), main_ip=hosts[0], port=MAIN_PORT)


def publish_outputs(run_dir: Path, output_data: Path) -> None:
    """Copy the run directory without its model to output_data (SageMaker's output.tar.gz)."""
    from fcft import rundir

    output_data.mkdir(parents=True, exist_ok=True)
    for path in run_dir.iterdir():
        if path.name == rundir.MODEL:
            continue
        if path.is_dir():
            shutil.copytree(path, output_data / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, output_data / path.name)


def report_failure(run_dir: Path, status: int) -> None:
    """The worker's error message (or its exit status) as the job's FailureReason."""
    from fcft import rundir

    reason = (rundir.RunDir(run_dir).error() or {}).get("message") or f"the worker exited with status {status}"
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "failure").write_text(reason[:FAILURE_LIMIT])


def plan(spec_path: Path):
    """The worker's command line on this instance, and the job's machines."""
    from fcft import spec as run_spec
    from launchers.processes import batch_plan, processes_per_machine, worker_command

    spec = run_spec.load(spec_path)
    where = machines()
    processes = processes_per_machine(spec)  # null: one per GPU of this instance
    command = worker_command(spec, spec_path, processes, where, run_dir=MODEL_DIR)
    print(f"fcft: {where.count} machine(s), this is #{where.rank}; {batch_plan(spec, processes * where.count)}")
    print(f"fcft: {' '.join(command)}", flush=True)
    return command, where


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launchers.sagemaker_entry SPEC_YAML", file=sys.stderr)
        return 2
    spec_path = Path(argv[0]).resolve()
    try:
        install(Path.cwd(), spec_path)
        unpack_init_from()
        command, where = plan(spec_path)
    except Exception as err:  # the job's FailureReason says what went wrong before training
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUTPUT_DIR / "failure").write_text(f"{type(err).__name__}: {err}"[:FAILURE_LIMIT])
        raise
    status = subprocess.run(command).returncode
    if where.rank == 0 and MODEL_DIR.is_dir():
        publish_outputs(MODEL_DIR, OUTPUT_DATA_DIR)
        if status != 0:
            report_failure(MODEL_DIR, status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
