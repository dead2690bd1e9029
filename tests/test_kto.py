"""method=kto: When2Call's preference pairs unpaired into desirable and undesirable rows split as DPO's, and real
KTOTrainer steps on the tiny model that train exactly the tuning's parameters.

The run spec is being rewritten: the trainer is driven by a stand-in spec made of the real option schemas."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from fcft import models
from fcft.data import formats
from fcft.data.prepare import pref_dataset
from fcft.data.when2call import load_part
from fcft.spec.options import ComputeSpec, DataSpec, FullTuning, ModelSpec, SpecError
from fcft.train.methods import get
from fcft.train.methods.kto import LOSS_TYPES, KtoSettings, kto_dataset, train

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PREF = ROOT / "fcft" / "data" / "sample" / "train_pref.jsonl"
MODEL = ModelSpec(name="tiny", embedded=True, dtype="float32", attn_implementation="sdpa")


def _rows(limit: int) -> list[dict]:
    data = DataSpec(name="sample", pref_path=str(SAMPLE_PREF))
    return load_part(data, "train_pref", limit).rows


def test_kto_is_registered_on_the_preference_part():
    method = get("kto")
    assert (method.settings, method.part) == (KtoSettings, "train_pref")
    assert (method.dataset, method.train) == (kto_dataset, train)


def test_conf_method_kto_yaml_is_valid_settings():
    settings = KtoSettings(**yaml.safe_load((ROOT / "conf" / "method" / "kto.yaml").read_text()))
    settings.check()
    assert (settings.beta, settings.desirable_weight, settings.undesirable_weight) == (0.1, 1.0, 1.0)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"beta": 0.0}, "method.beta"),
        ({"beta": float("nan")}, "method.beta"),
        ({"desirable_weight": 0.0}, "method.desirable_weight"),
        ({"undesirable_weight": -1.0}, "method.undesirable_weight"),
        ({"loss_type": "sigmoid"}, "method.loss_type"),
        ({"per_device_train_batch_size": 1}, "method.per_device_train_batch_size"),
        ({"learning_rate": 0.0}, "method.learning_rate"),  # the common trainer settings are checked too
    ],
)
def test_settings_refuse_what_kto_cant_run(changes, key):
    with pytest.raises(SpecError, match=f"^{re.escape(key)}: "):
        KtoSettings(**changes).check()


def test_batch_of_one_is_fine_without_a_kl_term():
    KtoSettings(loss_type="apo_zero_unpaired", per_device_train_batch_size=1).check()


def test_loss_types_are_trls():
    from trl import KTOConfig

    assert set(LOSS_TYPES) == set(KTOConfig.__dataclass_fields__["loss_type"].metadata["choices"])


def test_pairs_unpair_into_rows_split_as_dpos(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    fmt = formats.get("qwen2_5")
    rows = _rows(6)
    pairs = pref_dataset(rows, fmt, tokenizer, max_length=4096)
    unpaired = kto_dataset(rows, fmt, tokenizer, max_length=4096)

    assert set(unpaired.column_names) == {"prompt_ids", "completion_ids", "label"}
    assert len(unpaired) == 2 * len(pairs) == 2 * len(rows)
    assert unpaired["label"] == [True] * len(rows) + [False] * len(rows)
    for i, pair in enumerate(pairs):
        chosen, rejected = unpaired[i], unpaired[len(pairs) + i]
        assert chosen["prompt_ids"] == rejected["prompt_ids"] == pair["prompt_ids"]
        assert (chosen["completion_ids"], rejected["completion_ids"]) == (pair["chosen_ids"], pair["rejected_ids"])

    # A pair too long for max_length is left out whole, as DPO leaves it out: both labels stay equally many.
    lengths = sorted(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs)
    shorter = kto_dataset(rows, fmt, tokenizer, max_length=lengths[2])
    kept = len(pref_dataset(rows, fmt, tokenizer, max_length=lengths[2]))
    assert 0 < kept < len(rows)
    assert shorter["label"] == [True] * kept + [False] * kept


def test_apo_zero_unpaired_trains_without_kl_answers(tmp_path, tiny_dir):
    spec = SimpleNamespace(
        method=KtoSettings(
            loss_type="apo_zero_unpaired", max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3
        ),
        tuning=FullTuning(),
        model=MODEL,
        compute=ComputeSpec(name="cpu", accelerator="cpu"),
    )
    model, tokenizer = models.load_model(MODEL, "cpu"), models.load_tokenizer(MODEL)
    dataset = kto_dataset(_rows(2), formats.get("qwen2_5"), tokenizer, MODEL.max_length)

    trainer = train(spec, model, tokenizer, dataset, tmp_path, "cpu")

    assert trainer.state.global_step == 1
    assert set(trainer.train_dataset.column_names) == {"prompt_ids", "completion_ids", "label"}


def test_trl_trains_on_fcfts_ids_as_they_are(tmp_path, tiny_dir):
    """Which parameters train for each tuning is tests/test_methods.py's (KTO is in the registry it iterates)."""
    spec = SimpleNamespace(
        method=KtoSettings(
            max_steps=2,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            logging_steps=1,
        ),
        tuning=FullTuning(),
        model=MODEL,
        compute=ComputeSpec(name="cpu", accelerator="cpu"),
    )
    spec.method.check()
    model, tokenizer = models.load_model(MODEL, "cpu"), models.load_tokenizer(MODEL)
    dataset = kto_dataset(_rows(4), formats.get("qwen2_5"), tokenizer, MODEL.max_length)

    trainer = train(spec, model, tokenizer, dataset, tmp_path, "cpu")

    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    # TRL took fcft's ids as they are (shuffled once), and only added the mismatched answers of its KL term.
    taken = trainer.train_dataset
    assert sorted(zip(taken["prompt_ids"], taken["completion_ids"], taken["label"])) == sorted(
        zip(dataset["prompt_ids"], dataset["completion_ids"], dataset["label"])
    )
    answers = taken["completion_ids"]
    assert taken["KL_completion_ids"] == [answers[3], *answers[0:3], answers[7], *answers[4:7]]
    saved = {Path(f["filename"]).parent for f in dataset.cache_files}  # the preference part's cache entry
    assert [sorted(p.name for p in entry.iterdir()) for entry in saved] == [
        ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    ], "training wrote nothing into the cache entry"
