"""Normalised rows -> what trainers and the evaluator consume, through one prompt format.

- `sft_example`: prompt + completion (the answer in the format's encoding, then its end-of-turn text); with
  format=chat_template a conversation's examples are text segments with their loss (fcft/data/chat.py).
- `pref_example`: prompt + chosen + rejected, over the same prompt, for DPO/MPO.
- `mcq_item`: prompt, the four choices in `CATEGORIES` order, and the gold index (what NVIDIA's lm-eval
  task builds per row: `McqItem.as_doc`).
- `split_tokens`: (prompt ids, completion ids) with lm-eval's `_encode_pair` rule, for training and scoring.
- `sft_dataset` / `pref_dataset`: the tokenized SFT set (input_ids + completion_mask) and preference set
  (prompt_ids, chosen_ids, rejected_ids), tokenized in batches and cached on disk per
  (rows, format, tokenizer, max_length).

The same row always gets the same prompt string whether it is trained on or scored.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
from dataclasses import dataclass
from typing import Callable

from fcft.data import cache, chat, encode
from fcft.data.formats import CATEGORIES, Format, canonical_json
from fcft.data.messages import single_turn
from fcft.data.when2call import DataError, RowError

log = logging.getLogger(__name__)


def answer_text(message: dict, fmt: Format) -> str:
    """An assistant message's answer in the format's encoding: its tool calls, or its text."""
    calls = message.get("tool_calls")
    return fmt.tool_calls([canonical_json(call) for call in calls]) if calls else message["content"]


def sft_example(row: dict, fmt: Format) -> dict:
    question, answer = single_turn(row["messages"], "messages", fmt.name)
    return {"prompt": fmt.prompt(row["tools"], question), "completion": answer_text(answer, fmt) + fmt.end_of_turn}


def pref_example(row: dict, fmt) -> dict:
    """A preference pair for DPO/MPO: the SFT prompt, and both answers ended like SFT completions."""
    if fmt.name == chat.NAME:
        return fmt.pref_example(row)
    question, _ = single_turn(row["prompt"], "prompt", fmt.name)
    return {
        "prompt": fmt.prompt(row["tools"], question),
        "chosen": answer_text(row["chosen"], fmt) + fmt.end_of_turn,
        "rejected": answer_text(row["rejected"], fmt) + fmt.end_of_turn,
    }


def training_row(test_row: dict) -> dict:
    """A test row as an SFT row answering with its correct answer (to compare training and evaluation)."""
    correct = test_row["correct_answer"]
    text = test_row["answers"][correct]
    answer = (
        {"role": "assistant", "content": "", "tool_calls": [json.loads(text)]}
        if correct == "tool_call"
        else {"role": "assistant", "content": text}
    )
    return {"tools": test_row["tools"], "messages": [{"role": "user", "content": test_row["question"]}, answer]}


def sft_segments(row: dict, fmt) -> list[list[tuple[str, bool]]]:
    """A training row's examples as text segments, each with whether it carries loss (one example per row but in
    chat_template, where a conversation may give one per assistant turn)."""
    if fmt.name == chat.NAME:
        return fmt.sft_examples(row)
    example = sft_example(row, fmt)
    return [[(example["prompt"], False), (example["completion"], True)]]


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


def mcq_item(row: dict, fmt) -> McqItem:
    if fmt.name == chat.NAME:
        prompt, choices = fmt.mcq(row)
    else:
        prompt, choices = fmt.prompt(row["tools"], row["question"]), fmt.choices(row["answers"])
    return McqItem(
        uuid=row["uuid"],
        prompt=prompt,
        choices=tuple(choices),
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
    prompt_ids = encode.ids(tokenizer, [p for p, _ in moved])
    whole_ids = encode.ids(tokenizer, [p + c for p, c in moved])
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
    head_ids = dict(zip(heads, encode.ids(tokenizer, heads)))
    tail_ids = encode.ids(tokenizer, [tail for _, tail, _ in pieces])
    rest_ids = encode.ids(tokenizer, [rest for _, _, rest in pieces])
    return [(head_ids[head] + tail, rest[len(tail) :]) for (head, _, _), tail, rest in zip(pieces, tail_ids, rest_ids)]


def tokenize_sft(batch: dict, tokenizer, max_length: int):
    """A batch of prompt/completion columns -> input_ids, completion_mask, fits (an Arrow table)."""
    import numpy as np

    pairs = split_tokens(tokenizer, batch["prompt"], batch["completion"])
    lengths = np.array([(len(p), len(c)) for p, c in pairs], dtype=np.int64).reshape(-1, 2)
    mask = np.repeat(np.tile(np.array([0, 1], dtype=np.int8), len(pairs)), lengths.ravel())
    return _table(
        input_ids=_list_array(_flat([ids for pair in pairs for ids in pair], np.int32), lengths.sum(axis=1)),
        completion_mask=_list_array(mask, lengths.sum(axis=1)),
        fits=lengths.sum(axis=1) <= max_length,
    )


def tokenize_pref(batch: dict, tokenizer, max_length: int):
    """A batch of prompt/chosen/rejected columns -> prompt_ids, chosen_ids, rejected_ids, fits (an
    Arrow table)."""
    import numpy as np

    n = len(batch["prompt"])
    pairs = split_tokens(tokenizer, batch["prompt"] * 2, batch["chosen"] + batch["rejected"])  # one pass
    chosen, rejected = pairs[:n], pairs[n:]
    columns = {"prompt_ids": [p for p, _ in chosen], "chosen_ids": [c for _, c in chosen]}
    columns["rejected_ids"] = [r for _, r in rejected]
    return _table(
        **{key: _list_array(_flat(lists, np.int32), list(map(len, lists))) for key, lists in columns.items()},
        fits=np.array([len(p) + max(len(c), len(r)) <= max_length for (p, c), (_, r) in zip(chosen, rejected)]),
    )


def _table(**columns):
    """The columns (Arrow arrays, numpy arrays) as one Arrow table."""
    import pyarrow as pa

    return pa.table(
        {key: pa.array(column) if not isinstance(column, pa.Array) else column for key, column in columns.items()}
    )


def _flat(lists: list[list[int]], dtype):
    """The lists' values one after another, as a numpy array."""
    import itertools

    import numpy as np

    return np.fromiter(itertools.chain.from_iterable(lists), dtype=dtype, count=sum(map(len, lists)))


