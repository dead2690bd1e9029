"""From a composed config to a validated spec and the launcher that runs it.

A launcher is the class `launcher._target_` names (conf/launcher/*.yaml); the group's other keys are its
constructor's keyword arguments: its schema. It is built with `hydra.utils.instantiate` and follows the
`Launcher` protocol below (`RemoteLauncher` for those that submit jobs elsewhere). fcft reaches launchers only
through here, so it never imports the launchers package itself.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from fcft import rundir
from fcft.runs.jobs import JobStatus
from fcft.spec import RunSpec, SpecError

LAUNCHER_CONF = Path(__file__).resolve().parents[2] / "conf" / "launcher"


@runtime_checkable
class Launcher(Protocol):
    def check(self, spec: RunSpec) -> None:
        """Raise SpecError("key: what is wrong; what is valid") for a spec this launcher can't run, before anything
        is written (e.g. a GPU preset on a machine without one, an instance type SageMaker doesn't have)."""

    def launch(self, spec: RunSpec, run_dir: Path) -> Optional[dict]:
        """Run the spec whose spec.yaml lies in run_dir. Return its metrics when it finished here, None when it was
        only submitted (or, for a dry run, not even that); raise fcft.runs.jobs.RunFailed when it failed."""


@runtime_checkable
class RemoteLauncher(Launcher, Protocol):
    """A launcher whose runs execute elsewhere: a multirun submits them all, then waits (fcft/runs/sweep.py)."""

    poll_s: float  # seconds between status calls while waiting

    def submit(self, spec: RunSpec, run_dir: Path) -> None:
        """Start the run without waiting; write run_dir/job.json (fcft.rundir.RunDir.write_job)."""

    def status(self, run_dir: Path) -> JobStatus:
        """The submitted job's state."""

    def collect(self, run_dir: Path) -> Optional[dict]:
        """Bring a completed job's outputs into run_dir; return its metrics (or None)."""


def prepare(cfg) -> tuple[RunSpec, Launcher]:
    """The validated spec of a composed config (an MLflow run id in method.init_from looked up in its store), and
    the launcher that will run it, checked against it; SpecError naming the key if either can't run."""
    from fcft import spec as run_spec
    from fcft import tracking

    spec = run_spec.validate(cfg, find_run=tracking.run_dir_of)
    return spec, make_launcher(spec)


def make_launcher(spec: RunSpec) -> Launcher:
    launcher = build(spec.launcher)
    launcher.check(spec)
    return launcher


def build(settings: dict) -> Launcher:
    """The launcher object of `launcher.*` settings (its `_target_` and keyword arguments), unchecked."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate

    settings = dict(settings)
    target = settings.pop("_target_", None)
    if not isinstance(target, str):
        raise SpecError("launcher._target_: missing; name the launcher class, e.g. launchers.local.LocalLauncher")
    try:
        launcher_class = get_class(target)
    except Exception as err:  # ImportError, AttributeError, ValueError, wrapped by Hydra
        raise SpecError(f"launcher._target_: can't import '{target}' ({err})") from None
    _check_keys(launcher_class, target, settings)
    try:
        launcher = instantiate({"_target_": target, **settings}, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, SpecError):
            raise cause from None
        raise SpecError(f"launcher: {target} refused its settings: {cause}") from None
    if not isinstance(launcher, Launcher):
        raise SpecError(f"launcher._target_: {target} is no launcher: it needs check(spec) and launch(spec, run_dir)")
    return launcher


def launcher_of_run(run_dir: Path) -> Launcher:
    """The launcher that started the run in run_dir, re-made from its spec.yaml (to poll or collect a job)."""
    from omegaconf import OmegaConf

    from fcft.spec.upgrade import written

    return build(OmegaConf.to_container(written(Path(run_dir) / rundir.SPEC).launcher))


def _check_keys(launcher_class: type, target: str, settings: dict) -> None:
    """A key the launcher's constructor doesn't take is refused, naming the launcher options that do take it."""
    params = inspect.signature(launcher_class).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(name for name, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    known = _launcher_options()
    this = next((f"launcher={name}" for name, cls in known.items() if cls is launcher_class), target)
    for key in settings:
        if key not in valid:
            owners = [name for name, cls in known.items() if cls is not launcher_class and key in _keys(cls)]
            where = f"; launcher={', '.join(owners)} take{'s' if len(owners) == 1 else ''} it" if owners else ""
            raise SpecError(
                f"launcher.{key}: not a setting of {this}{where}; its settings: "
                f"{', '.join(valid) or 'none (it takes no settings)'}"
            )


def _keys(launcher_class: type) -> set[str]:
    return set(inspect.signature(launcher_class).parameters)


def _launcher_options() -> dict[str, type]:
    """conf/launcher option name -> its class, for the launchers that can be imported here."""
    import yaml
    from hydra.utils import get_class

    found = {}
    for path in sorted(LAUNCHER_CONF.glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        try:
            found[path.stem] = get_class(target)
        except Exception:  # a launcher whose extra isn't installed
            continue
    return found
