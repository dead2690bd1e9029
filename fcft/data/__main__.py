"""Look at the data as the model will see it.

    python -m fcft.data show [index=N] [overrides ...]

`show` composes the config like `python -m fcft` (same groups and overrides, e.g. `model=llama3.2_3b`,
`data.format=blog`, `data=chat_sample`, `data.test_path=FILE`) and prints, for row N (default 0):
- the training examples of train_sft row N and the preference pair of train_pref row N, in the training
  format, with their masks: the loss-bearing tokens wrapped in «...» and counted (skipped when that part has no
  source);
- the evaluation prompt of test row N with its four choices (gold marked), in the evaluation format;
- a check that test row N, rendered as a training example, has exactly the evaluation prompt: its prompt
  equals the MCQ prompt and its prompt + completion starts with it. Exit status 1 if not (as with
  `data.format` and `eval.format` set apart), 2 for an invalid config, bad data or no test row N.

The masks need the model's tokenizer (from model.path, the hub cache, or the embedded model's build); without it
the texts are shown alone. format=chat_template renders with it, so it can't do without.
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
        composed = _compose(overrides)
        # show reads data and formats only: the model's weights needn't be reachable (its format still counts).
        spec = run_spec.validate(_compose([*overrides, "model.embedded=true", "model.path=null"]))
    except run_spec.SpecError as err:
        print(f"fcft.data: invalid config: {err}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as err:  # unknown groups/options/keys, bad syntax
        print(f"fcft.data: invalid overrides: {err}", file=sys.stderr)
        return 2
    from fcft.data.chat import TemplateError
    from fcft.data.when2call import RowError

    try:
        return show(spec, index, _tokenizer(composed.model, spec.model))
    except (DataError, TemplateError) as err:
        where = f" (row {index})" if isinstance(err, RowError) else ""
        print(f"fcft.data: bad data{where}: {err}", file=sys.stderr)
        return 2


def _tokenizer(composed_model, model):
    """The model's tokenizer (with model.chat_template applied), or the reason it can't be loaded."""
    from fcft import models

    path, hub_id = composed_model.get("path"), composed_model.get("hub_id")
    source = path or (None if composed_model.get("embedded") else hub_id)
    try:
        return models.load_tokenizer(model, source or models.resolve_source(model))
    except Exception as err:  # offline hub, a missing directory: show the texts without masks
        return f"the model's tokenizer doesn't load from {source} ({type(err).__name__}: {err})"


def _compose(overrides: list[str]):
    """The config `python -m fcft OVERRIDES` composes (same conf/ directory and schema)."""
    from hydra import compose, initialize_config_dir

    from fcft.spec.hydra_schema import register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def show(spec, index: int, tokenizer) -> int:
    """Print row `index` as trained on and as scored; 0 when the training prompt is the evaluation prompt.
    `tokenizer`: the model's, or why it couldn't be loaded (a string)."""
    from fcft.data import formats
    from fcft.data.prepare import mcq_item, pref_example, sft_segments, training_row
    from fcft.data.when2call import DataError

    loaded = None if isinstance(tokenizer, str) else tokenizer
    if loaded is None and formats.CHAT_TEMPLATE in (spec.training_format, spec.eval_format):
        raise DataError(f"format chat_template renders with the model's tokenizer, and {tokenizer}")
    train_format = formats.get(spec.training_format, loaded, spec.model.name)
    eval_format = formats.get(spec.eval_format, loaded, spec.model.name)
    if loaded is None:
        print(f"(no token masks: {tokenizer})\n")
    chat = train_format.name == formats.CHAT_TEMPLATE
    single = None if chat else train_format.name
    row, missing = _row(spec, "train_sft", index, single)
    if row is None:
        print(f"== train_sft: {missing} ==\n")
    for number, example in enumerate(sft_segments(row, train_format) if row else [], start=1):
        title = f"train_sft row {index}, format {train_format.name}, example {number}"
        _section(title, {"text (loss on «...»)": _masked(loaded, example, chat)})
    row, missing = _row(spec, "train_pref", index, single)
    if row is None:
        print(f"== train_pref: {missing} ==\n")
    else:
        pair = pref_example(row, train_format)
        fields = {"prompt": pair["prompt"]}
        for answer in ("chosen", "rejected"):
            segments = [(pair["prompt"], False), (pair[answer], True)]
            fields[f"{answer} (loss on «...»)"] = _masked(loaded, segments, chat)
        _section(f"train_pref row {index}, format {train_format.name}", fields)

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

    trained = sft_segments(training_row(test_row), train_format)[0]
    prompt, text = trained[0][0], "".join(t for t, _ in trained)
    same, prefix = prompt == item.prompt, text.startswith(item.prompt)
    print(f"== check: test row {index} trained in {train_format.name}, scored in {eval_format.name} ==")
    print(f"training prompt == evaluation prompt: {'yes' if same else 'NO'}")
    print(f"training text starts with the evaluation prompt: {'yes' if prefix else 'NO'}")
    if train_format.name == formats.CHAT_TEMPLATE:
        rendered = train_format.render(test_row["tools"], training_row(test_row)["messages"])
        print(f"training text == apply_chat_template(conversation): {'yes' if rendered == text else 'NO'}")
    if not same:
        at = next(
            (i for i, (a, b) in enumerate(zip(prompt, item.prompt)) if a != b),
            min(len(prompt), len(item.prompt)),
        )
        print(
            f"first difference at character {at}: training {prompt[at : at + 40]!r} "
            f"vs evaluation {item.prompt[at : at + 40]!r}"
        )
    return 0 if same and prefix else 1


def _masked(tokenizer, segments: list[tuple[str, bool]], chat: bool) -> str:
    """The example's text with each run of loss-bearing tokens wrapped in «...», tokenized as training tokenizes it
    (chat_template: segment by segment; other formats: prompt and answer split as lm-eval splits them), and a count
    of tokens; the text segments alone without a tokenizer."""
    from fcft.data.chat import tokenize_segments
    from fcft.data.prepare import split_tokens

    if tokenizer is None:
        return "".join(f"«{t}»" if loss else t for t, loss in segments)
    if not chat:
        prompt_ids, answer_ids = split_tokens(tokenizer, [segments[0][0]], [segments[1][0]])[0]
        ids, mask = prompt_ids + answer_ids, [0] * len(prompt_ids) + [1] * len(answer_ids)
    else:
        batch = {"segments": [[t for t, _ in segments]], "loss": [[loss for _, loss in segments]]}
        tokenized = tokenize_segments(batch, tokenizer, max_length=1 << 30)
        ids, mask = tokenized["input_ids"][0], tokenized["completion_mask"][0]
    text, inside = "", False
    for token, loss in zip(ids, mask):
        if loss != inside:
            text, inside = text + ("«" if loss else "»"), bool(loss)
        text += tokenizer.decode([token])
    return f"{text}{'»' if inside else ''}\n({len(ids)} tokens, {sum(mask)} with loss)"


def _row(spec, part: str, index: int, single_turn: str | None = None) -> tuple[dict | None, str]:
    """(row `index` of the part, or None with the reason)."""
    from fcft.data.when2call import PATH_KEYS, load_part

    if getattr(spec.data, PATH_KEYS[part]) is None and spec.data.hub_id is None:
        return None, f"no source (data.{PATH_KEYS[part]} and data.hub_id are null)"
    loaded = load_part(spec.data, part, limit=index + 1, single_turn=single_turn)
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
