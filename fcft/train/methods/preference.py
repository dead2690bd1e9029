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
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fcft.train import tuning
from fcft.train.args import common_args, resume_from


def train(spec: DictConfig, model, tokenizer, dataset, run_dir: Path, device: str, callbacks=()):
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
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume_from(spec))
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
