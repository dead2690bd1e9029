"""fcft's caches under $FCFT_CACHE (the tiny model, tokenized data, Spectrum's SNRs), each broken on purpose: the
next use finds the damage, says which entry it rebuilds, and works as a fresh build would; what can't be
rebuilt names the entry and how to clear it."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading

import pytest

from fcft import tiny
from fcft.data import SAMPLE_DIR, cache, formats
from fcft.data.cache import CacheError
from fcft.data.prepare import sft_dataset
from fcft.data.when2call import load_part
from fcft.spec.options import DataSpec
from fcft.train import spectrum


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty $FCFT_CACHE for one test."""
    monkeypatch.setenv("FCFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leftovers(folder):
    """Hidden temporary or set-aside directories left in a cache folder."""
    return sorted(p.name for p in folder.glob(".*"))


# --- the tiny model ----------------------------------------------------------------------------------------


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path):
    """Overwrite bytes in the middle of the file, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"#" * 16
    path.write_bytes(bytes(data))


DAMAGE = {"truncate": _truncate, "delete": lambda path: path.unlink(), "garble": _garble}

TINY_DAMAGE = [
    ("model.safetensors", "truncate", r"model.safetensors has \d+ bytes, its build wrote \d+ \(truncated\)"),
    ("model.safetensors", "garble", r"model.safetensors differs from what its build wrote \(SHA-256\)"),
    ("tokenizer.json", "delete", r"tokenizer.json is missing"),
    ("tokenizer.json", "garble", r"tokenizer.json differs from what its build wrote \(SHA-256\)"),
    ("config.json", "truncate", r"config.json has \d+ bytes, its build wrote \d+ \(truncated\)"),
    (tiny.MANIFEST, "delete", r"no fcft-tiny.json: an unfinished build, or one by an older fcft"),
    (tiny.MANIFEST, "truncate", r"fcft-tiny.json is unreadable: Expecting .*"),
]


def test_every_file_of_the_tiny_model_is_recorded(tiny_dir):
    record = json.loads((tiny_dir / tiny.MANIFEST).read_text())
    assert set(record) == {p.name for p in tiny_dir.iterdir()} - {tiny.MANIFEST}
    assert set(tiny.BUILT_FILES) <= set(record) and tiny.problem(tiny_dir) is None


@pytest.mark.parametrize("name, damage, problem", TINY_DAMAGE, ids=[f"{d}-{n}" for n, d, _ in TINY_DAMAGE])
def test_tiny_model_damage_is_named(tiny_dir, tmp_path, name, damage, problem):
    copy = tmp_path / tiny_dir.name
    shutil.copytree(tiny_dir, copy)
    assert tiny.problem(copy) is None
    DAMAGE[damage](copy / name)
    assert re.fullmatch(problem, tiny.problem(copy)), tiny.problem(copy)


@pytest.mark.parametrize(
    "name, damage",
    [("model.safetensors", "truncate"), ("tokenizer.json", "delete"), ("tokenizer.json", "garble")],
)
def test_a_broken_tiny_model_is_rebuilt_with_the_same_weights(tiny_dir, own_cache, caplog, name, damage):
    """Unchecked, a truncated model.safetensors failed deep in loading and a missing tokenizer.json gave
    transformers' "install sentencepiece or tiktoken": now the cache is rebuilt, seeded, byte for byte."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = own_cache / tiny_dir.name
    shutil.copytree(tiny_dir, target)  # the session's fresh build, then broken
    DAMAGE[damage](target / name)
    with caplog.at_level(logging.WARNING):
        assert tiny.ensure() == target
    assert f"the tiny-model cache {target} is unusable ({name} " in caplog.text and "rebuilding it" in caplog.text
    for path in tiny_dir.iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes(), path.name
    model = AutoModelForCausalLM.from_pretrained(target)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert AutoTokenizer.from_pretrained(target)("<|im_start|>user").input_ids[0] == 1
    assert not _leftovers(own_cache)
    caplog.clear()
    assert tiny.ensure() == target and not caplog.text  # intact now: used as it is


def test_two_builders_of_a_broken_tiny_model_build_it_once(tiny_dir, own_cache, monkeypatch, caplog):
    """Two ensure() at once (threads here; the lock is between open files, so processes alike): one rebuilds,
    the other waits and finds it built."""
    target = own_cache / tiny_dir.name
    shutil.copytree(tiny_dir, target)
    (target / "tokenizer.json").unlink()
    builds, real_build = [], tiny.build
    monkeypatch.setattr(tiny, "build", lambda out: builds.append(out) or real_build(out))
    found = []
    threads = [threading.Thread(target=lambda: found.append(tiny.ensure())) for _ in range(2)]
    with caplog.at_level(logging.WARNING):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert found == [target, target] and len(builds) == 1 and caplog.text.count("rebuilding it") == 1
    assert tiny.problem(target) is None and not _leftovers(own_cache)


def _set_aside_on_first_read(read, directory, aside):
    """`read`, but its first call renames `directory` to `aside` first: another process setting it aside."""

    def reading(path):
        if directory.exists():
            directory.rename(aside)
        return read(path)

    return reading


def test_an_entry_set_aside_while_it_is_checked_is_a_problem_not_a_crash(tiny_dir, tmp_path, monkeypatch):
    """Another process renames a broken entry away (to rebuild it) while this one hashes its files: the check
    outside the lock reports it, and the caller takes the lock and looks again."""
    target = tmp_path / tiny_dir.name
    shutil.copytree(tiny_dir, target)
    monkeypatch.setattr(tiny, "_sha256", _set_aside_on_first_read(tiny._sha256, target, tmp_path / "aside"))
    assert re.fullmatch(r"\S+ is unreadable: .*No such file.*", tiny.problem(target))


