"""The command line: compose the config groups with Hydra, validate them into a run spec, write the spec to
the run directory, and hand it to the configured launcher.

    python -m fcft [group=option ...] [key=value ...]      # one run
    python -m fcft -m key=a,b ...                          # a sweep (Hydra multirun), reported in multirun_reports/
    python -m fcft +experiment=results_table -m            # an experiment: stages run in order in each job
    python -m fcft --cfg job                               # print the composed config

Hydra runs here only; launchers and the worker read the frozen spec.yaml. In a multirun, a job that fails
(bad config, failed training, refused submission) leaves error.json and the sweep goes on; remote
launchers only submit, and the multirun's end (fcft/runs/sweep.py) waits for every job and reports. Each job's
spec names the sweep's MLflow parent run (tracking.parent_run_id). A job returns its eval acc_norm, which
the Optuna sweeper (hydra/sweeper=optuna) maximises.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fcft import rundir, tracking
from fcft import spec as run_spec
from fcft.eval.metrics import HEADLINE
from fcft.runs import jobs, stages
from fcft.runs.launch import RemoteLauncher, prepare
from fcft.spec.hydra_schema import register_schema

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("fcft")

register_schema()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir)
    try:
        if cfg.get("experiment") is not None:
            return _experiment(cfg, run_dir)
        spec, launcher = prepare(cfg)
    except run_spec.SpecError as err:
        print(f"fcft: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    run_spec.save(spec, run_dir / rundir.SPEC)
    log.info("spec written to %s", run_dir / rundir.SPEC)
    try:
        metrics = launcher.launch(spec, run_dir)
    except jobs.RunFailed as err:
        print(f"fcft: run failed: {err}", file=sys.stderr)
        sys.exit(1)
    return _report(metrics, run_dir)


def _sweep_job(cfg: DictConfig, run_dir: Path) -> float | None:
    """One job of a multirun: submit it where the launcher can (`submit`), else run it; a failure is written
    to error.json and logged, never raised, so the other jobs run and the multirun's end reports it."""
    parent = tracking.parent_for(cfg.tracking, Path(HydraConfig.get().sweep.dir))
    try:
        if cfg.get("experiment") is not None:
            return _experiment(cfg, run_dir, parent, prefix=f"{run_dir.name}-")
        if parent:  # tracked, in the parent's store and experiment
            cfg.tracking.parent_run_id = cfg.tracking.get("parent_run_id") or parent
            if cfg.tracking.get("run_name") is None:
                cfg.tracking.run_name = f"{run_dir.name}-{cfg.model.name}-{cfg.method.name}-{cfg.tuning.name}"
        spec, launcher = prepare(cfg)
        run_spec.save(spec, run_dir / rundir.SPEC)
        if isinstance(launcher, RemoteLauncher):
            launcher.submit(spec, run_dir)
            return None
        return _report(launcher.launch(spec, run_dir), run_dir)
    except Exception as err:  # noqa: BLE001 -- every failure is the job's, reported at the multirun's end
        if not (run_dir / rundir.ERROR).is_file():  # the worker writes its own, with the traceback
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.RunDir(run_dir).write_error(err)
        print(f"fcft: job {run_dir.name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def _experiment(cfg: DictConfig, job_dir: Path, parent: str | None = None, prefix: str = "") -> float | None:
    """An experiment's stages, one run each in job_dir/<stage> (fcft/runs/stages.py); SpecError if they can't run.
    Alone (not in a multirun), a failed stage makes the command fail; in a multirun, the multirun's end reports it."""
    score = stages.run(cfg.experiment, job_dir, list(HydraConfig.get().overrides.task), parent, prefix)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        from fcft.runs import outcomes
        from fcft.runs.sweep import report

        results = [outcomes.read(d) for d in outcomes.job_run_dirs(job_dir)]
        report(job_dir, results, write=False)
        if not all(o.ok for o in results):
            sys.exit(1)
    return score


def _report(metrics: dict | None, run_dir: Path) -> float | None:
    if metrics is None:
        record = rundir.RunDir(run_dir).job()
        if record is None:  # nothing was submitted (a dry run)
            return None
        if record.get("status") == "Completed":
            print(f"fcft: job {record['job_name']} completed; its outputs: {record.get('model_artifacts')}")
        else:
            print(
                f"fcft: submitted {record.get('job_name')}; outputs will be in {run_dir} "
                f"(wait and collect with: python -m fcft.runs {run_dir})"
            )
        return None
    from fcft.worker import metrics_table

    print(f"fcft: run finished; outputs in {run_dir}\n{metrics_table(metrics)}")
    return metrics["eval"].get(HEADLINE.key)


if __name__ == "__main__":
    main()
