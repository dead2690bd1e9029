"""A disk cache for prepared (tokenized) datasets, under $FCFT_CACHE/data/.

An entry is one `datasets` directory (save_to_disk) plus `meta.json`, named by a key that hashes every
input of the preparation: the rows, the format's name, version and code, the tokenizer, the maximum
length, the library versions. The same inputs load the saved dataset (memory-mapped, instant); any
change makes a new entry. Entries are written to a temporary directory and renamed into place, so a
crash leaves no half-written entry. Old entries are never reused with other inputs; delete
$FCFT_CACHE/data to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from fcft.tiny import cache_root

META = "meta.json"
_HASHED_CODE = ("formats.py", "prepare.py")  # the code that decides what a prepared row holds


def data_dir() -> Path:
    return cache_root() / "data"


def key(*, rows: list[dict], fmt, tokenizer, **settings) -> str:
    """A hex digest of everything a prepared dataset depends on."""
    import datasets
    import transformers

    digest = hashlib.sha256()
    for part in (
        json.dumps(rows, sort_keys=True),
        f"{fmt.name}|{fmt.version}|{json.dumps(settings, sort_keys=True)}",
        f"datasets {datasets.__version__}|transformers {transformers.__version__}",
        tokenizer_fingerprint(tokenizer),
        *((Path(__file__).parent / name).read_text() for name in _HASHED_CODE),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's full definition (vocabulary, merges, added tokens, normalizer, pre-tokenizer)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:  # a tokenizer without a `tokenizers` backend: hash the files it saves
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            text = "".join(
                f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in sorted(Path(tmp).iterdir())
            )
    return f"{type(tokenizer).__name__}|{hashlib.sha256(text.encode()).hexdigest()}"


def load_or_build(name: str, build: Callable[[], tuple[object, dict]]):
    """(dataset, meta) of entry `name`: loaded when present, else `build()` saved atomically then loaded."""
    from datasets import load_from_disk

    target = data_dir() / name
    if not (target / META).is_file():
        dataset, meta = build()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            dataset.save_to_disk(str(tmp / "dataset"))
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            try:
                tmp.rename(target)
            except OSError:  # another process saved the same entry first
                if not (target / META).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(target / "dataset")), json.loads((target / META).read_text())
