"""Spectrum: train the layers whose weights carry the most signal, freeze the rest (Hartford et al., 2024).

fcft computes it from the model's own weights, as cognitivecomputations/spectrum does:

- Per weight matrix W (m x n), its singular values S (fcft: from the Gram matrix, see `singular_values`);
  noise sigma = IQR(S) / 1.349; the Marchenko-Pastur
  edge threshold = sigma * (1 + sqrt(min(m, n) / max(m, n))); SNR = sum(S > threshold) / sum(S <= threshold)
  (infinite when no value is at or below it), divided by the largest singular value.
- A module's type is its name after the layer index (`model.layers.3.mlp.down_proj` -> `mlp.down_proj`),
  or its whole name when it has none (`lm_head`, `model.embed_tokens`, `model.norm`). Per type, the
  int(count * top_percent / 100) modules with the highest SNR train.
- As published: the input and output embeddings always train (the two anchored `^...$` patterns); 1-D
  weights (norms) have no spectrum, so a norm type ties and its first layers in model order train; a type
  with a single module (the embeddings, the final norm) is not ranked and trains only at top_percent=100.
  fcft computes no SVD where the ranking can't change the outcome (1-D weights, single-module types).

The SNRs are cached per model weights (a hash of every parameter's name, dtype, shape and bytes) under
`$FCFT_CACHE/spectrum/<hash>/`: `snr.json` and the unfrozen-parameter YAML per top_percent, in the
published format (fcft/train/spectrum_yaml.py). An snr.json that doesn't parse or doesn't hold exactly the
model's modules is scanned again, with a warning naming it. Every Spectrum run writes the patterns it used to
spectrum.yaml.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

from fcft import rundir
from fcft.data.cache import CacheError, cache_root, clear_hint
from fcft.train import spectrum_yaml

log = logging.getLogger(__name__)

SCAN_VERSION = "1"  # bump when the SNR computation changes: old cache entries are then ignored


def singular_values(weight):
    """A 2-D weight's singular values: square roots of the eigenvalues of its smaller Gram matrix, in float64.

    They equal torch.linalg.svdvals' to ~1e-14 of the largest value, at a fraction of its CPU time
    (benchmarks/spectrum_scan.py).
    """
    import torch

    w = weight.detach().to(torch.float64)
    if w.shape[0] < w.shape[1]:
        w = w.T
    return torch.linalg.eigvalsh(w.T @ w).clamp_min(0).sqrt()


def snr_ratio(weight) -> float:
    """Signal-to-noise ratio of a 2-D weight's singular values, divided by the largest one."""
    import torch

    s = singular_values(weight)
    sigma = (torch.quantile(s, 0.75) - torch.quantile(s, 0.25)) / 1.349
    rows, cols = weight.shape[-2:]
    threshold = sigma * (1 + math.sqrt(min(rows, cols) / max(rows, cols)))
    signal, noise = s[s > threshold].sum().item(), s[s <= threshold].sum().item()
    snr = signal / noise if noise != 0 else math.inf
    return snr / s.max().item()