def test_a_data_entry_set_aside_while_it_is_checked_is_a_problem_not_a_crash(own_cache, tokenizer, rows, monkeypatch):
    sft_dataset(rows, formats.QWEN2_5, tokenizer, 1024)
    [entry] = cache.data_dir().iterdir()
    monkeypatch.setattr(cache, "_stamp", _set_aside_on_first_read(cache._stamp, entry, own_cache / "aside"))
    loaded, problem = cache._load(entry)
    assert loaded is None and re.fullmatch(r"\S+ is unreadable: .*No such file.*", problem)


def test_a_cache_that_cant_be_written_names_itself_and_how_to_clear_it(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("FCFT_CACHE", str(tmp_path / "not-a-folder"))
    with pytest.raises(CacheError, match=r"not-a-folder/locks/tiny-qwen3-\w+.lock .*point \$FCFT_CACHE at a writable"):
        tiny.ensure()


# --- tokenized data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def rows():
    return load_part(DataSpec(name="sample", train_path=str(SAMPLE_DIR / "train_sft.jsonl")), "train_sft", 6).rows


ARROW = "dataset/data-00000-of-00001.arrow"
DATA_DAMAGE = [
    (ARROW, "truncate", rf"{ARROW} has \d+ bytes, \d+ were written"),
    (ARROW, "garble", rf"{ARROW} differs from what was written \(CRC-32\)"),
    (ARROW, "delete", rf"{ARROW} is missing"),
    ("dataset/state.json", "delete", r"dataset/state.json is missing"),
    (cache.META, "garble", r"meta.json is unreadable: .*"),
    (cache.META, "delete", r"no meta.json"),
    (cache.META, "old", r"meta.json lists no file checksums \(garbled, or written by an older fcft\)"),
]


@pytest.mark.parametrize("name, damage, problem", DATA_DAMAGE, ids=[f"{d}-{n}" for n, d, _ in DATA_DAMAGE])
def test_a_broken_data_cache_entry_is_rebuilt(own_cache, tokenizer, rows, caplog, name, damage, problem):
    first = sft_dataset(rows, formats.QWEN2_5, tokenizer, 1024).to_dict()  # read now: it maps the entry's file
    [entry] = cache.data_dir().iterdir()
    if damage == "old":  # meta.json as fcft wrote it before it recorded checksums
        meta = json.loads((entry / name).read_text())
        (entry / name).write_text(json.dumps({k: v for k, v in meta.items() if k != cache.FILES}))
    else:
        DAMAGE[damage](entry / name)
    with caplog.at_level(logging.WARNING):
        again = sft_dataset(rows, formats.QWEN2_5, tokenizer, 1024)
    assert again.to_dict() == first
    [warning] = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert warning.startswith(f"the tokenized-data cache entry {entry} is unusable (")
    assert re.search(problem, warning), warning
    assert cache._load(entry)[0] is not None and not _leftovers(cache.data_dir())
    caplog.clear()
    assert sft_dataset(rows, formats.QWEN2_5, tokenizer, 1024).to_dict() == first and not caplog.text


# --- Spectrum's SNRs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir)


def _drop_one(path):
    data = json.loads(path.read_text())
    data["modules"].pop("model.layers.1.mlp.up_proj")
    path.write_text(json.dumps(data))


def _unranked(path):
    data = json.loads(path.read_text())
    data["modules"]["model.layers.0.self_attn.q_proj"]["snr"] = None
    path.write_text(json.dumps(data))


SNR_DAMAGE = [
    (_truncate, r"doesn't parse: .*"),
    (lambda path: path.write_text('{"version": "1"}'), r"not an SNR scan of version 1"),
    (_drop_one, r"lacks 1 modules of the model, e.g. model.layers.1.mlp.up_proj"),
    (_unranked, r"module model.layers.0.self_attn.q_proj: expected type 'self_attn.q_proj' and snr a number, .*"),
]


@pytest.mark.parametrize("damage, problem", SNR_DAMAGE, ids=["truncated", "no modules", "a module less", "no snr"])
def test_a_broken_snr_cache_is_scanned_again(own_cache, tiny_model, caplog, damage, problem):
    entry = own_cache / "spectrum" / spectrum.weights_key(tiny_model)
    fresh = spectrum.cached_snrs(tiny_model, entry)
    damage(entry / "snr.json")
    with caplog.at_level(logging.WARNING):
        assert spectrum.cached_snrs(tiny_model, entry) == fresh
    assert f"Spectrum: the SNR cache {entry / 'snr.json'} is unusable (" in caplog.text
    assert re.search(problem, caplog.text), caplog.text
    caplog.clear()
    assert spectrum.cached_snrs(tiny_model, entry) == fresh and not caplog.text


def test_an_snr_cache_that_cant_be_replaced_names_itself_and_how_to_clear_it(own_cache, tiny_model):
    entry = own_cache / "spectrum" / spectrum.weights_key(tiny_model)
    (entry / "snr.json").mkdir(parents=True)
    (entry / "snr.json" / "stray").write_text("")
    with pytest.raises(CacheError) as err:
        spectrum.cached_snrs(tiny_model, entry)
    assert f"can't write the Spectrum SNR cache {entry / 'snr.json'} (" in str(err.value)
    assert f"delete {entry} (or all of $FCFT_CACHE, now {own_cache}) and run again" in str(err.value)
