"""The embedded tiny model: built offline, identical on every build, loads like a hub checkpoint."""

from __future__ import annotations

from pathlib import Path

import trl

from fcft import tiny


def test_builds_are_byte_identical(tmp_path, tiny_dir):
    tiny.build(tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_loads_with_auto_classes_and_keeps_trls_qwen3_template(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen3"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert tokenizer.chat_template == (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    for token in ("<|im_start|>", "<|im_end|>", "<tool_call>", "<|eot_id|>", "<|start_header_id|>"):
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1, token
    assert tokenizer.eos_token == "<|im_end|>"


def test_cache_is_reused(tiny_dir):
    stamp = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure() == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == stamp
