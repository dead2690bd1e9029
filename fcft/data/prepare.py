"""Normalised When2Call rows -> what trainers and the evaluator consume, through one prompt format.

- `sft_example`: prompt + completion (the answer in the format's encoding, then its end-of-turn text).
- `pref_example`: prompt + chosen + rejected, over the same prompt, for DPO/MPO.
- `mcq_item`: prompt, the four choices in `CATEGORIES` order, and the gold index (what NVIDIA's lm-eval
  task builds per row: `McqItem.as_doc`).
- `split_tokens`: (prompt ids, completion ids) with lm-eval's `_encode_pair` rule, for training and scoring.
- `sft_dataset` / `pref_dataset`: the tokenized SFT set (input_ids + completion_mask) and preference set
  (prompt_ids, chosen_ids, rejected_ids), batched through `datasets.map` and cached on disk per
  (rows, format, tokenizer, max_length).

The same row always gets the same prompt string whether it is trained on or scored.
"""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from typing import Callable

from fcft.data import cache
from fcft.data.formats import CATEGORIES, Format
from fcft.data.when2call import DataError

log = logging.getLogger(__name__)


def answer_text(answer: str, fmt: Format) -> str:
    """An assistant answer from the training data, tool calls re-rendered in the format's encoding."""
    return fmt.answer(answer)


def sft_example(row: dict, fmt: Format) -> dict:
    return {
        "prompt": fmt.prompt(row["tools"], row["question"]),
        "completion": answer_text(row["answer"], fmt) + fmt.end_of_turn,
    }


def pref_example(row: dict, fmt: Format) -> dict:
    """A preference pair for DPO/MPO: the SFT prompt, and both answers ended like SFT completions."""
    return {
        "prompt": fmt.prompt(row["tools"], row["question"]),
        "chosen": answer_text(row["chosen"], fmt) + fmt.end_of_turn,
        "rejected": answer_text(row["rejected"], fmt) + fmt.end_of_turn,
    }


def training_row(test_row: dict) -> dict:
    """A test row as an SFT row answering with its correct answer (to compare training and evaluation)."""
    text = test_row["answers"][test_row["correct_answer"]]
    if test_row["correct_answer"] == "tool_call":
        text = f"<TOOLCALL>[{text}]</TOOLCALL>"
    return {"tools": test_row["tools"], "question": test_row["question"], "answer": text}


@dataclass(frozen=True)
class McqItem:
    uuid: str
    prompt: str
    choices: tuple[str, ...]  # one per CATEGORIES entry, same order
    gold: int
    has_tools: bool  # the row offered tools (a tool call with none offered is a hallucination)

    def as_doc(self) -> dict:
        """The fields NVIDIA's `process_docs_*` add to a row (the task's doc_to_text/choice/target)."""
        return {"prompt": self.prompt, "choices": list(self.choices), "target_index": self.gold}


def mcq_item(row: dict, fmt: Format) -> McqItem:
    return McqItem(
        uuid=row["uuid"],
        prompt=fmt.prompt(row["tools"], row["question"]),
        choices=tuple(fmt.choices(row["answers"])),
        gold=CATEGORIES.index(row["correct_answer"]),
        has_tools=bool(row["tools"]),
    )


# --- tokenization -------------------------------------------------------------------------------------


