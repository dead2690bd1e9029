"""The command line: compose the config groups with Hydra, validate them into a run spec, write the spec to
the run directory, and hand it to the configured launcher.

    python -m fcft [group=option ...] [key=value ...]      # one run
    python -m fcft -m key=a,b ...                          # a sweep (Hydra multirun)
    python -m fcft --cfg job                               # print the composed config

Hydra runs here only; launchers and the worker read the frozen spec.yaml.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fcft import spec as run_spec

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("fcft")

run_spec.register_schema()


def make_launcher(spec: DictConfig):
    """The launcher object the spec names (`launcher._target_` plus its keyword arguments)."""
    import importlib
    import inspect

    settings = OmegaConf.to_container(spec.launcher)
    target = settings.pop("_target_", None)
    if not isinstance(target, str):
        raise run_spec.SpecError("launcher._target_: missing; name the launcher class, e.g. launchers.local.LocalLauncher")
    module, _, name = target.rpartition(".")
    try:
        launcher_class = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise run_spec.SpecError(f"launcher._target_: can't import '{target}' ({err})") from None
    params = inspect.signature(launcher_class).parameters
    valid = sorted(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD)
    unknown = sorted(set(settings) - set(valid))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise run_spec.SpecError(
            f"unknown key 'launcher.{unknown[0]}' for {target}; valid keys: {', '.join(valid) or 'none (it takes no settings)'}"
        )
    try:
        return launcher_class(**settings)
    except (TypeError, ValueError) as err:
        raise run_spec.SpecError(f"launcher: {target} refused its settings: {err}") from None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        spec = run_spec.validate(cfg)
        launcher = make_launcher(spec)
    except run_spec.SpecError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job; the sweep goes on
        print(f"fcft: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    run_spec.save(spec, run_dir / run_spec.SPEC_FILE)
    log.info("spec written to %s", run_dir / run_spec.SPEC_FILE)
    metrics = launcher.launch(spec, run_dir)
    if metrics is None:
        print(f"fcft: submitted; outputs will be in {run_dir}")
        return None
    from fcft.worker import metrics_table

    print(f"fcft: run finished; outputs in {run_dir}\n{metrics_table(metrics)}")
    return metrics["eval"].get("acc_norm")


if __name__ == "__main__":
    main()
