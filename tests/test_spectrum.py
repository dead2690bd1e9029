"""Spectrum: the SNR formula on spectra computed by hand, the layers it picks on weights with known spectra, the
cache, and the published unfrozen-parameter YAML read back through tuning.spectrum_file."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import compose

from fcft import spec as run_spec
from fcft.train import spectrum, spectrum_yaml

# Which layer of the tiny model's two gets the high-SNR spectrum, per matrix type.
SIGNAL_LAYER = {
    "self_attn.q_proj": 1,
    "self_attn.k_proj": 0,
    "self_attn.v_proj": 1,
    "self_attn.o_proj": 0,
    "mlp.gate_proj": 0,
    "mlp.up_proj": 1,
    "mlp.down_proj": 1,
}


def _matrix(rows: int, cols: int, singular_values: list[float], seed: int = 0) -> torch.Tensor:
    """A rows x cols matrix with exactly these singular values (random orthogonal singular vectors)."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=generator, dtype=torch.float64))
    k = len(singular_values)
    return (u[:, :k] @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ v[:, :k].T).float()


def test_snr_by_hand():
    # s = [8, 3, 2, 1]: quartiles 1.75 and 4.25, sigma = 2.5 / 1.349; square: threshold = 2 sigma = 3.706,
    # so signal = 8, noise = 3 + 2 + 1 = 6, SNR = 8/6, divided by the largest value 8: 1/6.
    assert spectrum.snr_ratio(_matrix(4, 4, [8, 3, 2, 1])) == pytest.approx(1 / 6, rel=1e-5)
    # 4 x 16: threshold = sigma * (1 + sqrt(4/16)) = 2.780, so signal = 8 + 3, noise = 2 + 1: 11/3/8.
    assert spectrum.snr_ratio(_matrix(4, 16, [8, 3, 2, 1])) == pytest.approx(11 / 3 / 8, rel=1e-5)
    assert spectrum.snr_ratio(_matrix(16, 4, [8, 3, 2, 1])) == pytest.approx(11 / 3 / 8, rel=1e-5)
    # All singular values equal: the IQR is 0, nothing is noise, the SNR is infinite.
    assert spectrum.snr_ratio(_matrix(8, 8, [1.0] * 8)) == math.inf


def test_module_types_follow_the_published_rule():
    assert spectrum.module_type("model.layers.3.mlp.down_proj") == "mlp.down_proj"
    assert spectrum.module_type("model.layers.12.self_attn.q_norm") == "self_attn.q_norm"
    assert spectrum.module_type("lm_head") == "lm_head" and spectrum.module_type("model.norm") == "model.norm"


def _known_spectra(model, signal_layer: dict[str, int]) -> None:
    """Per matrix type: a low-rank spectrum (4 values of 1, a faint tail) on the chosen layer, a flat one
    (evenly spread from 1 to 0) on the other. Both have largest value 1; the low-rank one has the higher SNR."""
    for name, module in model.named_modules():
        kind = spectrum.module_type(name)
        if kind in signal_layer:
            rows, cols = module.weight.shape
            k = min(rows, cols)
            layer = int(name.split(".")[2])
            values = (
                [1.0] * 4 + torch.linspace(0.02, 0.0, k - 4).tolist()
                if layer == signal_layer[kind]
                else torch.linspace(1.0, 0.0, k).tolist()
            )
            module.weight.data.copy_(_matrix(rows, cols, values, seed=layer))


def _expected_yaml(signal_layer: dict[str, int]) -> str:
    """The file written by hand: per matrix type the signal layer; norms tie, so layer 0; single modules: none."""
    lines = ["unfrozen_parameters:", "- ^lm_head.weight$", "- ^model.embed_tokens.weight$"]
    for kind in (
        "input_layernorm",
        "lm_head",
        "mlp.down_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "model.embed_tokens",
        "model.norm",
        "post_attention_layernorm",
        "self_attn.k_norm",
        "self_attn.k_proj",
        "self_attn.o_proj",
        "self_attn.q_norm",
        "self_attn.q_proj",
        "self_attn.v_proj",
    ):
        lines.append(f"# {kind} layers")
        if kind in signal_layer:
            lines.append(f"- model.layers.{signal_layer[kind]}.{kind}")
        elif kind.endswith("norm") and kind != "model.norm":
            lines.append(f"- model.layers.0.{kind}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def tiny_model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "spectrum"


def _tuning(*overrides: str):
    return run_spec.validate(compose("tuning=spectrum", *overrides)).tuning


@pytest.mark.parametrize("inverted", [False, True], ids=["chosen", "inverted"])
def test_scan_picks_the_layers_with_the_known_high_snr(tiny_model, cache, inverted):
    signal_layer = {kind: 1 - layer if inverted else layer for kind, layer in SIGNAL_LAYER.items()}
    _known_spectra(tiny_model, signal_layer)
    patterns, text = spectrum.patterns_for_run(_tuning(), tiny_model)
    assert text == _expected_yaml(signal_layer)
    assert patterns == spectrum_yaml.parse(text, "scan")


def test_top_100_percent_lists_every_module_and_small_percents_none(tiny_model, cache):
    _, everything = spectrum.patterns_for_run(_tuning("tuning.top_percent=100"), tiny_model)
    listed = {line[2:] for line in everything.splitlines() if line.startswith("- ") and not line.startswith("- ^")}
    assert listed == {
        name for name, m in tiny_model.named_modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)
    }
    patterns, _ = spectrum.patterns_for_run(_tuning("tuning.top_percent=10"), tiny_model)
    assert patterns == ["^lm_head.weight$", "^model.embed_tokens.weight$"]  # int(2 * 10 / 100) = 0 layers per type


