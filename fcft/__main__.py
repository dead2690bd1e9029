"""The command line: compose the config groups with Hydra, validate them into a run spec, write the spec to
the run directory, and hand it to the configured launcher.

    python -m fcft [group=option ...] [key=value ...]      # one run
    python -m fcft -m key=a,b ...                          # a sweep (Hydra multirun), reported in multirun_reports/
    python -m fcft +experiment=results_table -m            # an experiment: stages run in order in each job
    python -m fcft --cfg job                               # print the composed config
    python -m fcft hydra.run.dir=out/r1 overwrite=true     # replace another run's outputs in out/r1

Before Hydra writes anything, the command line is checked (`precheck`): an unknown option of a group is refused
with the option you probably meant, and a password in tracking.uri (or MLFLOW_TRACKING_URI) is refused before it
could reach .hydra/. `overwrite=true` is fcft's own flag, not part of the spec: without it, a run refuses a
directory holding another run's outputs (fcft.rundir.claim). Errors end in one line and an exit status: 2 for
bad input (config, data rows, missing files, an unreachable store, a directory in use), 1 for a failed run, 130
when interrupted, 143 on SIGTERM (fcft/runs/jobs.py; FCFT_DEBUG=1 adds the traceback, HYDRA_FULL_ERROR=1 Hydra's).

Hydra runs here only; launchers and the worker read the frozen spec.yaml. In a multirun, a job that fails
(bad config, failed training, refused submission) leaves error.json and the sweep goes on; remote
launchers only submit, and the multirun's end (fcft/runs/sweep.py) waits for every job and reports. Each job's
spec names the sweep's MLflow parent run (tracking.parent_run_id). A job returns its eval acc_norm, which
the Optuna sweeper (hydra/sweeper=optuna) maximises.
"""

from __future__ import annotations

import difflib
import logging
import os
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


def cli(argv: list[str]) -> int:
    """`python -m fcft`: the command line checked before Hydra sees it, SIGTERM raised like Ctrl-C, then Hydra."""
    try:
        sys.argv[1:] = precheck(argv)
    except run_spec.SpecError as err:
        return jobs.fail(err)
    jobs.handle_sigterm()
    try:
        main()
    except KeyboardInterrupt as err:  # between jobs of a multirun, or in Hydra itself
        return jobs.fail(err)
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir)
    try:
        if cfg.get("experiment") is not None:
            return _experiment(cfg, run_dir)
        spec, launcher = prepare(cfg)
        with rundir.claim(run_dir, spec.to_dict(), jobs.overwrite()):
            _record_hydra(run_dir, cfg)
            run_spec.save(spec, run_dir / rundir.SPEC)
            log.info("spec written to %s", run_dir / rundir.SPEC)
            metrics = launcher.launch(spec, run_dir)
    except BaseException as err:  # noqa: BLE001 -- one line and an exit status, for every error
        if isinstance(err, SystemExit):
            raise
        if isinstance(err, KeyboardInterrupt) and rundir.RunDir(run_dir).running() is None:
            _record_interrupt(run_dir, err)
        sys.exit(jobs.fail(err, run_dir if (run_dir / rundir.ERROR).is_file() else None))
    return _report(metrics, run_dir)


def _record_hydra(run_dir: Path, cfg: DictConfig) -> None:
    """The run's .hydra/ (its composed config and command-line overrides), for reports and readers."""
    stages.record_config(run_dir, cfg, list(HydraConfig.get().overrides.task))


def _record_interrupt(run_dir: Path, err: BaseException) -> None:
    """error.json for a run interrupted outside the worker (between the spec and the worker, or while a subprocess
    or remote job ran), unless the worker wrote one; never into a directory another run holds."""
    if (run_dir / rundir.SPEC).is_file() and not (run_dir / rundir.ERROR).is_file():
        rundir.RunDir(run_dir).write_error(err)


# --- before Hydra ----------------------------------------------------------------------------------------------


def precheck(argv: list[str]) -> list[str]:
    """The command line without fcft's own `overwrite=` flag (noted in FCFT_OVERWRITE, for every job); SpecError
    for what must not reach Hydra, which writes the overrides into .hydra/ at once: a password in tracking.uri, an
    unknown option of a config group (with the one you probably meant), a run directory another run is using."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from fcft.spec.uris import uri_problem

    kept = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if not arg.startswith("-") and key.lstrip("+") == "overwrite":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise run_spec.SpecError(f"overwrite: '{value}' is not a boolean; give overwrite=true")
            os.environ[jobs.OVERWRITE_ENV] = "1" if value.lower() in ("true", "1", "yes") else ""
            continue
        kept.append(arg)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri and _has_password(env_uri):
        raise run_spec.SpecError(f"MLFLOW_TRACKING_URI: {uri_problem(env_uri)}")
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in kept if not a.startswith("-") and "=" in a])
    except HydraException:
        return kept  # Hydra says what is wrong with it
    multirun = any(a in ("-m", "--multirun") for a in kept)
    known = (*run_spec.GROUPS, "experiment", "hydra")
    for override in parsed:
        key = override.key_or_group.lstrip("+")
        values = _values(override)
        top = key.split(".", 1)[0].split("/", 1)[0]
        if top not in known:  # Hydra would suggest `+key=`, which the spec then refuses
            close = difflib.get_close_matches(top, known, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise run_spec.SpecError(f"{key}: unknown key{hint}; the config's groups are {', '.join(known)}")
        if key == "tracking.uri":
            for uri in values:
                if _has_password(uri):
                    raise run_spec.SpecError(f"tracking.uri: {uri_problem(uri)}")
        elif "." not in key and "/" not in key and (CONF_DIR / key).is_dir() and not override.is_delete():
            for option in values:
                _check_option(key, option)
        elif key == "hydra.run.dir" and not multirun and values:
            busy = rundir.RunDir(Path(values[0])).running()
            if busy is not None:
                raise run_spec.SpecError(f"hydra.run.dir: {values[0]} is in use by a run ({rundir.describe(busy)})")
    return kept


def _values(override) -> list[str]:
    """An override's value(s) as text: each value of a sweep, else the one value."""
    try:
        if override.is_sweep_override():
            return [str(v) for v in override.sweep_string_iterator()]
        value = override.value()
    except Exception:  # an interval(...) or another sweep that lists no values
        return []
    return [str(value)] if isinstance(value, (str, int, float)) else []


