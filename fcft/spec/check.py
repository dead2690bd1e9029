"""Step 2 of validation, pure (no I/O, no heavy imports): each group becomes its option's typed schema, then
the checks that span groups.

A group's option is named by its `name` (model, compute, data and eval have one schema for every option).
A key the option's schema doesn't own is refused, naming the options that do take it, or the key it was
probably meant to be; a value of the wrong type is refused naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fcft.data.when2call import PATH_KEYS
from fcft.spec import GROUPS, RunSpec
from fcft.spec.options import (
    FLASH,
    PADDING_FREE,
    TRACKINGS,
    TUNINGS,
    Accelerator,
    ComputeSpec,
    DataSpec,
    EvalSpec,
    ModelSpec,
    SpecError,
    fail,
)

INSTANCE_KEYS = ("instance_type", "instance_count", "volume_size_gb", "max_runtime_s", "use_spot", "max_wait_s")


def options(group: str) -> dict[str, type]:
    """Option name -> schema, for the groups whose options have schemas of their own."""
    if group == "method":
        from fcft.train.methods import registry

        return {name: method.settings for name, method in registry().items()}
    return {"tuning": TUNINGS, "tracking": TRACKINGS}[group]


def owned_keys(group: str, option: Optional[str]) -> Optional[set[str]]:
    """The keys option `option` of a group with per-option schemas owns (None for other groups or unknown options)."""
    if group in SINGLE or group == "launcher":
        return None
    schema = options(group).get(option)
    return _fields(schema) if schema else None


def _fields(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


SINGLE = {"model": ModelSpec, "compute": ComputeSpec, "data": DataSpec, "eval": EvalSpec}
DEFAULT_OPTION = {"tuning": "full", "tracking": "mlflow"}


def check(raw: dict) -> RunSpec:
    """The typed RunSpec of resolved groups (resolve.py); SpecError naming the key when anything is off."""
    unknown = sorted(set(raw) - set(GROUPS) - {"version"})
    if unknown:
        fail(unknown[0], f"unknown key; the spec's groups are {', '.join(GROUPS)}{_did_you_mean(unknown[0], GROUPS)}")
    groups = {group: _group(group, raw.get(group)) for group in GROUPS if group != "launcher"}
    spec = RunSpec(launcher=_launcher(raw.get("launcher")), **groups)
    for group in GROUPS:
        if group != "launcher":
            getattr(spec, group).check()
    _across_groups(spec)
    return spec


def _group(group: str, node: Any):
    """The group's node as its option's schema object."""
    node = {} if node is None else node
    if not isinstance(node, dict):
        fail(group, f"must be a mapping of settings, got {node!r}")
    if group in SINGLE:
        return _typed(group, SINGLE[group], node, "")
    choices = options(group)
    name = node.get("name", DEFAULT_OPTION.get(group))
    if name not in choices:
        fail(
            f"{group}.name" if name is not None else group,
            f"unknown {group} '{name}'; valid: {', '.join(sorted(choices))} (pick one with {group}=NAME)",
        )
    return _typed(group, choices[name], node, f" of {group}={name}")


def _typed(group: str, schema: type, node: dict, option: str):
    fields = _fields(schema)
    for key in node:
        if group == "compute" and key in INSTANCE_KEYS:
            fail(f"compute.{key}", f"now the SageMaker launcher's: launcher.{key} (compute=ml.* presets set it)")
        if key not in fields:
            fail(
                f"{group}.{key}",
                f"not a setting{option}{_owners(group, key)}{_did_you_mean(key, fields)}; "
                f"its settings: {', '.join(sorted(fields))}",
            )
    try:
        return OmegaConf.to_object(OmegaConf.merge(_writable(OmegaConf.structured(schema)), node))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        text = str(err).splitlines()[0]
        raise SpecError(f"{group}.{key}: {text}" if key else f"{group}: {text}") from None


def _writable(node):
    """A frozen schema's config with every node writable, so its nested settings (eval.generate.*) take overrides."""
    OmegaConf.set_readonly(node, False)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
    return node


