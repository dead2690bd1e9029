"""Step 1 of validation, pure: the composed config as plain data, interpolations resolved, local paths made
absolute (a spec runs the same from any working directory), and a null tracking URI turned into the store it
means (the embedded SQLite file in the working directory)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fcft.spec.options import SpecError
from fcft.spec.uris import run_id_in, store_uri

LOCAL_PATHS = (
    ("model", "path"),
    ("model", "chat_template"),
    ("tuning", "spectrum_file"),
    ("data", "train_path"),
    ("data", "pref_path"),
    ("data", "test_path"),
    ("compute", "checkpoint_dir"),
)


def resolve(cfg: DictConfig | dict) -> dict:
    """Plain, resolved groups of one run; SpecError for an experiment (several runs) or a broken interpolation."""
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None)
            raise SpecError(f"{key + ': ' if key else ''}{str(err).splitlines()[0]}") from None
    raw = {key: value for key, value in cfg.items() if key != "experiment"}
    experiment = cfg.get("experiment")
    if experiment is not None:
        raise SpecError(
            f"experiment: '{experiment.get('name')}' runs several stages, each its own run, so it is not one spec; "
            "run it with python -m fcft -m +experiment=NAME (fcft/runs/stages.py)"
        )
    for group, key in LOCAL_PATHS:
        node = raw.get(group)
        if isinstance(node, dict) and isinstance(node.get(key), str) and "://" not in node[key]:
            node[key] = _absolute(node[key])
    method = raw.get("method")
    init_from = method.get("init_from") if isinstance(method, dict) else None
    if isinstance(init_from, str) and not run_id_in(init_from) and "://" not in init_from:
        method["init_from"] = _absolute(init_from)  # a run directory (else an MLflow run id or an s3:// URI)
    tracking = raw.get("tracking")
    if isinstance(tracking, dict) and tracking.get("name", "mlflow") == "mlflow":
        tracking["uri"] = store_uri(tracking.get("uri"))
    return raw


def _absolute(path: str) -> str:
    return str(Path(os.path.expanduser(path)).absolute())
