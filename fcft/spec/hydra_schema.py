"""What Hydra composes (`fcft_schema` in conf/config.yaml): the groups as open mappings, and experiments.

Each group is left open at composition (`method.beta=0.1` composes even with method=sft), so that fcft's own
check (check.py) refuses what doesn't belong, naming the option that does take the key; unknown top-level
keys are still refused by Hydra. `+experiment=NAME` adds an experiment: several runs (stages) in order per job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf


@dataclass
class StageSpec:
    """One run of an experiment's job: its overrides on top of the job's, and the stage it starts from."""

    name: str = "???"
    overrides: List[str] = field(default_factory=list)  # e.g. [method=sft, tuning=spectrum]
    init_from: Optional[str] = None  # an earlier stage: its run directory becomes method.init_from


@dataclass
class PublishedRow:
    label: str = "???"  # the model's name in the published table
    values: Dict[str, float] = field(default_factory=dict)  # stage -> the published number, in %


@dataclass
class TableSpec:
    """The report's results table: a row per model, a column per stage, cells = eval `metric`."""

    metric: str = "acc_norm"
    columns: Dict[str, str] = field(default_factory=dict)  # stage -> column title, in order
    published: Dict[str, PublishedRow] = field(default_factory=dict)  # model config name -> its published row


@dataclass
class ExperimentSpec:
    name: str = "???"
    stages: List[StageSpec] = field(default_factory=list)  # run in order in each job, each its own run directory
    table: Optional[TableSpec] = None


@dataclass
class ConfigSchema:
    model: Dict[str, Any] = field(default_factory=dict)
    method: Dict[str, Any] = field(default_factory=dict)
    tuning: Dict[str, Any] = field(default_factory=dict)
    compute: Dict[str, Any] = field(default_factory=dict)
    launcher: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    eval: Dict[str, Any] = field(default_factory=dict)
    tracking: Dict[str, Any] = field(default_factory=dict)
    experiment: Optional[ExperimentSpec] = None


def register_schema() -> None:
    """Make `fcft_schema` available to Hydra's defaults list (conf/config.yaml)."""
    from hydra.core.config_store import ConfigStore

    schema = OmegaConf.structured(ConfigSchema)
    for group in ("model", "method", "tuning", "compute", "launcher", "data", "eval", "tracking"):
        OmegaConf.set_struct(schema[group], False)  # open: fcft's check names the option a key belongs to
    ConfigStore.instance().store(name="fcft_schema", node=schema)