def split_tokens(tokenizer, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per pair, as lm-eval's `_encode_pair` splits them.

    The rule: trailing whitespace of the prompt moves to the completion; the prompt is encoded alone and
    the completion's ids are those of prompt+completion past the prompt's length.

    Done in one pass over the long text instead of two: a `tokenizers` tokenizer encodes the text between
    its added tokens (`<|im_start|>`, `<|eot_id|>`, ...) piece by piece, so a prompt that ends
    `HEAD<special>TAIL` gives ids(HEAD<special>) + ids(TAIL), and the completion is
    ids(TAIL + moved whitespace + completion) past len(ids(TAIL)). The HEAD (nearly all of the prompt) is
    encoded once, shared by all pairs with the same prompt. The first call per tokenizer checks the
    shortcut against the plain two-encodings rule and keeps the plain rule if they differ.
    """
    if not prompts:
        return []
    pieces = [_pieces(tokenizer, p, c) for p, c in zip(prompts, completions)]
    fast = _assemble(tokenizer, pieces)
    checked = _SHORTCUT_OK.get(tokenizer)
    cut = [i for i, (head, _, _) in enumerate(pieces) if head][:2]  # uncut pairs are split plainly anyway
    if checked is None and cut:
        plain = _split_plainly(tokenizer, [prompts[i] for i in cut], [completions[i] for i in cut])
        checked = _SHORTCUT_OK[tokenizer] = [fast[i] for i in cut] == plain
        if not checked:
            log.warning(
                "%s doesn't encode the text between its added tokens piece by piece: "
                "encoding each prompt twice (slower)",
                type(tokenizer).__name__,
            )
    return fast if checked is not False else _split_plainly(tokenizer, prompts, completions)


_SHORTCUT_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BOUNDARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TAIL_WINDOW = 256  # characters searched for the prompt's last added token


def _split_plainly(tokenizer, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
    """lm-eval's `_encode_pair`, literally: encode the stripped prompt, and prompt + completion."""
    moved = [(p.rstrip(), p[len(p.rstrip()) :] + c) for p, c in zip(prompts, completions)]
    prompt_ids = tokenizer([p for p, _ in moved], add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer([p + c for p, c in moved], add_special_tokens=False)["input_ids"]
    return [(ctx, whole[len(ctx) :]) for ctx, whole in zip(prompt_ids, whole_ids)]


def _boundary_pattern(tokenizer):
    """A regex of the tokenizer's added tokens that cut text into independently encoded pieces."""
    pattern = _BOUNDARIES.get(tokenizer)
    if pattern is None:
        tokens = [
            t.content
            for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
            if not (t.lstrip or t.rstrip or t.single_word or t.normalized)
        ]
        alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        pattern = _BOUNDARIES[tokenizer] = re.compile(alternatives) if alternatives else None
    return pattern


def _pieces(tokenizer, prompt: str, completion: str) -> tuple[str, str, str]:
    """(head, tail, tail + moved whitespace + completion): head ends with the stripped prompt's last added
    token within reach (or is empty), tail is the rest of the stripped prompt."""
    context = prompt.rstrip()
    rest = prompt[len(context) :] + completion
    pattern, cut = _boundary_pattern(tokenizer), 0
    if pattern is not None:
        start = max(0, len(context) - _TAIL_WINDOW)
        for match in pattern.finditer(context, start):
            cut = match.end()
    return context[:cut], context[cut:], context[cut:] + rest


def _assemble(tokenizer, pieces: list[tuple[str, str, str]]) -> list[tuple[list[int], list[int]]]:
    heads = list(dict.fromkeys(head for head, _, _ in pieces))  # each distinct head encoded once
    head_ids = dict(zip(heads, tokenizer(heads, add_special_tokens=False)["input_ids"]))
    tail_ids = tokenizer([tail for _, tail, _ in pieces], add_special_tokens=False)["input_ids"]
    rest_ids = tokenizer([rest for _, _, rest in pieces], add_special_tokens=False)["input_ids"]
    return [(head_ids[head] + tail, rest[len(tail) :]) for (head, _, _), tail, rest in zip(pieces, tail_ids, rest_ids)]


def tokenize_sft(batch: dict, tokenizer, max_length: int) -> dict:
    """Batched `datasets.map` function: prompt/completion -> input_ids, completion_mask, fits."""
    pairs = split_tokens(tokenizer, batch["prompt"], batch["completion"])
    return {
        "input_ids": [p + c for p, c in pairs],
        "completion_mask": [[0] * len(p) + [1] * len(c) for p, c in pairs],
        "fits": [len(p) + len(c) <= max_length for p, c in pairs],
    }


def tokenize_pref(batch: dict, tokenizer, max_length: int) -> dict:
    """Batched `datasets.map` function: prompt/chosen/rejected -> prompt_ids, chosen_ids, rejected_ids, fits."""
    n = len(batch["prompt"])
    pairs = split_tokens(tokenizer, batch["prompt"] * 2, batch["chosen"] + batch["rejected"])  # one pass
    chosen, rejected = pairs[:n], pairs[n:]
    return {
        "prompt_ids": [p for p, _ in chosen],
        "chosen_ids": [c for _, c in chosen],
        "rejected_ids": [r for _, r in rejected],
        "fits": [len(p) + max(len(c), len(r)) <= max_length for (p, c), (_, r) in zip(chosen, rejected)],
    }


@dataclass(frozen=True)
class _Part:
    """How one kind of training row is rendered and tokenized."""

    name: str  # in messages and cache entry names
    example: Callable[[dict, Format], dict]
    tokenize: Callable[..., dict]
    features: dict  # column -> "int32"/"int8" sequences, for compact storage


SFT = _Part("SFT", sft_example, tokenize_sft, {"input_ids": "int32", "completion_mask": "int8"})
PREFERENCE = _Part(
    "preference", pref_example, tokenize_pref, {"prompt_ids": "int32", "chosen_ids": "int32", "rejected_ids": "int32"}
)


def sft_dataset(rows: list[dict], fmt: Format, tokenizer, max_length: int, use_cache: bool = True):
    """The tokenized SFT set (input_ids + completion_mask) for SFTTrainer; see `prepared`."""
    return prepared(SFT, rows, fmt, tokenizer, max_length, use_cache)


def pref_dataset(rows: list[dict], fmt: Format, tokenizer, max_length: int, use_cache: bool = True):
    """The tokenized preference pairs (prompt_ids, chosen_ids, rejected_ids) for DPOTrainer; see `prepared`."""
    return prepared(PREFERENCE, rows, fmt, tokenizer, max_length, use_cache)


def prepared(part: _Part, rows: list[dict], fmt: Format, tokenizer, max_length: int, use_cache: bool = True):
    """A tokenized `datasets.Dataset` of `rows`; rows longer than max_length are left out, loudly.

    Tokenized once per (rows, format, tokenizer, max_length): later calls load it from $FCFT_CACHE/data.
    """
    fingerprint = cache.key(rows=rows, fmt=fmt, tokenizer=tokenizer, max_length=max_length, part=part.name)

    def build():
        dataset = _tokenized(part, rows, fmt, tokenizer, max_length, fingerprint)
        return dataset, {"format": fmt.name, "max_length": max_length, "rows": len(rows), "kept": len(dataset)}

    if use_cache:
        dataset, meta = cache.load_or_build(f"{part.name.lower()}-{fmt.name}-{fingerprint}", build)
    else:
        dataset, meta = build()
    if meta["kept"] < meta["rows"]:
        log.warning(
            "%d of %d %s rows are longer than model.max_length=%d tokens and were left out",
            meta["rows"] - meta["kept"],
            meta["rows"],
            part.name,
            max_length,
        )
    if not meta["kept"]:
        raise DataError(f"every {part.name} row is longer than model.max_length={max_length} tokens")
    return dataset


def _tokenized(part: _Part, rows: list[dict], fmt: Format, tokenizer, max_length: int, fingerprint: str):
    from datasets import Dataset, Features, Sequence, Value

    examples = [part.example(row, fmt) for row in rows]
    texts = Dataset.from_dict({key: [e[key] for e in examples] for key in examples[0]})
    features = Features({**{k: Sequence(Value(t)) for k, t in part.features.items()}, "fits": Value("bool")})
    tokenized = texts.map(
        part.tokenize,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
        remove_columns=texts.column_names,
        features=features,
        new_fingerprint=fingerprint,  # spares datasets from hashing the tokenizer
        desc=f"Tokenizing {part.name} rows ({fmt.name})",
    )
    return tokenized.filter(lambda fits: fits, input_columns="fits", batched=True).remove_columns("fits")