def test_scan_is_cached_per_weights(tiny_model, cache):
    _known_spectra(tiny_model, SIGNAL_LAYER)
    spectrum.patterns_for_run(_tuning(), tiny_model)
    [entry] = list(cache.iterdir())
    assert (entry / "unfrozen_parameters_50percent.yaml").read_text() == _expected_yaml(SIGNAL_LAYER)
    # Edit the cached SNRs: the next run picks by them, so it read the cache instead of scanning again.
    snr_file = entry / "snr.json"
    cached = json.loads(snr_file.read_text())
    modules = cached["modules"]
    a, b = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"
    modules[a]["snr"], modules[b]["snr"] = modules[b]["snr"], modules[a]["snr"]
    snr_file.write_text(json.dumps(cached))
    _, text = spectrum.patterns_for_run(_tuning(), tiny_model)
    assert "- model.layers.0.self_attn.q_proj\n" in text and "- model.layers.1.self_attn.q_proj\n" not in text
    # Other weights, another cache entry.
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    spectrum.patterns_for_run(_tuning(), tiny_model)
    assert len(list(cache.iterdir())) == 2


def test_scan_yaml_round_trips_through_spectrum_file(tiny_dir, tiny_model, cache, tmp_path):
    from transformers import AutoModelForCausalLM

    _known_spectra(tiny_model, SIGNAL_LAYER)
    scanned = spectrum.apply(_tuning(), tiny_model, tmp_path / "scan-run")
    written = tmp_path / "scan-run" / "spectrum.yaml"
    assert written.read_text() == _expected_yaml(SIGNAL_LAYER)

    again = AutoModelForCausalLM.from_pretrained(tiny_dir)
    from_file = spectrum.apply(_tuning(f"tuning.spectrum_file={written}"), again, tmp_path / "file-run")
    assert from_file == scanned
    assert (tmp_path / "file-run" / "spectrum.yaml").read_bytes() == written.read_bytes()
    trained = {n for n, p in again.named_parameters() if p.requires_grad}
    assert trained == set(scanned)
    assert "model.embed_tokens.weight" in trained and "model.layers.1.self_attn.q_proj.weight" in trained
    assert "model.layers.0.self_attn.q_proj.weight" not in trained and "model.norm.weight" not in trained


# The shape of the files the published recipe ships (scripts/spectrum-layer/*.yaml), for the tiny model.
PUBLISHED_STYLE = """unfrozen_parameters:
- ^lm_head.weight$
- ^model.embed_tokens.weight$
# input_layernorm layers
- model.layers.1.input_layernorm
# lm_head layers
# mlp.down_proj layers
- model.layers.0.mlp.down_proj
# model.embed_tokens layers
"""


def test_published_style_file_unfreezes_what_re_match_matches(tiny_model, tmp_path):
    path = tmp_path / "snr_results_tiny_unfrozenparameters_50percent.yaml"
    path.write_text(PUBLISHED_STYLE)
    trained = spectrum.freeze(tiny_model, spectrum_yaml.read(path), str(path))
    assert set(trained) == {
        "model.embed_tokens.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.0.mlp.down_proj.weight",
    }
    assert tiny_model.lm_head.weight.requires_grad  # tied to the embeddings


def test_file_for_another_model_is_refused_before_training(tiny_model, tmp_path):
    path = tmp_path / "qwen3-28-layers.yaml"
    path.write_text(PUBLISHED_STYLE + "- model.layers.27.mlp.down_proj\n")
    with pytest.raises(
        ValueError, match=r"1 of 5 patterns match no parameter of this model \(e.g. 'model.layers.27.mlp.down_proj'\)"
    ):
        spectrum.freeze(tiny_model, spectrum_yaml.read(path), str(path))


@pytest.mark.parametrize(
    "content, message",
    [
        ("unfrozen_parameters: [\n", "is not valid YAML"),
        ("frozen_parameters:\n- model.norm\n", "must hold a mapping with the key 'unfrozen_parameters'"),
        ("unfrozen_parameters: model.norm\n", "'unfrozen_parameters' must be a non-empty list of patterns"),
        (
            "unfrozen_parameters:\n- model.layers.(0\n",
            "unfrozen_parameters[0] 'model.layers.(0' is not a valid regular expression",
        ),
        ("unfrozen_parameters:\n- model.norm\n- 3\n", "unfrozen_parameters[1] must be a string, got int"),
    ],
)
def test_broken_spectrum_files_are_refused_at_validation(tmp_path, content, message):
    path = tmp_path / "unfrozen.yaml"
    path.write_text(content)
    with pytest.raises(run_spec.SpecError) as err:
        _tuning(f"tuning.spectrum_file={path}")
    assert f"tuning.spectrum_file: {path}" in str(err.value) and message in str(err.value)
