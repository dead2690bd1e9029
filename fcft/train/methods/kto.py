"""method=kto: Kahneman-Tversky Optimization with TRL's KTOTrainer, on When2Call's preference pairs unpaired.

KTO learns from single answers labelled desirable or undesirable instead of pairs: each preference pair gives two
rows over the same prompt, its chosen answer (desirable) and its rejected one (undesirable), so the two classes are
equally many and TRL's default weights (1.0, 1.0) already balance them.

Tokenization: the rows are the preference part's (`prepare.pref_dataset`, cached on disk and shared with DPO/MPO):
the prompt is the string the evaluator scores, split from each answer as lm-eval splits it (`prepare.split_tokens`),
and a pair too long for model.max_length is left out whole, as for DPO. TRL 1.16's KTOTrainer would otherwise
re-tokenize text rows itself: it appends the tokenizer's EOS to answers that end with another end-of-turn token and
encodes the prompt with the tokenizer's special tokens (Llama's BOS a second time). Its collator takes the ids as
they are.

The reference model: with adapters (lora, qlora) TRL computes it with the adapters disabled, so there is no second
copy of the weights; with full or Spectrum tuning it is a frozen copy of the starting weights.

Order: TRL's `kto` loss estimates its KL term from each batch's prompts paired with the answers of their neighbours
in the batch, so KTOTrainer reads the rows in order (`train_sampling_strategy="sequential"`). fcft shuffles the rows
once with method.seed before training, so a batch mixes both labels and unrelated prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fcft.data.prepare import pref_dataset
from fcft.spec.options import GROUPED, PADDING_FREE, TrainerSettings, fail
from fcft.train import batching, tuning
from fcft.train.args import common_args, resume_from
from fcft.train.methods import Method
from fcft.train.methods.preference import frozen_copy

# The loss types TRL 1.16's KTOTrainer computes (KTOConfig.loss_type). `kto` estimates a KL term from the batch;
# `apo_zero_unpaired` does not.
LOSS_TYPES = ("kto", "apo_zero_unpaired")


@dataclass(frozen=True)
class KtoSettings(TrainerSettings):
    """The trainer settings, and KTOTrainer's own (conf/method/kto.yaml)."""

    name: str = "kto"
    beta: float = 0.1  # deviation from the reference model
    desirable_weight: float = 1.0  # weight of the losses on chosen answers
    undesirable_weight: float = 1.0  # weight of the losses on rejected answers
    loss_type: str = "kto"  # one of LOSS_TYPES

    def check(self) -> None:
        super().check()
        if self.batching == PADDING_FREE:
            fail(
                "method.batching", "padding_free is SFT's only (TRL 1.16's KTOTrainer has none); use padded or grouped"
            )
        if self.batching == GROUPED and self.loss_type == "kto":
            fail(
                "method.batching",
                "the kto loss pairs each row with its neighbour's answer, so it reads rows in order: use padded "
                "(or loss_type=apo_zero_unpaired with grouped)",
            )
        if not (self.beta > 0 and math.isfinite(self.beta)):
            fail("method.beta", f"kto needs a finite beta > 0 (TRL's default is 0.1), got {self.beta}")
        for key in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                fail(
                    f"method.{key}",
                    f"must be a finite weight > 0, got {value}; fcft's KTO rows are half desirable, half undesirable, "
                    "so 1.0 for both balances them (TRL advises desirable_weight / undesirable_weight in [1, 4/3])",
                )
        if self.loss_type not in LOSS_TYPES:
            fail("method.loss_type", f"unknown loss type '{self.loss_type}'; valid: {', '.join(LOSS_TYPES)}")
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            fail(
                "method.per_device_train_batch_size",
                "the kto loss estimates its KL term from the other rows of a batch: it needs >= 2 "
                f"(TRL advises at least 4), got {self.per_device_train_batch_size}",
            )


def kto_dataset(rows: list[dict], fmt, tokenizer, max_length: int, use_cache: bool = True):
    """The tokenized unpaired rows (prompt_ids, completion_ids, label) for KTOTrainer: per preference pair its chosen
    answer (label True) and its rejected one (label False), the chosen rows first, as TRL's `unpair_preference_dataset`
    orders them.

    Built from the preference part's cached dataset with column operations: nothing is re-tokenized or written.
    """
    from datasets import concatenate_datasets

    pairs = pref_dataset(rows, fmt, tokenizer, max_length, use_cache)
    desirable = pairs.remove_columns("rejected_ids").rename_column("chosen_ids", "completion_ids")
    undesirable = pairs.remove_columns("chosen_ids").rename_column("rejected_ids", "completion_ids")
    return concatenate_datasets(
        [desirable.add_column("label", [True] * len(pairs)), undesirable.add_column("label", [False] * len(pairs))]
    )


def train(spec, model, tokenizer, dataset, run_dir: Path, device: str, callbacks=()):
    """Train `model` on the tokenized unpaired `dataset`; returns the trainer."""
    from trl import KTOConfig

    m = spec.method
    peft_config = tuning.prepare(spec, model, run_dir)
    reference = None if peft_config is not None else frozen_copy(model)
    config = KTOConfig(
        **common_args(spec, run_dir / "trainer", device),
        beta=m.beta,
        desirable_weight=m.desirable_weight,
        undesirable_weight=m.undesirable_weight,
        loss_type=m.loss_type,
        max_length=spec.model.max_length,
        **batching.config_args(spec, device),
    )
    trainer = _trainer_class()(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=dataset.shuffle(seed=m.seed, keep_in_memory=True),  # read in order: see the module doc
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume_from(spec))
    return trainer


def _trainer_class():
    from trl import KTOTrainer

    class PreTokenizedKTOTrainer(KTOTrainer):
        """KTOTrainer that takes fcft's token ids as they are (see the module doc)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not {"prompt_ids", "completion_ids", "label"} <= set(dataset.column_names):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if not self.calculate_KL:
                return dataset
            # The one step of TRL's preparation that tokenized rows still need (trl/trainer/kto_trainer.py, "Add KL
            # completions if needed"): per batch, each prompt gets the previous row's answer, the first the last's.
            return dataset.map(
                lambda answers: {"KL_completion_ids": answers[-1:] + answers[:-1]},
                input_columns="completion_ids",
                batched=True,
                batch_size=args.per_device_train_batch_size,
                keep_in_memory=True,  # written nowhere: the cached entry stays as it was saved
                desc=f"Mismatched KL answers for the {dataset_name} rows",
            )

    return batching.grouping(PreTokenizedKTOTrainer)


METHODS = (Method("kto", KtoSettings, part="train_pref", dataset=kto_dataset, train=train),)
