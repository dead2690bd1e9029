"""How the runs of a sweep ended, read from their directories alone.

A sweep directory (Hydra's `multirun/<date>/<time>/`) holds one directory per job, `<job number>/`, each with
Hydra's `.hydra/` (config.yaml, overrides.yaml). A job of an experiment with stages (fcft/runs/stages.py) holds one
run directory per stage instead, `<job number>/<stage>/`, listed in order in `<job number>/stages.json`, each
with its own `.hydra/overrides.yaml` and `.hydra/config.yaml`. A run directory has ended when it has
metrics.json (finished) or error.json (failed); running.json marks one in progress (fcft.rundir.claim). Hydra's
`multirun.yaml` in the sweep directory says which jobs the sweep planned (`planned`): a job that never started is
listed too, as "not started".

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
    """The sweep's run directories in job order, those of planned jobs that never started too; a job with stages
    gives its stages' directories, in order."""
    found = {d for d in Path(sweep_dir).iterdir() if d.is_dir() and (d / rundir.HYDRA).is_dir()}
    found |= {Path(sweep_dir) / str(n) for n in range(len(planned(sweep_dir)))}
    jobs = sorted(found, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    return [run_dir for job in jobs for run_dir in job_run_dirs(job)]


def planned(sweep_dir: Path) -> list[list[str]]:
    """The overrides of every job the sweep planned, in job order, from Hydra's multirun.yaml (its basic sweeper:
    the command line's and hydra.sweeper.params' values, combined); [] when they can't be known (e.g. Optuna's)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        hydra_cfg = OmegaConf.load(path).hydra
        if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return []
        params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *hydra_cfg.overrides.task])
        return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:  # noqa: BLE001 -- a multirun.yaml this Hydra can't read: list what is on disk
        return []


def job_run_dirs(job_dir: Path) -> list[Path]:
    """A job's run directories: its stages' (in order), or the job directory itself."""
    stages = read_json(Path(job_dir) / rundir.STAGES)
    return [Path(job_dir) / stage["name"] for stage in stages["stages"]] if stages else [Path(job_dir)]


def read(run_dir: Path) -> Outcome:
    """A run's outcome from its files (error.json, metrics.json, spec.yaml)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():  # planned by the sweep, never started
        jobs = planned(run_dir.parent)
        wanted = jobs[int(run_dir.name)] if run_dir.name.isdigit() and int(run_dir.name) < len(jobs) else []
        return Outcome(run_dir, False, "not started", run_dir.name, wanted)
    job = (rundir.RunDir(run_dir).job() or {}).get("job_name") or label(run_dir)  # a remote job goes by its name
    outcome = Outcome(run_dir, False, "", job, overrides(run_dir), stage=stage_of(run_dir))
    running = rundir.RunDir(run_dir).running()
    marker = read_json(run_dir / rundir.RUNNING)
    failure = read_json(run_dir / rundir.ERROR)
    if running is not None:
        outcome.status = f"running ({rundir.describe(running)})"
    elif failure is not None:
        outcome.status = f"{failure.get('type', 'Error')}: {failure.get('message', '')}"
    elif (run_dir / rundir.METRICS).is_file():
        outcome.ok, outcome.status, outcome.metrics = True, "finished", read_json(run_dir / rundir.METRICS)
    elif marker is not None:
        outcome.status = f"stopped before it finished ({rundir.describe(marker)}, no metrics.json)"
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