def _has_password(uri: str) -> bool:
    from urllib.parse import urlparse

    try:
        return bool(urlparse(uri).password)
    except ValueError:
        return False


def _check_option(group: str, option: str) -> None:
    """SpecError when conf/<group>/<option>.yaml doesn't exist, naming the closest option and all of them."""
    if option == "null" or (CONF_DIR / group / f"{option}.yaml").is_file():
        return
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise run_spec.SpecError(f"{group}: no option '{option}'{hint}; options: {', '.join(options)}")


# --- one run of a multirun ---------------------------------------------------------------------------------------


def _sweep_job(cfg: DictConfig, run_dir: Path) -> float | None:
    """One job of a multirun: submit it where the launcher can (`submit`), else run it; a failure is written
    to error.json and logged, never raised, so the other jobs run and the multirun's end reports it."""
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    parent = tracking.parent_for(cfg.tracking, sweep_dir)
    if rundir.RunDir(run_dir).running() is None:  # the job is listed in the sweep's report even if it fails
        _record_hydra(run_dir, cfg)
    try:
        if cfg.get("experiment") is not None:
            return _experiment(cfg, run_dir, parent, prefix=f"{run_dir.name}-")
        if parent:  # tracked, in the parent's store and experiment
            cfg.tracking.parent_run_id = cfg.tracking.get("parent_run_id") or parent
            if cfg.tracking.get("run_name") is None:
                cfg.tracking.run_name = f"{run_dir.name}-{cfg.model.name}-{cfg.method.name}-{cfg.tuning.name}"
        spec, launcher = prepare(cfg)
        if rundir.RunDir(run_dir).finished and rundir.same_spec(run_dir / rundir.SPEC, spec.to_dict()):
            print(f"fcft: job {run_dir.name} finished in an earlier start of this sweep; kept", flush=True)
            return (rundir.RunDir(run_dir).metrics().get("eval") or {}).get(HEADLINE.key)
        with rundir.claim(run_dir, spec.to_dict(), jobs.overwrite()):
            run_spec.save(spec, run_dir / rundir.SPEC)
            if isinstance(launcher, RemoteLauncher):
                launcher.submit(spec, run_dir)
                return None
            return _report(launcher.launch(spec, run_dir), run_dir)
    except KeyboardInterrupt as err:  # the sweep stops: this job and the parent run end KILLED
        if rundir.RunDir(run_dir).running() is None:
            _record_interrupt(run_dir, err)
        _kill_sweep(sweep_dir)
        print(f"fcft: sweep stopped; run the same command with hydra.sweep.dir={sweep_dir} to finish it")
        raise
    except Exception as err:  # noqa: BLE001 -- every failure is the job's, reported at the multirun's end
        if not isinstance(err, rundir.RunDirError) and not (run_dir / rundir.ERROR).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)  # the worker writes its own error.json, with the traceback
            rundir.RunDir(run_dir).write_error(err)
        print(f"fcft: job {run_dir.name} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def _kill_sweep(sweep_dir: Path) -> None:
    """End the sweep's MLflow parent run KILLED (an interrupted sweep never reaches its end)."""
    parent = tracking.sweep_parent(sweep_dir)
    if parent is None:
        return
    try:
        from fcft.tracking import store

        store.connect(parent["uri"]).set_terminated(parent["parent_run_id"], "KILLED")
    except Exception as err:  # noqa: BLE001 -- the store may be what failed
        print(f"fcft: warning: the sweep's MLflow run was not marked KILLED: {err}", file=sys.stderr)


def _experiment(cfg: DictConfig, job_dir: Path, parent: str | None = None, prefix: str = "") -> float | None:
    """An experiment's stages, one run each in job_dir/<stage> (fcft/runs/stages.py); SpecError if they can't run.
    Alone (not in a multirun), a failed stage makes the command fail; in a multirun, the multirun's end reports it."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # a multirun's job has recorded its own
        _record_hydra(job_dir, cfg)
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
    sys.exit(cli(sys.argv[1:]))
