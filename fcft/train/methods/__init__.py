"""The method registry: one table of what each `method=` option is, read by validation, data preparation and
training alike.

Each module of this package declares `METHODS`, a tuple of `Method` entries; `registry()` collects them. A new
method is one module here (its settings schema, how rows become its dataset, its trainer) and one
`conf/method/<name>.yaml`. Modules import nothing heavy at import time: validation reads the table too.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Callable, Optional

from fcft.spec.options import EvalOnly


@dataclass(frozen=True)
class Method:
    name: str  # the `method=` option and its `method.name`
    settings: type  # the schema of its `method.*` keys: a dataclass with check() (fcft.spec.options.TrainerSettings)
    part: Optional[str] = None  # the When2Call part it trains on (train_sft, train_pref); None: no training
    # (rows, format, tokenizer, max_length) -> the tokenized datasets.Dataset its trainer takes
    dataset: Optional[Callable] = None
    # (spec, model, tokenizer, dataset, run_dir, device, callbacks) -> the trainer, after training
    train: Optional[Callable] = None

    @property
    def trains(self) -> bool:
        return self.train is not None


EVAL_ONLY = Method("none", EvalOnly)  # method=none: evaluate only


@cache
def registry() -> dict[str, Method]:
    """Every method, by name: method=none and those the modules of this package declare."""
    table = {EVAL_ONLY.name: EVAL_ONLY}
    for module in pkgutil.iter_modules(__path__):
        for method in getattr(importlib.import_module(f"{__name__}.{module.name}"), "METHODS", ()):
            if method.name in table:
                raise RuntimeError(f"method '{method.name}' is declared twice (fcft/train/methods/{module.name}.py)")
            table[method.name] = method
    return table


def get(name: str) -> Method:
    """The method called `name`; KeyError naming the valid ones."""
    table = registry()
    if name not in table:
        raise KeyError(f"unknown method '{name}'; valid methods: {', '.join(sorted(table))}")
    return table[name]
