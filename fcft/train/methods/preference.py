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
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from fcft.data.prepare import pref_dataset
from fcft.spec.options import PADDING_FREE, TrainerSettings, fail
from fcft.train import batching, tuning
from fcft.train.args import common_args, resume_from
from fcft.train.methods import Method

# The loss types TRL 1.16's DPOTrainer computes. `exo_pair` is left out: it needs label smoothing, which fcft
# does not expose.
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero",
    "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


@dataclass(frozen=True)
class PreferenceSettings(TrainerSettings):
    """The trainer settings, and DPOTrainer's own (conf/method/dpo.yaml, mpo.yaml)."""

    name: str = "dpo"
    beta: float = 0.1  # deviation from the reference model
    loss_type: List[str] = field(default_factory=lambda: ["sigmoid"])  # one or more of LOSS_TYPES
    loss_weights: Optional[List[float]] = None  # one per loss_type; null = all 1.0

    def check(self) -> None:
        super().check()
        if self.batching == PADDING_FREE:
            fail(
                "method.batching",
                f"padding_free is SFT's only: TRL 1.16's DPOTrainer switches it off; use grouped for {self.name}",
            )
        if self.beta <= 0:
            fail("method.beta", f"{self.name} needs beta > 0 (the published recipe uses 0.1), got {self.beta}")
        if not self.loss_type:
            fail(
                "method.loss_type",
                f"{self.name} needs a list of loss types, e.g. [sigmoid]; valid: {', '.join(LOSS_TYPES)}",
            )
        for loss in self.loss_type:
            if loss not in LOSS_TYPES:
                fail("method.loss_type", f"unknown loss type '{loss}'; valid: {', '.join(LOSS_TYPES)}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            fail(
                "method.loss_weights",
                f"{len(self.loss_weights)} weights for {len(self.loss_type)} loss types {list(self.loss_type)}: "
                "give one weight per loss type, or null for all 1.0",
            )


def train(spec, model, tokenizer, dataset, run_dir: Path, device: str, callbacks=()):
    """Train `model` on the tokenized preference `dataset`; returns the trainer."""
    from trl import DPOConfig

    m = spec.method
    peft_config = tuning.prepare(spec, model, run_dir)
    reference = None if peft_config is not None else frozen_copy(model)
    config = DPOConfig(
        **common_args(spec, run_dir / "trainer", device),
        beta=m.beta,
        loss_type=list(m.loss_type),
        loss_weights=list(m.loss_weights) if m.loss_weights is not None else None,
        max_length=spec.model.max_length,
        **batching.config_args(spec, device),
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

    return batching.grouping(PreTokenizedDPOTrainer)


METHODS = (
    Method("dpo", PreferenceSettings, part="train_pref", dataset=pref_dataset, train=train),
    Method("mpo", PreferenceSettings, part="train_pref", dataset=pref_dataset, train=train),
)
