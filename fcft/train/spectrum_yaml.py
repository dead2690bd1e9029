"""The published Spectrum file of unfrozen-parameter patterns: read it, check it, write it.

    unfrozen_parameters:
    - ^lm_head.weight$
    - ^model.embed_tokens.weight$
    # mlp.down_proj layers
    - model.layers.0.mlp.down_proj
    ...

Each entry is a regular expression that a trainer applies with `re.match(pattern, parameter_name)`: a
parameter trains when any pattern matches the start of its name, so a module name unfreezes its weight
(and bias). cognitivecomputations/spectrum writes these files and the published AWS recipe ships them;
fcft reads them (`tuning.spectrum_file`) and writes its own scans in the same form. Light: no torch here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

KEY = "unfrozen_parameters"


class SpectrumFileError(ValueError):
    """A Spectrum file that can't be used; the message names the file and the entry."""


def read(path: Path) -> list[str]:
    """The patterns of a Spectrum file, each checked to compile as a regular expression."""
    path = Path(path)
    if not path.is_file():
        raise SpectrumFileError(f"{path} does not exist")
    return parse(path.read_text(), str(path))


def parse(text: str, origin: str) -> list[str]:
    """The patterns of a Spectrum file's text; `origin` names it in errors."""
    import yaml

    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpectrumFileError(f"{origin} is not valid YAML: {err}") from None
    if not isinstance(content, dict) or KEY not in content:
        raise SpectrumFileError(f"{origin} must hold a mapping with the key '{KEY}' (a list of patterns)")
    patterns = content[KEY]
    if not isinstance(patterns, list) or not patterns:
        raise SpectrumFileError(f"{origin}: '{KEY}' must be a non-empty list of patterns")
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise SpectrumFileError(f"{origin}: {KEY}[{i}] must be a string, got {type(pattern).__name__}")
        try:
            re.compile(pattern)
        except re.error as err:
            raise SpectrumFileError(
                f"{origin}: {KEY}[{i}] '{pattern}' is not a valid regular expression ({err})"
            ) from None
    return patterns


def problem(path: Path) -> Optional[str]:
    """Why the file can't be used, or None when it can."""
    try:
        read(path)
    except SpectrumFileError as err:
        return str(err)
    return None


def render(always: list[str], by_type: dict[str, list[str]]) -> str:
    """The file's text: the `always` patterns, then per module type (sorted) a comment line and its modules."""
    lines = [f"{KEY}:"] + [f"- {pattern}" for pattern in always]
    for module_type in sorted(by_type):
        lines.append(f"# {module_type} layers")
        lines += [f"- {name}" for name in by_type[module_type]]
    return "\n".join(lines) + "\n"
