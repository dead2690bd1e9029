"""The embedded default model: a tiny Qwen3-architecture model and tokenizer built offline, seeded, cached.

    python -m fcft.tiny            # build (or find) it and print its directory

The tokenizer is a byte-level BPE (Qwen2's pre-tokenizer regex) trained on the bundled sample data, with
Qwen's and Llama's chat special tokens; its chat template is TRL's copy of Qwen3's, byte for byte, so TRL
recognises it. The model is `Qwen3ForCausalLM` with ~0.3 M parameters. The directory loads with
`AutoTokenizer` / `AutoModelForCausalLM` like any hub checkpoint. It is built once per recipe (the
cache key hashes everything that goes into it) into `$FCFT_CACHE` (default ~/.cache/fcft).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from fcft.data import SAMPLE_DIR

RECIPE_VERSION = "1"
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


def cache_root() -> Path:
    return Path(os.environ.get("FCFT_CACHE", Path.home() / ".cache" / "fcft"))


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
    """Directory of the tiny model, building it on first use (atomically: no half-built cache)."""
    target = cache_root() / f"tiny-qwen3-{_recipe_key()}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process built it first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
