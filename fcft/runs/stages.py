"""Experiments with stages: several runs, in order, inside one job (`+experiment=NAME`, conf/experiment/).

A plain Hydra sweep runs independent jobs; the published recipe is a chain (evaluate the base model, Spectrum SFT,
then DPO from that SFT run). An experiment config lists its stages:

    experiment:
      stages:
        - {name: base, overrides: [method=none]}
        - {name: sft, overrides: [method=sft, tuning=spectrum]}
        - {name: dpo, overrides: [method=dpo], init_from: sft}   # method.init_from = the sft stage's run directory

and each job of `python -m fcft -m +experiment=NAME model=a,b` runs them one after another, each composed from
the stage's overrides and then the job's own (so the command line has the last word), validated, and run by
its launcher into `<job dir>/<stage>/`: its own spec.yaml, metrics.json, `.hydra/` (overrides.yaml,
config.yaml) and MLflow run (a child of the sweep's parent run, tagged fcft.stage). `<job dir>/stages.json`
lists the stages, so the multirun's end and `python -m fcft.report` find every stage's run. A stage that fails
leaves error.json; a stage that starts from it is skipped (error.json says why); the others still run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from fcft import rundir
from fcft import spec as run_spec
from fcft.eval.metrics import HEADLINE
from fcft.runs import jobs
from fcft.runs.launch import prepare


class Skipped(RuntimeError):
    """A stage that starts from a stage that did not finish."""


def check(experiment: DictConfig) -> None:
    """SpecError naming the key when the stages can't run in order."""
    if not experiment.stages:
        raise run_spec.SpecError(f"experiment.stages: experiment '{experiment.name}' lists no stages")
    seen: list[str] = []
    for i, stage in enumerate(experiment.stages):
        if not stage.name or "/" in stage.name or stage.name in seen:
            raise run_spec.SpecError(f"experiment.stages[{i}].name: '{stage.name}' must be a unique directory name")
        if stage.init_from is not None and stage.init_from not in seen:
            raise run_spec.SpecError(
                f"experiment.stages[{i}].init_from: '{stage.init_from}' is not an earlier "
                f"stage; earlier stages: {', '.join(seen) or 'none'}"
            )
        seen.append(stage.name)
    table = experiment.table
    for stage in table.columns if table is not None else {}:
        if stage not in seen:
            raise run_spec.SpecError(f"experiment.table.columns: '{stage}' is not a stage; stages: {', '.join(seen)}")


def run(
    experiment: DictConfig, job_dir: Path, overrides: list[str], parent_run_id: Optional[str] = None, prefix: str = ""
) -> Optional[float]:
    """Run the experiment's stages in job_dir; returns the last stage's headline metric (None if it failed).
    `overrides`: the job's own (Hydra's task overrides); `prefix`: for the MLflow run names (e.g. the job number)."""
    from hydra import compose

    check(experiment)
    job_dir = Path(job_dir)
    stages = list(experiment.stages)
    rundir.write_json(
        job_dir / rundir.STAGES, {"experiment": experiment.name, "stages": [OmegaConf.to_container(s) for s in stages]}
    )
    finished: dict[str, Path] = {}
    score = None
    started_from = {stage.init_from for stage in stages if stage.init_from}
    for stage in stages:
        stage_dir = job_dir / stage.name
        stage_overrides = [*stage.overrides, *overrides]
        if stage.init_from is not None:
            stage_overrides.append(f"method.init_from='{job_dir / stage.init_from}'")
        print(f"fcft: stage {stage.name} ({' '.join(stage.overrides)}) in {stage_dir}", flush=True)
        score = None
        try:
            cfg = compose(config_name="config", overrides=stage_overrides)
            record_config(stage_dir, cfg, stage_overrides)
            if stage.init_from is not None and stage.init_from not in finished:
                raise Skipped(f"skipped: stage '{stage.init_from}', which it starts from, did not finish")
            cfg.experiment = None  # this stage is one run
            _drop_foreign(cfg, overrides, stage.name)
            if cfg.tracking.get("name", "mlflow") == "mlflow":
                cfg.tracking.parent_run_id = cfg.tracking.get("parent_run_id") or parent_run_id
                cfg.tracking.run_name = cfg.tracking.get("run_name") or f"{prefix}{cfg.model.name}-{stage.name}"
                tags = {
                    **(cfg.tracking.get("tags") or {}),
                    "fcft.stage": stage.name,
                    "fcft.experiment": experiment.name,
                }
                cfg.tracking.tags = tags
            spec, launcher = prepare(cfg)
            if stage.name in started_from and getattr(launcher, "wait", True) is False:
                raise run_spec.SpecError(
                    f"launcher.wait: stage '{stage.name}' is where a later stage starts from, so it must finish "
                    "first: drop launcher.wait=false (a remote stage is waited for, then the next one submitted)"
                )
            if rundir.RunDir(stage_dir).finished and rundir.same_spec(stage_dir / rundir.SPEC, spec.to_dict()):
                print(f"fcft: stage {stage.name} finished in an earlier start of this job; kept", flush=True)
                metrics = rundir.RunDir(stage_dir).metrics()
            else:
                with rundir.claim(stage_dir, spec.to_dict(), jobs.overwrite()):
                    run_spec.save(spec, stage_dir / rundir.SPEC)
                    metrics = launcher.launch(spec, stage_dir)
        except Exception as err:  # noqa: BLE001 -- the stage failed; the ones that don't start from it go on
            if not isinstance(err, rundir.RunDirError) and not (stage_dir / rundir.ERROR).is_file():
                rundir.RunDir(stage_dir).write_error(err)  # the worker writes its own, with the traceback
            print(f"fcft: stage {stage.name} failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        if metrics is not None:
            finished[stage.name] = stage_dir
            score = (metrics.get("eval") or {}).get(HEADLINE.key)
    return score


def _drop_foreign(cfg: DictConfig, job_overrides: list[str], stage: str) -> None:
    """The job's overrides apply to every stage, but a key the stage's option doesn't own (method.max_steps on the
    evaluate-only stage, method=none) is left out of that stage, and said so, instead of failing it."""
    from fcft.spec.check import owned_keys

    for override in job_overrides:
        key = override.split("=", 1)[0].lstrip("+")
        group, _, name = key.partition(".")
        owned = owned_keys(group, cfg.get(group, {}).get("name")) if name and "." not in name else None
        if owned is not None and name not in owned and name in cfg[group]:
            del cfg[group][name]
            print(f"fcft: stage {stage}: {key} left out ({group}={cfg[group].name} doesn't take it)", flush=True)


def record_config(stage_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """`.hydra/overrides.yaml` and `.hydra/config.yaml`, as Hydra would write them for a job: fcft writes them
    itself (conf/config.yaml sets hydra.output_subdir to null), once the directory is known to be the run's."""
    rundir.write_text(stage_dir / rundir.HYDRA_OVERRIDES, OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    rundir.write_text(stage_dir / rundir.HYDRA_CONFIG, OmegaConf.to_yaml(cfg))