def _list_array(values, lengths):
    """An Arrow list column: consecutive rows of `lengths` values. Built from numpy: `datasets` converting Python
    lists element by element took a tenth of the preparation."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(offsets, values)


_BATCH = 1000  # examples per tokenizer call: enough for its threads to share


@dataclass(frozen=True)
class _Part:
    """How one kind of training row is rendered and tokenized."""

    name: str  # in messages and cache entry names
    examples: Callable[[dict, Format], list[dict]]  # a row -> its examples' text columns
    tokenize: Callable[..., dict]
    features: dict  # column -> "int32"/"int8" sequences, for compact storage


def _chat_sft_examples(row: dict, fmt) -> list[dict]:
    return [{"segments": [t for t, _ in ex], "loss": [loss for _, loss in ex]} for ex in fmt.sft_examples(row)]


_SFT_FEATURES = {"input_ids": "int32", "completion_mask": "int8"}
_PREF_FEATURES = {"prompt_ids": "int32", "chosen_ids": "int32", "rejected_ids": "int32"}
SFT = _Part("SFT", lambda row, fmt: [sft_example(row, fmt)], tokenize_sft, _SFT_FEATURES)
PREFERENCE = _Part("preference", lambda row, fmt: [pref_example(row, fmt)], tokenize_pref, _PREF_FEATURES)
CHAT_SFT = _Part("SFT", _chat_sft_examples, chat.tokenize_segments, _SFT_FEATURES)
CHAT_PREFERENCE = _Part("preference", lambda row, fmt: [fmt.pref_example(row)], chat.tokenize_pref, _PREF_FEATURES)


def sft_dataset(rows: list[dict], fmt, tokenizer, max_length: int, use_cache: bool = True):
    """The tokenized SFT set (input_ids + completion_mask) for SFTTrainer; see `prepared`."""
    return prepared(CHAT_SFT if fmt.name == chat.NAME else SFT, rows, fmt, tokenizer, max_length, use_cache)


def pref_dataset(rows: list[dict], fmt, tokenizer, max_length: int, use_cache: bool = True):
    """The tokenized preference pairs (prompt_ids, chosen_ids, rejected_ids) for DPOTrainer; see `prepared`."""
    part = CHAT_PREFERENCE if fmt.name == chat.NAME else PREFERENCE
    return prepared(part, rows, fmt, tokenizer, max_length, use_cache)


def prepared(part: _Part, rows: list[dict], fmt, tokenizer, max_length: int, use_cache: bool = True):
    """A tokenized `datasets.Dataset` of `rows`; examples longer than max_length are left out, loudly. A row the
    format can't render raises RowError with its index.

    Tokenized once per (rows, format, tokenizer, max_length): later calls load it from $FCFT_CACHE/data.
    """
    fingerprint = cache.key(rows=rows, fmt=fmt, tokenizer=tokenizer, max_length=max_length, part=part.name)

    def build():
        dataset, examples = _tokenized(part, rows, fmt, tokenizer, max_length, fingerprint)
        if not len(dataset):  # checked before caching: an empty dataset isn't worth an entry
            raise DataError(f"every {part.name} example is longer than model.max_length={max_length} tokens")
        return dataset, {"format": fmt.name, "max_length": max_length, "rows": examples, "kept": len(dataset)}

    if use_cache:
        dataset, meta = cache.load_or_build(f"{part.name.lower()}-{fmt.name}-{fingerprint}", build)
    else:
        dataset, meta = build()
    if meta["kept"] < meta["rows"]:
        log.warning(
            "%d of %d %s examples are longer than model.max_length=%d tokens and were left out",
            meta["rows"] - meta["kept"],
            meta["rows"],
            part.name,
            max_length,
        )
    return dataset


def examples(part: _Part, rows: list[dict], fmt) -> list[dict]:
    """Every row's examples (text columns); RowError names a row the format can't render by its index."""
    found = []
    for index, row in enumerate(rows):
        try:
            found += part.examples(row, fmt)
        except DataError as err:
            raise RowError(index, str(err)) from None
    return found


def _tokenized(part: _Part, rows: list[dict], fmt, tokenizer, max_length: int, fingerprint: str):
    """(the tokenized examples that fit, how many examples the rows gave).

    Batches of examples go straight to the tokenizer and their Arrow tables are joined in memory: building a
    text dataset and running `datasets.map` over it cost a tenth of the preparation in copies and writes."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Dataset, DatasetInfo, Features, Sequence, Value
    from datasets.table import InMemoryTable
    from datasets.utils.tqdm import tqdm

    texts = examples(part, rows, fmt)
    features = Features({key: Sequence(Value(kind)) for key, kind in part.features.items()})
    tables = []
    with tqdm(total=len(texts), unit=" examples", desc=f"Tokenizing {part.name} rows ({fmt.name})") as bar:
        for start in range(0, len(texts), _BATCH):
            chunk = texts[start : start + _BATCH]
            table = part.tokenize({key: [e[key] for e in chunk] for key in chunk[0]}, tokenizer, max_length)
            table = table if isinstance(table, pa.Table) else _table(**table)
            if not pc.all(table["fits"]).as_py():
                table = table.filter(table["fits"])
            tables.append(table.drop_columns(["fits"]).cast(features.arrow_schema))
            bar.update(len(chunk))
    table = InMemoryTable(pa.concat_tables(tables))
    return Dataset(table, info=DatasetInfo(features=features), fingerprint=fingerprint), len(texts)
