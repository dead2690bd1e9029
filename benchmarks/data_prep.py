"""Data preparation: 15,000 When2Call-shaped SFT rows -> tokenized SFT dataset, cold and warm, against a naive
per-row baseline measured in the same run.

    python benchmarks/data_prep.py                 # 15,000 rows (When2Call's train_sft size), format qwen2_5
    python benchmarks/data_prep.py --rows 2000 --format llama3_2

The rows come from fcft.data.make_sample's generator, with tools grown to When2Call's real sizes (the 90
real test rows average 3.3 tools and ~2,900 characters of tool JSON per row). The tokenizer is fcft's tiny
one (byte-level BPE, Qwen2 pre-tokenizer, 1,685-token vocabulary: no hub needed; it cuts text into more tokens
than Qwen's 151k vocabulary, so it is the slower case). Timed:

- load:   write the rows to a .jsonl, read and validate them (`load_part`)
- naive:  per row, render the example and encode prompt and prompt+completion separately (lm-eval's rule,
          no batching), then `Dataset.from_list`
- floor:  one batched encoding of each example's full text through the tokenizer's call, nothing else
- fast:   the same texts through the `tokenizers` backend's `encode_batch_fast`, ids only: the floor for any
          preparation that encodes every text whole
- cold:   `sft_dataset` with an empty cache (render, batched map with the one-pass split, save to disk)
- warm:   `sft_dataset` again (hash the inputs, load the saved dataset)

It checks that naive and fcft give the same token ids and masks (every row), then prints times and ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL_TOOLS_PER_ROW = 3.3  # the 90 real When2Call test rows in ../shared
REAL_TOOL_CHARS = 880  # mean characters of one tool's JSON there


def generate_rows(n: int, seed: int = 0) -> list[dict]:
    """When2Call-shaped SFT rows (hub schema) from make_sample, tools grown to real sizes."""
    from fcft.data import make_sample

    rng = random.Random(f"bench-{seed}")
    catalog = [entry["tool"] for entry in make_sample.CATALOG]
    rows = [make_sample._sft_row(rng) for _ in range(n)]
    # The sample has more rows without tools than When2Call (its "no tool fits" rows): the rows with tools get
    # more, so that the mean over all rows is the real one.
    with_tools = sum(1 for row in rows if row["tools"]) / n
    for row in rows:
        tools = list(row["tools"])
        wanted = max(1, round(rng.gauss(REAL_TOOLS_PER_ROW / with_tools, 1.5))) if tools else 0
        while len(tools) < wanted:
            tools.append(rng.choice(catalog))
        row["tools"] = [_grown(tool, rng) for tool in tools]
    return rows


def _grown(tool: dict, rng: random.Random) -> dict:
    """The tool with optional parameters added until its JSON is about a real tool's size."""
    tool = copy.deepcopy(tool)
    target = rng.uniform(0.4, 1.5) * REAL_TOOL_CHARS
    words = "the of a value to for in optional filter result page number maximum date when list name code".split()
    k = 0
    while len(json.dumps(tool)) < target:
        description = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16))).capitalize() + "."
        tool["parameters"]["properties"][f"option_{k}"] = {"type": "string", "description": description, "default": ""}
        k += 1
    return tool


def naive(rows: list[dict], fmt, tokenizer, max_length: int):
    """The obvious way: one row at a time, prompt and whole text encoded separately."""
    from datasets import Dataset

    from fcft.data.prepare import sft_example

    records = []
    for row in rows:
        example = sft_example(row, fmt)
        context = example["prompt"].rstrip()
        whole = context + example["prompt"][len(context) :] + example["completion"]
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        whole_ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
        if len(whole_ids) <= max_length:
            completion = whole_ids[len(context_ids) :]
            records.append(
                {
                    "input_ids": context_ids + completion,
                    "completion_mask": [0] * len(context_ids) + [1] * len(completion),
                }
            )
    return Dataset.from_list(records)


def floor(rows: list[dict], fmt, tokenizer):
    """What no preparation can beat: one batched encoding of each example's text, nothing else."""
    from fcft.data.prepare import sft_example

    examples = [sft_example(row, fmt) for row in rows]
    texts = [e["prompt"] + e["completion"] for e in examples]
    return [tokenizer(texts[i : i + 1000], add_special_tokens=False)["input_ids"] for i in range(0, len(texts), 1000)]


def fast_floor(rows: list[dict], fmt, tokenizer):
    """The same texts as `floor`, through the backend's `encode_batch_fast` (no offsets), ids only."""
    from fcft.data.prepare import sft_example

    examples = [sft_example(row, fmt) for row in rows]
    texts = [e["prompt"] + e["completion"] for e in examples]
    backend = tokenizer.backend_tokenizer
    return [
        [e.ids for e in backend.encode_batch_fast(texts[i : i + 1000], add_special_tokens=False)]
        for i in range(0, len(texts), 1000)
    ]


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<7} {seconds:8.2f} s", flush=True)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=15_000)
    parser.add_argument("--format", default="qwen2_5")
    parser.add_argument("--max-length", type=int, default=4096)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fcft-bench-") as tmp:
        os.environ["FCFT_CACHE"] = tmp  # an empty cache: the first sft_dataset call is cold
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        from omegaconf import OmegaConf
        from transformers import AutoTokenizer

        from fcft import tiny
        from fcft.data import formats
        from fcft.data.prepare import sft_dataset
        from fcft.data.when2call import load_part

        tokenizer = AutoTokenizer.from_pretrained(tiny.ensure())
        fmt = formats.get(args.format)
        raw = generate_rows(args.rows)
        path = Path(tmp) / "train_sft.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in raw))
        chars = statistics.mean(sum(len(json.dumps(t)) for t in row["tools"]) for row in raw)
        tools = statistics.mean(len(row["tools"]) for row in raw)
        print(
            f"{args.rows} rows, {tools:.1f} tools and {chars:,.0f} characters of tool JSON per row "
            f"(real When2Call: {REAL_TOOLS_PER_ROW}, ~2,900); format {fmt.name}; tokenizer: fcft tiny; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )

        data = OmegaConf.create({"hub_id": None, "train_path": str(path), "on_bad_row": "error"})
        loaded, t_load = timed("load", lambda: load_part(data, "train_sft"))
        rows = loaded.rows
        baseline, t_naive = timed("naive", lambda: naive(rows, fmt, tokenizer, args.max_length))
        _, t_floor = timed("floor", lambda: floor(rows, fmt, tokenizer))
        _, t_fast = timed("fast", lambda: fast_floor(rows, fmt, tokenizer))
        cold, t_cold = timed("cold", lambda: sft_dataset(rows, fmt, tokenizer, args.max_length))
        warm, t_warm = timed("warm", lambda: sft_dataset(rows, fmt, tokenizer, args.max_length))

        expected = baseline.to_dict()
        same = expected == cold.to_dict() == warm.to_dict()
        tokens = sum(len(ids) for ids in expected["input_ids"])
        print(f"same ids and masks as naive: {same}; {tokens / len(cold):,.0f} tokens per row")
        print(
            f"naive / cold: {t_naive / t_cold:5.1f}x    cold / warm: {t_cold / t_warm:5.1f}x    "
            f"naive / warm: {t_naive / t_warm:5.1f}x    cold / floor: {t_cold / t_floor:4.2f}x    "
            f"cold / fast: {t_cold / t_fast:4.2f}x    load average {os.getloadavg()[0]:.1f}"
        )
        if not same:
            sys.exit("fcft's prepared rows differ from the naive baseline")


if __name__ == "__main__":
    main()
