"""The launcher a spec names: `launcher._target_` is its class, the other `launcher.*` keys its keyword
arguments (the protocol a launcher follows is described in launchers/__init__.py). fcft reaches launchers
only through here, so it never imports the launchers package itself.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fcft.spec import SPEC_FILE, SpecError


def make_launcher(spec: DictConfig, check: bool = True):
    """The launcher object for `spec`; with `check`, it also vets the spec (e.g. compute vs. launcher)."""
    settings = OmegaConf.to_container(spec.launcher)
    target = settings.pop("_target_", None)
    if not isinstance(target, str):
        raise SpecError("launcher._target_: missing; name the launcher class, e.g. launchers.local.LocalLauncher")
    module, _, name = target.rpartition(".")
    try:
        launcher_class = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise SpecError(f"launcher._target_: can't import '{target}' ({err})") from None
    params = inspect.signature(launcher_class).parameters
    valid = sorted(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    unknown = sorted(set(settings) - set(valid))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise SpecError(
            f"unknown key 'launcher.{unknown[0]}' for {target}; valid keys: "
            f"{', '.join(valid) or 'none (it takes no settings)'}"
        )
    try:
        launcher = launcher_class(**settings)
    except SpecError:
        raise
    except (TypeError, ValueError) as err:
        raise SpecError(f"launcher: {target} refused its settings: {err}") from None
    if check and hasattr(launcher, "check"):
        launcher.check(spec)  # raises SpecError naming the key
    return launcher


def launcher_of_run(run_dir: Path):
    """The launcher that started the run in run_dir, re-made from its spec.yaml (to poll or collect a job)."""
    raw = OmegaConf.load(Path(run_dir) / SPEC_FILE)
    return make_launcher(raw, check=False)
