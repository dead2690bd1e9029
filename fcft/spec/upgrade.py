"""spec.yaml files written before per-option schemas (version 1, no `version` key) read as version 2.

Version 1 had one flat schema per group, so every spec.yaml listed every key of its group, the chosen option's
and the others' (DPO's beta for an SFT run, LoRA's rank for full tuning), and kept SageMaker's instance settings
under `compute`. Upgrading keeps the keys the chosen option owns, drops the others (they were unused), and moves
the instance settings to the SageMaker launcher's settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


def written(path: Path):
    """A run's spec.yaml as it was written, in version 2 groups, unvalidated (an OmegaConf DictConfig): for reading
    another run's record (its model, its init_from, its launcher) without validation's checks and I/O. OSError or a
    YAML error when the file can't be read."""
    from omegaconf import OmegaConf

    return OmegaConf.create(upgrade(OmegaConf.to_container(OmegaConf.load(path), resolve=False)))


def upgrade(raw: dict) -> dict:
    """Version 2 groups from a version 1 or 2 spec (a version 2 spec comes back as it is)."""
    if "version" in raw:
        return raw
    from fcft.spec.check import INSTANCE_KEYS, options

    raw = {**raw, "version": 2}
    for group in ("method", "tuning", "tracking"):
        node = raw.get(group)
        if isinstance(node, dict):
            schema = options(group).get(node.get("name"))
            if schema is not None:
                owned = {f.name for f in dataclasses.fields(schema)}
                raw[group] = {key: value for key, value in node.items() if key in owned}
    compute, launcher = raw.get("compute"), raw.get("launcher")
    if isinstance(compute, dict):
        instance = {key: compute.pop(key) for key in INSTANCE_KEYS if key in compute}
        if (
            instance.get("instance_type")
            and isinstance(launcher, dict)
            and "sagemaker" in launcher.get("_target_", "")
        ):
            raw["launcher"] = {**launcher, **{k: v for k, v in instance.items() if v is not None}}
    return raw