def module_type(name: str) -> str:
    """The module's name after its layer index, or the whole name when it has none."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i + 1 :])
    return name


def weight_modules(model) -> dict[str, list[str]]:
    """Module type -> names of the modules with a `weight` parameter, in model order."""
    import torch

    by_type: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(getattr(module, "weight", None), torch.nn.Parameter):
            by_type.setdefault(module_type(name), []).append(name)
    return by_type


def scan(model) -> dict[str, dict]:
    """{module name: {"type": ..., "snr": float or None}}; None where no ranking is needed (see the module doc)."""
    from tqdm.auto import tqdm

    modules = dict(model.named_modules())
    layout = _layout(model)
    results = {name: {"type": kind, "snr": None} for name, (kind, _) in layout.items()}
    to_rank = [name for name, (_, ranked) in layout.items() if ranked]
    for name in tqdm(to_rank, desc="Spectrum: SNR per weight matrix", unit="matrix"):
        results[name]["snr"] = snr_ratio(modules[name].weight)
    return results


def _layout(model) -> dict[str, tuple[str, bool]]:
    """Module name -> (its type, whether it is ranked by SNR: a 2-D weight in a type of several modules)."""
    modules = dict(model.named_modules())
    return {
        name: (kind, len(names) > 1 and modules[name].weight.ndim == 2)
        for kind, names in weight_modules(model).items()
        for name in names
    }


def select(snrs: dict[str, dict], top_percent: float) -> dict[str, list[str]]:
    """Module type -> the modules that train, in model order (ties keep model order, as published)."""
    by_type: dict[str, list[str]] = {}
    for name, entry in snrs.items():
        by_type.setdefault(entry["type"], []).append(name)
    chosen = {}
    for kind, names in by_type.items():
        count = int(len(names) * top_percent / 100)
        ranked = sorted(names, key=lambda n: -_rank_value(snrs[n]["snr"]))  # stable: ties keep model order
        keep = set(ranked[:count])
        chosen[kind] = [n for n in names if n in keep]
    return chosen


def _rank_value(snr: float | None) -> float:
    return math.inf if snr is None else snr


def embedding_patterns(model) -> list[str]:
    """`^<output embedding>.weight$` and `^<input embedding>.weight$`, which always train (as published)."""
    wanted = {id(model.get_output_embeddings()): 0, id(model.get_input_embeddings()): 1}
    found = sorted((wanted[id(m)], f"^{name}.weight$") for name, m in model.named_modules() if id(m) in wanted)
    return [pattern for _, pattern in found]


def weights_key(model) -> str:
    """A hash of every parameter's name, dtype, shape and bytes: the identity of the weights."""
    import torch

    digest = hashlib.sha256(f"spectrum-scan-{SCAN_VERSION}".encode())
    for name, param in model.named_parameters():
        digest.update(f"{name}|{param.dtype}|{tuple(param.shape)}".encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def cached_snrs(model, cache_dir: Path) -> dict[str, dict]:
    """The model's SNRs from `cache_dir/snr.json`; scanned and written on a miss, or when the file is unusable."""
    path = cache_dir / "snr.json"
    if path.exists():
        snrs, problem = _read_snrs(path, model)
        if snrs is not None:
            log.info("Spectrum: SNRs from the cache %s", path)
            return snrs
        log.warning("Spectrum: the SNR cache %s is unusable (%s): scanning the weights again", path, problem)
    snrs = scan(model)
    try:
        rundir.write_text(path, json.dumps({"version": SCAN_VERSION, "modules": snrs}, indent=2) + "\n")
    except OSError as err:
        raise CacheError(f"can't write the Spectrum SNR cache {path} ({err}); {clear_hint(cache_dir)}") from None
    return snrs


def _read_snrs(path: Path, model) -> tuple[dict | None, str]:
    """(modules, "") from an snr.json that covers exactly the model's modules, else (None, what is wrong)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"doesn't parse: {err}"
    modules = data.get("modules") if isinstance(data, dict) else None
    if not isinstance(modules, dict) or data.get("version") != SCAN_VERSION:
        return None, f"not an SNR scan of version {SCAN_VERSION}"
    layout = _layout(model)
    missing, extra = sorted(set(layout) - set(modules)), sorted(set(modules) - set(layout))
    if missing:
        return None, f"lacks {len(missing)} modules of the model, e.g. {missing[0]}"
    if extra:
        return None, f"has {len(extra)} modules the model lacks, e.g. {extra[0]}"
    for name, (kind, ranked) in layout.items():
        entry = modules[name]
        snr = entry.get("snr") if isinstance(entry, dict) else None
        is_number = isinstance(snr, (int, float)) and not isinstance(snr, bool)
        fits = is_number if ranked else snr is None
        if not isinstance(entry, dict) or entry.get("type") != kind or not fits:
            wanted = "a number" if ranked else "null"
            return None, f"module {name}: expected type {kind!r} and snr {wanted}, got {json.dumps(entry)}"
    return modules, ""


def patterns_for_run(tuning, model) -> tuple[list[str], str]:
    """(patterns, file text) for a Spectrum run: tuning.spectrum_file's, or those of the model's cached scan."""
    if tuning.spectrum_file is not None:
        path = Path(tuning.spectrum_file)
        return spectrum_yaml.read(path), path.read_text()
    cache_dir = cache_root() / "spectrum" / weights_key(model)
    text = spectrum_yaml.render(embedding_patterns(model), select(cached_snrs(model, cache_dir), tuning.top_percent))
    path = cache_dir / f"unfrozen_parameters_{tuning.top_percent:g}percent.yaml"
    rundir.write_text(path, text)
    return spectrum_yaml.parse(text, str(path)), text


def freeze(model, patterns: list[str], origin: str) -> list[str]:
    """Train exactly the parameters that a pattern `re.match`es, freeze the rest; returns the trained names.

    A tied parameter (lm_head.weight = model.embed_tokens.weight) trains when any of its names matches.
    Every pattern must match some parameter: one that matches none was made for another model.
    """
    names_of: dict[int, list[str]] = {}
    params = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
        params[id(param)] = param
    all_names = [n for names in names_of.values() for n in names]
    unmatched = [p for p in patterns if not any(re.match(p, n) for n in all_names)]
    if unmatched:
        raise ValueError(
            f"{origin}: {len(unmatched)} of {len(patterns)} patterns match no parameter of this model "
            f"(e.g. '{unmatched[0]}'); was it made for another model? "
            f"Parameters look like '{all_names[len(all_names) // 2]}'"
        )
    trained = []
    for key, names in names_of.items():
        train = any(re.match(p, n) for p in patterns for n in names)
        params[key].requires_grad_(train)
        if train:
            trained.append(names[0])
    return trained


def apply(tuning, model, run_dir: Path) -> list[str]:
    """Freeze the model for a Spectrum run and write the patterns used to run_dir/spectrum.yaml."""
    patterns, text = patterns_for_run(tuning, model)
    origin = f"tuning.spectrum_file={tuning.spectrum_file}" if tuning.spectrum_file else "Spectrum scan"
    trained = freeze(model, patterns, origin)
    rundir.write_text(Path(run_dir) / rundir.SPECTRUM, text)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "Spectrum: %d tensors train (%d of %d parameters, %.1f%%)", len(trained), count, total, 100 * count / total
    )
    return trained
