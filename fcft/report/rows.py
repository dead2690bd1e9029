"""The runs of a sweep as its report shows them: a Row per run (its outcome, model, command-line overrides and
experiment), and which overrides were swept (they differ between runs) or shared by every run.

Read from the run directories alone: the spec (rundir.SPEC) names the model; Hydra's composed config, in
rundir.HYDRA, holds the +experiment (stages, results table) and stands in for the spec of a run that failed
validation before writing one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.eval import metrics as eval_metrics
from fcft.runs import outcomes
from fcft.runs.outcomes import Outcome


@dataclass
class Row:
    """One run of the sweep."""

    outcome: Outcome
    model: str
    overrides: list[str]  # the job's command-line overrides (for a stage, its job's: not the stage's own)
    experiment: Optional[dict] = field(default=None, repr=False)  # the run's +experiment config, if any

    @property
    def values(self) -> dict:
        """override key -> value, as given on the command line."""
        return dict(kv for kv in map(_key_value, self.overrides) if kv)

    @property
    def eval(self) -> dict:
        return ((self.outcome.metrics or {}).get("eval") or {}) if self.outcome.ok else {}

    @property
    def generate(self) -> dict:
        """The generate block (eval.generate) with the judge's accuracy beside the tool-call scores; {} if none."""
        block = ((self.outcome.metrics or {}).get("generate") or {}) if self.outcome.ok else {}
        return eval_metrics.generate_scalars(block) if block else {}

    @property
    def train(self) -> dict:
        return ((self.outcome.metrics or {}).get("train") or {}) if self.outcome.ok else {}


def read(outcome: Outcome) -> Row:
    composed = _yaml(outcome.run_dir / rundir.HYDRA_CONFIG)
    spec = _yaml(outcome.run_dir / rundir.SPEC) or composed
    model = str((spec.get("model") or {}).get("name") or "")
    job_overrides = outcomes.overrides(outcome.run_dir.parent) if outcome.stage else outcome.overrides
    return Row(outcome, model, job_overrides, composed.get("experiment"))


def swept(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The override keys whose values differ between runs, in command-line order, and the overrides every run
    shares. A stage's own overrides (method=sft, its init_from) are what the experiment does, not what was swept."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.values if k not in keys]
    differ = [key for key in keys if len({r.values.get(key) for r in rows}) > 1]
    shared = set.intersection(*(set(r.overrides) for r in rows)) if rows else set()
    fixed = [o for o in (rows[0].overrides if rows else []) if o in shared]
    return differ, fixed


def changed(row: Row, swept: list[str]) -> str:
    """What sets the run apart: its stage and swept values ("stage sft, method.beta=0.1")."""
    parts = ([f"stage {row.outcome.stage}"] if row.outcome.stage else []) + [
        f"{k}={row.values[k]}" for k in swept if k in row.values
    ]
    return ", ".join(parts)


def _key_value(override: str) -> Optional[tuple[str, str]]:
    if override.startswith("~") or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return key.lstrip("+"), value


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
    except Exception:  # a broken file: the report says what it can without it
        return {}
