"""fcft's disk cache, $FCFT_CACHE (default ~/.cache/fcft), and its prepared (tokenized) datasets under data/.

An entry is one `datasets` directory (save_to_disk) plus `meta.json`, named by a key that hashes every
input of the preparation: the rows, the format's name, version and code, the tokenizer, the maximum
length, the library versions. The same inputs load the saved dataset (memory-mapped, instant); any
change makes a new entry. Entries are written to a temporary directory and renamed into place, so a
crash leaves no half-written entry. Old entries are never reused with other inputs; delete
$FCFT_CACHE/data to reclaim the space.

`meta.json` records the size and CRC-32 of every file of the saved dataset. Each read checks them and loads
the dataset: an entry that is missing a file, truncated, garbled or unreadable is set aside with a warning
naming it and built again. The helpers below serve fcft's other caches too (the tiny model, Spectrum's SNRs):
`locked` keeps two processes from rebuilding one entry at once, `set_aside` removes a broken entry, and
`CacheError` names an entry that still can't be used and how to clear it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional

from fcft import rundir

log = logging.getLogger(__name__)

META = "meta.json"
FILES = "files"  # meta.json's key for {file: {"bytes", "crc32"}} of the saved dataset; not part of the meta returned
# the code deciding what a prepared row holds
_HASHED_CODE = ("formats.py", "chat.py", "messages.py", "prepare.py", "encode.py")


class CacheError(RuntimeError):
    """A cache entry that can't be used or rebuilt; the message names it and how to clear it."""


def cache_root() -> Path:
    return Path(os.environ.get("FCFT_CACHE", Path.home() / ".cache" / "fcft"))


def clear_hint(path: Path) -> str:
    return f"delete {path} (or all of $FCFT_CACHE, now {cache_root()}) and run again"


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock between processes on $FCFT_CACHE/locks/<name>.lock, held while the block runs."""
    path = cache_root() / "locks" / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as err:
        raise CacheError(
            f"can't create the cache lock {path} ({err}); point $FCFT_CACHE at a writable folder"
        ) from None
    with handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): entries are still renamed into place whole
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_aside(path: Path, what: str, problem: str) -> None:
    """Warn that the cache entry at `path` is unusable and remove it (renamed away first, so no reader sees half)."""
    log.warning("%s %s is unusable (%s): rebuilding it", what, path, problem)
    aside = None
    try:
        aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.broken-", dir=path.parent))
        path.rename(aside / path.name)
    except FileNotFoundError:  # already gone
        pass
    except OSError as err:
        raise CacheError(
            f"{what} {path} is unusable ({problem}) and can't be removed ({err}); {clear_hint(path)}"
        ) from None
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


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
    """(dataset, meta) of entry `name`: loaded when present and intact, else `build()` saved atomically then loaded.

    A broken entry is set aside with a warning and built again; an entry that still fails raises CacheError.
    """
    target = data_dir() / name
    loaded, problem = _load(target)
    if loaded is not None:
        return loaded
    with locked(f"data-{name}"):
        loaded, problem = _load(target)  # another process may have built it meanwhile
        if loaded is not None:
            return loaded
        if target.exists():
            set_aside(target, "the tokenized-data cache entry", problem)
        dataset, meta = build()
        try:
            with rundir.atomic_dir(target) as tmp:
                dataset.save_to_disk(str(tmp / "dataset"))
                files = {
                    str(p.relative_to(tmp)): _stamp(p) for p in sorted((tmp / "dataset").rglob("*")) if p.is_file()
                }
                (tmp / META).write_text(json.dumps({**meta, FILES: files}, indent=2) + "\n")
        except OSError as err:
            raise CacheError(
                f"can't write the tokenized-data cache entry {target} ({err}); {clear_hint(target)}"
            ) from None
        loaded, problem = _load(target)
    if loaded is None:
        raise CacheError(
            f"the tokenized-data cache entry {target} is unusable right after building it ({problem}); "
            + clear_hint(target)
        )
    return loaded


def _load(target: Path) -> tuple[Optional[tuple[object, dict]], str]:
    """((dataset, meta), "") for an intact entry, else (None, what is wrong with it)."""
    from datasets import load_from_disk

    if not target.exists():
        return None, "missing"
    try:
        meta = json.loads((target / META).read_text())
    except FileNotFoundError:
        return None, f"no {META}"
    except (OSError, ValueError) as err:
        return None, f"{META} is unreadable: {err}"
    files = meta.pop(FILES, None) if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(isinstance(stamp, dict) for stamp in files.values()):
        return None, f"{META} lists no file checksums (garbled, or written by an older fcft)"
    for relative, expected in files.items():
        path = target / relative
        if not path.is_file():
            return None, f"{relative} is missing"
        try:
            found = _stamp(path)
        except OSError as err:  # another process may be setting the entry aside meanwhile
            return None, f"{relative} is unreadable: {err}"
        if found["bytes"] != expected.get("bytes"):
            return None, f"{relative} has {found['bytes']} bytes, {expected.get('bytes')} were written"
        if found != expected:
            return None, f"{relative} differs from what was written (CRC-32)"
    try:
        return (load_from_disk(str(target / "dataset")), meta), ""
    except Exception as err:  # datasets/pyarrow raise many kinds; any of them makes the entry unusable
        return None, f"the dataset doesn't load: {type(err).__name__}: {err}"


def _stamp(path: Path) -> dict:
    """A file's size and CRC-32 (fast: catches truncation and garbling, not tampering)."""
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return {"bytes": path.stat().st_size, "crc32": crc}
