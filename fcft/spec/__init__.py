"""The run spec: the one contract between the CLI, the launchers and the worker.

Hydra composes the config groups (fcft/spec/hydra_schema.py); `validate` turns the composed config into a
`RunSpec`, a frozen tree of typed objects, in three named steps:

    resolve    (resolve.py)    pure: interpolations, absolute paths, the tracking store a null URI means
    check      (check.py)      pure: each group's option picks its schema (options.py, or the method registry),
                               which owns its keys and checks its values; then the checks across groups
    preflight  (preflight.py)  I/O: the model and data can be reached, files are readable, packages installed

`save`/`load` write and read spec.yaml (fcft/rundir.py names it); `load` validates again, so a hand-edited spec
meets the same checks as the command line, and a spec written before this schema (no `version`) is upgraded
(upgrade.py). Downstream code reads attributes of the typed objects: `spec.method.learning_rate`,
`spec.tuning.adapters`, `spec.tracking.enabled`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from fcft.data import SAMPLE_DIR, TEMPLATE_DIR
from fcft.spec.options import ComputeSpec, DataSpec, EvalSpec, ModelSpec, SpecError

__all__ = ["RunSpec", "SpecError", "validate", "load", "save", "VERSION"]

VERSION = 2  # spec.yaml's schema: 1 had one flat schema per group (no `version` key)

# conf/data/sample.yaml names the bundled files as ${fcft_sample:NAME}; the spec stores them resolved.
OmegaConf.register_new_resolver("fcft_sample", lambda name: str(SAMPLE_DIR / name), replace=True)
# conf/model/*.yaml name fcft's bundled chat templates as ${fcft_template:NAME}.
OmegaConf.register_new_resolver("fcft_template", lambda name: str(TEMPLATE_DIR / name), replace=True)


@dataclass(frozen=True)
class RunSpec:
    """One run, validated: an object per config group, each of its option's schema."""

    model: ModelSpec
    method: Any  # the method's settings (fcft/train/methods/): EvalOnly, or a TrainerSettings subclass
    tuning: Any  # options.FullTuning, LoraTuning, QloraTuning or SpectrumTuning
    compute: ComputeSpec
    launcher: dict  # `_target_` (the launcher class) and its keyword arguments, checked by the launcher itself
    data: DataSpec
    eval: EvalSpec
    tracking: Any  # options.MlflowTracking or NoTracking
    version: int = field(default=VERSION)

    @property
    def trains(self) -> bool:
        from fcft.train.methods import get

        return get(self.method.name).trains

    @property
    def training_format(self) -> str:
        return self.data.format or self.model.format

    @property
    def eval_format(self) -> str:
        return self.eval.format or self.training_format

    def replace(self, **groups) -> RunSpec:
        """A copy with whole groups replaced, e.g. spec.replace(tracking=NoTracking())."""
        return dataclasses.replace(self, **groups)

    def to_dict(self) -> dict:
        """Plain data (what spec.yaml holds): enums as their values."""
        return {"version": self.version, **{f.name: _plain(getattr(self, f.name)) for f in _GROUPS}}


_GROUPS = [f for f in dataclasses.fields(RunSpec) if f.name != "version"]
GROUPS = tuple(f.name for f in _GROUPS)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def validate(cfg: DictConfig | dict, find_run: Optional[Callable] = None) -> RunSpec:
    """The spec of a composed config: resolve, check, preflight; SpecError naming the key if anything can't run.
    `find_run(run_id, uri)` -> (run_dir, problem) turns an MLflow run id in method.init_from into the run
    directory it recorded (fcft.tracking.run_dir_of; None: run ids are refused)."""
    from fcft.spec import check, preflight, resolve

    return preflight.preflight(check.check(resolve.resolve(cfg)), find_run)


def save(spec: RunSpec, path: Path) -> Path:
    """Write spec.yaml atomically."""
    import yaml

    from fcft import rundir

    return rundir.write_text(Path(path), yaml.safe_dump(spec.to_dict(), sort_keys=False))


def load(path: str | Path, find_run: Optional[Callable] = None) -> RunSpec:
    """Read and validate a spec.yaml written by `save`, by an earlier version of fcft, or by hand."""
    from fcft import rundir
    from fcft.spec.upgrade import upgrade

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist (expected the {rundir.SPEC} of a run directory)")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise SpecError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, DictConfig):
        raise SpecError(f"{path} must hold a mapping of config groups, got {type(raw).__name__}")
    try:
        return validate(upgrade(OmegaConf.to_container(raw, resolve=False)), find_run)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
