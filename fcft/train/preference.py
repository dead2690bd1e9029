"""Preference optimisation with TRL's DPOTrainer: DPO (method=dpo, one loss) and MPO (method=mpo, a weighted
list of losses, e.g. sigmoid + bco_pair + sft).

The reference model: with adapters (lora, qlora) TRL computes it with the adapters disabled, so there is no
second copy of the weights; with full or Spectrum tuning it is a frozen copy of the starting weights.

Tokenization: fcft hands TRL token ids split as the evaluator splits them (`prepare.split_tokens`: the
prompt is encoded alone, its trailing whitespace moved into the answer), the same split SFT trains on.
TRL 1.16's DPOTrainer would otherwise re-tokenize text rows itself: it adds the tokenizer's BOS (a second
one for formats whose prompt already starts with it, Llama's) and appends the tokenizer's EOS to answers
that end with another end-of-turn token. Its preference collator takes the ids as they are.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fcft.data.formats import Format
from fcft.data.prepare import pref_example, split_tokens
from fcft.data.when2call import DataError
from fcft.train import tuning
from fcft.train.args import common_args

log = logging.getLogger(__name__)


def tokenize_pref(batch: dict, tokenizer, max_length: int) -> dict:
    """Batched `datasets.map` function: prompt/chosen/rejected -> prompt_ids, chosen_ids, rejected_ids, fits."""
    chosen = split_tokens(tokenizer, batch["prompt"], batch["chosen"])
    rejected = split_tokens(tokenizer, batch["prompt"], batch["rejected"])
    return {
        "prompt_ids": [p for p, _ in chosen],
        "chosen_ids": [c for _, c in chosen],
        "rejected_ids": [r for _, r in rejected],
        "fits": [len(p) + max(len(c), len(r)) <= max_length for (p, c), (_, r) in zip(chosen, rejected)],
    }


def pref_dataset(rows: list[dict], fmt: Format, tokenizer, max_length: int):
    """A tokenized `datasets.Dataset` of preference pairs; pairs longer than max_length are left out, loudly."""
    from datasets import Dataset

    examples = Dataset.from_list([pref_example(row, fmt) for row in rows])
    tokenized = examples.map(
        tokenize_pref,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
        remove_columns=examples.column_names,
        desc=f"Tokenizing preference rows ({fmt.name})",
    )
    kept = tokenized.filter(lambda fits: fits, input_columns="fits").remove_columns("fits")
    if len(kept) < len(tokenized):
        log.warning("%d of %d preference rows are longer than model.max_length=%d tokens and were left out",
                    len(tokenized) - len(kept), len(tokenized), max_length)  # fmt: skip
    if not len(kept):
        raise DataError(f"every preference row is longer than model.max_length={max_length} tokens")
    return kept


def train(spec: DictConfig, model, tokenizer, dataset, run_dir: Path, device: str):
    """Train `model` on the tokenized preference `dataset`; returns the trainer."""
    from trl import DPOConfig

    m = spec.method
    peft_config = tuning.prepare(spec, model, run_dir)
    reference = None if peft_config is not None else frozen_copy(model)
    config = DPOConfig(
        **common_args(spec, run_dir / "trainer", device),
        beta=m.beta,
        loss_type=OmegaConf.to_container(m.loss_type),
        loss_weights=OmegaConf.to_container(m.loss_weights) if m.loss_weights is not None else None,
        max_length=spec.model.max_length,
    )
    trainer = _trainer_class()(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


def frozen_copy(model):
    """The reference for full and Spectrum tuning: the starting weights, frozen, in evaluation mode."""
    return copy.deepcopy(model).requires_grad_(False).eval()


def _trainer_class():
    from trl import DPOTrainer

    class PreTokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer that takes fcft's token ids as they are (see the module doc)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PreTokenizedDPOTrainer
