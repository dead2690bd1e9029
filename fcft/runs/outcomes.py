"""How the runs of a sweep ended, read from their directories alone.

A sweep directory (Hydra's `multirun/<date>/<time>/`) holds one directory per job, `<job number>/`, each with
Hydra's `.hydra/` (config.yaml, overrides.yaml). A job of an experiment with stages (fcft/runs/stages.py) holds one
run directory per stage instead, `<job number>/<stage>/`, listed in order in `<job number>/stages.json`, each
with its own `.hydra/overrides.yaml` and `.hydra/config.yaml`. A run directory has ended when it has
metrics.json (finished) or error.json (failed).

fcft/runs/sweep.py adds waiting for and collecting remote jobs; fcft/report/report.py writes the sweep's report
from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.rundir import read_json

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Outcome:
    """How one run of a sweep ended."""

    run_dir: Path
    ok: bool
    status: str  # e.g. "finished", "Completed", "Failed (AlgorithmError): ...", "SpecError: ..."
    job: str = ""  # the remote job's name, or the run directory's path in the sweep (e.g. "3", "0/sft")
    overrides: list[str] = field(default_factory=list)  # the command-line overrides that made the run
    metrics: Optional[dict] = field(default=None, repr=False)
    stage: str = ""  # the experiment stage the run is, or ""


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's run directories in job order; a job with stages gives its stages' directories, in order."""
    found = [d for d in Path(sweep_dir).iterdir() if d.is_dir() and (d / rundir.HYDRA).is_dir()]
    jobs = sorted(found, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    return [run_dir for job in jobs for run_dir in job_run_dirs(job)]


def job_run_dirs(job_dir: Path) -> list[Path]:
    """A job's run directories: its stages' (in order), or the job directory itself."""
    stages = read_json(Path(job_dir) / rundir.STAGES)
    return [Path(job_dir) / stage["name"] for stage in stages["stages"]] if stages else [Path(job_dir)]


def read(run_dir: Path) -> Outcome:
    """A run's outcome from its files (error.json, metrics.json, spec.yaml)."""
    run_dir = Path(run_dir)
    job = (rundir.RunDir(run_dir).job() or {}).get("job_name") or label(run_dir)  # a remote job goes by its name
    outcome = Outcome(run_dir, False, "", job, overrides(run_dir), stage=stage_of(run_dir))
    failure = read_json(run_dir / rundir.ERROR)
    if failure is not None:
        outcome.status = f"{failure.get('type', 'Error')}: {failure.get('message', '')}"
    elif (run_dir / rundir.METRICS).is_file():
        outcome.ok, outcome.status, outcome.metrics = True, "finished", read_json(run_dir / rundir.METRICS)
    elif not (run_dir / rundir.SPEC).is_file():
        outcome.status = "did not start (no spec.yaml)"
    else:
        outcome.status = "did not finish (no metrics.json)"
    return outcome


def label(run_dir: Path) -> str:
    """The run's name in its sweep: the job number, or <job number>/<stage>."""
    return f"{run_dir.parent.name}/{run_dir.name}" if stage_of(run_dir) else run_dir.name


def stage_of(run_dir: Path) -> str:
    """The stage a run directory is (its job's stages.json lists it), or ""."""
    stages = read_json(Path(run_dir).parent / rundir.STAGES)
    names = [stage["name"] for stage in stages["stages"]] if stages else []
    return Path(run_dir).name if Path(run_dir).name in names else ""


def overrides(run_dir: Path) -> list[str]:
    """The overrides that composed the run's config (.hydra/overrides.yaml)."""
    path = Path(run_dir) / rundir.HYDRA_OVERRIDES
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def sweep_name(sweep_dir: Path) -> str:
    """The sweep's name: its directory's, with the date in front when it sits in a date directory
    (multirun/2026-11-25/10-00-00-000000 -> 2026-11-25_10-00-00-000000; multirun/beta_lr -> beta_lr)."""
    sweep_dir = Path(sweep_dir).absolute()
    return f"{sweep_dir.parent.name}_{sweep_dir.name}" if DATE.fullmatch(sweep_dir.parent.name) else sweep_dir.name
