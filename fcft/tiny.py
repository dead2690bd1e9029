"""The embedded default model: a tiny Qwen3-architecture model and tokenizer built offline, seeded, cached.

    python -m fcft.tiny            # build (or find) it and print its directory

The tokenizer is a byte-level BPE (Qwen2's pre-tokenizer regex) trained on the bundled sample data, with
Qwen's and Llama's chat special tokens; its chat template is TRL's copy of Qwen3's, byte for byte, so TRL
recognises it. The model is `Qwen3ForCausalLM` with ~0.3 M parameters. The directory loads with
`AutoTokenizer` / `AutoModelForCausalLM` like any hub checkpoint. It is built once per recipe (the
cache key hashes everything that goes into it) into `$FCFT_CACHE` (default ~/.cache/fcft).

A build is checked to load (every JSON file parses, tokenizer.json loads with `tokenizers`, every tensor of
model.safetensors reads) and sealed with `fcft-tiny.json`, the size and SHA-256 of each file it wrote; it is
then renamed into place whole. Each `ensure()` checks the files against that record (a few milliseconds), so a
missing, truncated or garbled file is found before transformers misreads it: the cache is rebuilt with a
warning naming it, under a lock so that two processes don't rebuild it at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from fcft import rundir
from fcft.data import SAMPLE_DIR
from fcft.data.cache import CacheError, cache_root, clear_hint, locked, set_aside

RECIPE_VERSION = "1"
MANIFEST = "fcft-tiny.json"  # {file: {"bytes", "sha256"}} of every file a build wrote; written last
BUILT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")  # at least these
SEED = 0
VOCAB_SIZE = 4096
EOS, PAD = "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [
    PAD,
    "<|im_start|>",
    EOS,
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
MODEL_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
)
# Qwen2's pre-tokenizer: contractions, words, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _chat_template() -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()


def _corpus_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.jsonl"))


def _recipe_key() -> str:
    digest = hashlib.sha256(f"{RECIPE_VERSION}|{SEED}|{VOCAB_SIZE}|{MODEL_SHAPE}|{SPECIAL_TOKENS}".encode())
    digest.update(_chat_template().encode())
    for path in _corpus_files():
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure() -> Path:
    """Directory of the tiny model, building it on first use and rebuilding it when found broken."""
    target = cache_root() / f"tiny-qwen3-{_recipe_key()}"
    if problem(target) is None:
        return target
    with locked(target.name):
        found = problem(target)  # another process may have built it meanwhile
        if found is None:
            return target
        if target.exists():
            set_aside(target, "the tiny-model cache", found)
        try:
            with rundir.atomic_dir(target) as tmp:
                build(tmp)
                _seal(tmp)
        except OSError as err:
            raise CacheError(f"can't build the tiny model into {target} ({err}); {clear_hint(target)}") from None
        found = problem(target)
    if found is not None:
        raise CacheError(
            f"the tiny-model cache {target} is unusable right after building it ({found}); {clear_hint(target)}"
        )
    return target


def problem(directory: Path) -> Optional[str]:
    """What is wrong with a built tiny-model directory (None when every file is as its build wrote it)."""
    if not directory.is_dir():
        return "missing"
    try:
        record = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}: an unfinished build, or one by an older fcft"
    except (OSError, ValueError) as err:
        return f"{MANIFEST} is unreadable: {err}"
    if not isinstance(record, dict) or not all(isinstance(v, dict) for v in record.values()):
        return f"{MANIFEST} is garbled"
    for name in sorted(set(BUILT_FILES) | set(record)):
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if name not in record:
            return f"{MANIFEST} doesn't list {name}"
        try:  # another process may be setting the directory aside meanwhile
            size, expected = path.stat().st_size, record[name].get("bytes")
            if size != expected:
                return f"{name} has {size} bytes, its build wrote {expected}" + (
                    " (truncated)" if isinstance(expected, int) and size < expected else ""
                )
            if _sha256(path) != record[name].get("sha256"):
                return f"{name} differs from what its build wrote (SHA-256)"
        except OSError as err:
            return f"{name} is unreadable: {err}"
    return None


def _seal(directory: Path) -> None:
    """Check that a fresh build loads, then record every file's size and SHA-256 in MANIFEST (written last)."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    for path in directory.glob("*.json"):
        json.loads(path.read_text())
    Tokenizer.from_file(str(directory / "tokenizer.json"))
    with safe_open(str(directory / "model.safetensors"), "pt") as weights:
        for name in weights.keys():
            weights.get_tensor(name)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    record = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (directory / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out_dir: Path) -> None:
    """Train the tokenizer, initialise the model with a fixed seed, save both to out_dir."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS, PAD)],
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    tokenizer.chat_template = _chat_template()
    tokenizer.save_pretrained(out_dir)

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        bos_token_id=None,
        dtype="float32",
        **MODEL_SHAPE,
    )
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)


def _train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _corpus():
    """Text the tokenizer learns its merges from: the bundled sample data and the chat template."""
    yield _chat_template()
    for path in _corpus_files():
        with path.open() as lines:
            yield from lines


if __name__ == "__main__":
    print(ensure())
