"""Normalised When2Call rows -> what trainers and the evaluator consume, through one prompt format.

- `sft_example`: prompt + completion (the answer in the format's encoding, then its end-of-turn token).
- `mcq_item`: prompt, the four choices in `CATEGORIES` order, and the gold index.
- `tokenize_sft`: input_ids + completion_mask with the same token split the evaluator uses: the prompt
  is encoded alone, the completion is what encoding prompt+completion adds after the prompt's tokens.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from fcft.data.formats import CATEGORIES, Format
from fcft.data.when2call import DataError

log = logging.getLogger(__name__)

TOOLCALL = re.compile(r"^\s*<TOOLCALL>(.*)</TOOLCALL>\s*$", re.DOTALL)


def parse_toolcall(text: str) -> list[dict] | None:
    """The calls of a `<TOOLCALL>[...]</TOOLCALL>` answer, or None when the answer is plain text."""
    match = TOOLCALL.match(text)
    if not match:
        return None
    calls = json.loads(match.group(1))
    return calls if isinstance(calls, list) else [calls]


def answer_text(answer: str, fmt: Format) -> str:
    """An assistant answer from the training data, tool calls re-rendered in the format's encoding."""
    calls = parse_toolcall(answer)
    return answer if calls is None else fmt.tool_calls(calls)


def sft_example(row: dict, fmt: Format) -> dict:
    return {"prompt": fmt.prompt(row["tools"], row["question"]), "completion": answer_text(row["answer"], fmt) + fmt.end_of_turn}


@dataclass(frozen=True)
class McqItem:
    uuid: str
    prompt: str
    choices: tuple[str, ...]  # one per CATEGORIES entry, same order
    gold: int


def mcq_item(row: dict, fmt: Format) -> McqItem:
    answers = dict(row["answers"])
    answers["tool_call"] = fmt.tool_calls([json.loads(answers["tool_call"])])
    return McqItem(
        uuid=row["uuid"],
        prompt=fmt.prompt(row["tools"], row["question"]),
        choices=tuple(answers[c] for c in CATEGORIES),
        gold=CATEGORIES.index(row["correct_answer"]),
    )


def split_tokens(tokenizer, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per pair, as lm-eval's `_encode_pair` splits them.

    Trailing whitespace of the prompt moves to the completion; the prompt is encoded alone and the
    completion's ids are those of prompt+completion past the prompt's length.
    """
    moved = [(p.rstrip(), p[len(p.rstrip()) :] + c) for p, c in zip(prompts, completions)]
    prompt_ids = tokenizer([p for p, _ in moved], add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer([p + c for p, c in moved], add_special_tokens=False)["input_ids"]
    return [(ctx, whole[len(ctx) :]) for ctx, whole in zip(prompt_ids, whole_ids)]


def tokenize_sft(batch: dict, tokenizer, max_length: int) -> dict:
    """Batched `datasets.map` function: prompt/completion -> input_ids, completion_mask, fits."""
    pairs = split_tokens(tokenizer, batch["prompt"], batch["completion"])
    return {
        "input_ids": [p + c for p, c in pairs],
        "completion_mask": [[0] * len(p) + [1] * len(c) for p, c in pairs],
        "fits": [len(p) + len(c) <= max_length for p, c in pairs],
    }


def sft_dataset(rows: list[dict], fmt: Format, tokenizer, max_length: int):
    """A tokenized `datasets.Dataset` for SFTTrainer; rows longer than max_length are left out, loudly."""
    from datasets import Dataset

    examples = Dataset.from_list([sft_example(row, fmt) for row in rows])
    tokenized = examples.map(
        tokenize_sft,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
        remove_columns=examples.column_names,
        desc=f"Tokenizing SFT rows ({fmt.name})",
    )
    kept = tokenized.filter(lambda fits: fits, input_columns="fits").remove_columns("fits")
    if len(kept) < len(tokenized):
        log.warning("%d of %d SFT rows are longer than model.max_length=%d tokens and were left out",
                    len(tokenized) - len(kept), len(tokenized), max_length)  # fmt: skip
    if not len(kept):
        raise DataError(f"every SFT row is longer than model.max_length={max_length} tokens")
    return kept


def pref_example(row: dict, fmt: Format) -> dict:
    """A preference pair: the prompt, and the chosen and rejected answers each ending with the format's end of turn."""
    return {
        "prompt": fmt.prompt(row["tools"], row["question"]),
        "chosen": answer_text(row["chosen"], fmt) + fmt.end_of_turn,
        "rejected": answer_text(row["rejected"], fmt) + fmt.end_of_turn,
    }