def _owners(group: str, key: str) -> str:
    """'; method=dpo, mpo take it' when other options of the group own `key`."""
    if group in SINGLE:
        return ""
    owners = [name for name, schema in options(group).items() if key in _fields(schema)]
    if not owners:
        return ""
    return f"; {group}={', '.join(sorted(owners))} take{'s' if len(owners) == 1 else ''} it"


def _did_you_mean(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _launcher(node: Any) -> dict:
    """The launcher's settings: `_target_` names its class; the rest the launcher checks (fcft/runs/launch.py)."""
    node = {"_target_": "launchers.local.LocalLauncher"} if node is None else node
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        fail("launcher._target_", "missing; name the launcher class, e.g. launchers.local.LocalLauncher")
    return dict(node)


def _across_groups(spec: RunSpec) -> None:
    from fcft.data.formats import NAMES
    from fcft.train.methods import get

    for key, name in (
        ("model.format", spec.model.format),
        ("data.format", spec.data.format),
        ("eval.format", spec.eval.format),
    ):
        if name is not None and name not in NAMES:
            fail(key, f"unknown format '{name}'; valid formats: {', '.join(NAMES)}")
    method = get(spec.method.name)
    if not method.trains and not spec.eval.enabled:
        fail("eval.enabled", "method=none only evaluates: with eval.enabled=false there is nothing to run")
    if spec.model.attn_implementation == "flash_attention_2" and spec.compute.accelerator == Accelerator.cpu:
        fail(
            "model.attn_implementation",
            "flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa on CPU",
        )
    if method.trains:
        _batching(spec)
    if method.trains and spec.compute.num_processes is not None:
        spec.method.accumulation_steps(spec.compute.num_processes)  # the global batch must divide
    if spec.method.init_from is None and spec.model.path is None and not spec.model.embedded and not spec.model.hub_id:
        fail("model", "set model.path to a local model directory or model.hub_id to a hub id")
    for key, value in remote_paths(spec).items():
        if not value.startswith("s3://") or "/" not in value[len("s3://") :].strip("/"):
            fail(key, f"'{value}': a URI must be s3://BUCKET/KEY (a SageMaker job reads it as an input channel)")
    for part in needed_parts(spec):
        key = PATH_KEYS[part]
        if getattr(spec.data, key) is None and spec.data.hub_id is None:
            fail(f"data.{key}", "is null and data.hub_id is null: give a file or a hub dataset id")


def _batching(spec: RunSpec) -> None:
    """method.batching=padding_free needs flash-attention, method.use_liger a GPU (the machine: preflight)."""
    m, attention = spec.method, spec.model.attn_implementation
    if m.batching == PADDING_FREE and (
        attention not in FLASH + ("auto",) or spec.compute.accelerator == Accelerator.cpu
    ):
        where = "compute.accelerator=cpu" if spec.compute.accelerator == Accelerator.cpu else f"{attention} attention"
        fail(
            "method.batching",
            f"padding_free needs flash-attention (model.attn_implementation=flash_attention_2 or auto, on a CUDA GPU "
            f"with flash-attn installed), not {where}: use method.batching=grouped (any attention)",
        )
    if m.use_liger and spec.compute.accelerator == Accelerator.cpu:
        fail("method.use_liger", "Liger kernels run on CUDA GPUs only (Triton; they fail on CPU): set it false here")


# The keys that name files: local paths, or s3:// URIs that a SageMaker job reads as input channels.
PATH_SETTINGS = (
    ("data", "train_path"),
    ("data", "pref_path"),
    ("data", "test_path"),
    ("model", "path"),
    ("model", "chat_template"),
    ("method", "init_from"),
    ("tuning", "spectrum_file"),
)


def remote_paths(spec: RunSpec) -> dict[str, str]:
    """`group.key` -> value, for the file settings that name a URI rather than a local path."""
    values = {f"{group}.{key}": getattr(getattr(spec, group), key, None) for group, key in PATH_SETTINGS}
    return {key: value for key, value in values.items() if isinstance(value, str) and "://" in value}


def needed_parts(spec: RunSpec) -> list[str]:
    """The data parts the run reads: its method's training part, and the test part when it evaluates."""
    from fcft.train.methods import get

    part = get(spec.method.name).part
    return [p for p in (part, "test" if spec.eval.enabled else None) if p]
