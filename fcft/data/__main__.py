"""Look at the data as the model will see it.

    python -m fcft.data show [index=N] [overrides ...]

`show` composes the config like `python -m fcft` (same groups and overrides, e.g. `model=llama3.2_3b`,
`data.format=blog`, `data.test_path=FILE`) and prints, for row N (default 0):
- the training example of train_sft row N and the preference pair of train_pref row N, in the training
  format (skipped when that part has no source);
- the evaluation prompt of test row N with its four choices (gold marked), in the evaluation format;
- a check that test row N, rendered as a training example, has exactly the evaluation prompt: its prompt
  equals the MCQ prompt and its prompt + completion starts with it. Exit status 1 if not (as with
  `data.format` and `eval.format` set apart), 2 for an invalid config, bad data or no test row N.
"""

from __future__ import annotations

import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the one python -m fcft reads
USAGE = "usage: python -m fcft.data show [index=N] [overrides ...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "show":
        print(USAGE, file=sys.stderr)
        return 2
    index, overrides = 0, []
    for arg in argv[1:]:
        if arg.startswith("index="):
            value = arg.split("=", 1)[1]
            if not value.isdigit():
                print(f"fcft.data: index must be a row number >= 0, got '{value}'", file=sys.stderr)
                return 2
            index = int(value)
        else:
            overrides.append(arg)

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from fcft import spec as run_spec
    from fcft.data.when2call import DataError

    try:
        # show reads data and formats only: the model's weights needn't be reachable (its format still counts).
        spec = run_spec.validate(_compose([*overrides, "model.embedded=true", "model.path=null"]))
    except run_spec.SpecError as err:
        print(f"fcft.data: invalid config: {err}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as err:  # unknown groups/options/keys, bad syntax
        print(f"fcft.data: invalid overrides: {err}", file=sys.stderr)
        return 2
    try:
        return show(spec, index)
    except DataError as err:
        print(f"fcft.data: bad data: {err}", file=sys.stderr)
        return 2


def _compose(overrides: list[str]):
    """The config `python -m fcft OVERRIDES` composes (same conf/ directory and schema)."""
    from hydra import compose, initialize_config_dir

    from fcft.spec.hydra_schema import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def show(spec, index: int) -> int:
    """Print row `index` as trained on and as scored; 0 when the training prompt is the evaluation prompt."""
    from fcft.data import formats
    from fcft.data.prepare import mcq_item, pref_example, sft_example, training_row

    train_format = formats.get(spec.training_format)
    eval_format = formats.get(spec.eval_format)
    for part, build in (("train_sft", sft_example), ("train_pref", pref_example)):
        row, missing = _row(spec, part, index)
        if row is None:
            print(f"== {part}: {missing} ==\n")
            continue
        _section(f"{part} row {index}, format {train_format.name}", build(row, train_format))

    test_row, missing = _row(spec, "test", index)
    if test_row is None:
        print(f"== test: {missing} ==")
        return 2
    item = mcq_item(test_row, eval_format)
    choices = {
        f"choice {i} {c}" + (" (gold)" if i == item.gold else ""): text
        for i, (c, text) in enumerate(zip(formats.CATEGORIES, item.choices))
    }
    _section(f"test row {index} (uuid {item.uuid}), format {eval_format.name}", {"prompt": item.prompt, **choices})

    trained = sft_example(training_row(test_row), train_format)
    same = trained["prompt"] == item.prompt
    prefix = (trained["prompt"] + trained["completion"]).startswith(item.prompt)
    print(f"== check: test row {index} trained in {train_format.name}, scored in {eval_format.name} ==")
    print(f"training prompt == evaluation prompt: {'yes' if same else 'NO'}")
    print(f"training text starts with the evaluation prompt: {'yes' if prefix else 'NO'}")
    if not same:
        at = next(
            (i for i, (a, b) in enumerate(zip(trained["prompt"], item.prompt)) if a != b),
            min(len(trained["prompt"]), len(item.prompt)),
        )
        print(
            f"first difference at character {at}: training {trained['prompt'][at : at + 40]!r} "
            f"vs evaluation {item.prompt[at : at + 40]!r}"
        )
    return 0 if same and prefix else 1


def _row(spec, part: str, index: int) -> tuple[dict | None, str]:
    """(row `index` of the part, or None with the reason)."""
    from fcft.data.when2call import PATH_KEYS, load_part

    if getattr(spec.data, PATH_KEYS[part]) is None and spec.data.hub_id is None:
        return None, f"no source (data.{PATH_KEYS[part]} and data.hub_id are null)"
    loaded = load_part(spec.data, part, limit=index + 1)
    if len(loaded.rows) <= index:
        return None, f"{loaded.source} has no usable row {index} (its last is {len(loaded.rows) - 1})"
    return loaded.rows[index], ""


def _section(title: str, fields: dict) -> None:
    print(f"== {title} ==")
    for name, text in fields.items():
        print(f"--- {name} ---\n{text}")
    print()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
