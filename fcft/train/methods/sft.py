"""method=sft: supervised fine-tuning with TRL's SFTTrainer on prompt/completion rows (loss on the completion only).

Settings: the common trainer settings (fcft.spec.options.TrainerSettings), nothing of its own; every
method.batching (fcft/train/batching.py) works here, padding_free with flash-attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fcft.data.prepare import sft_dataset
from fcft.spec.options import TrainerSettings
from fcft.train import batching, tuning
from fcft.train.args import common_args, resume_from
from fcft.train.methods import Method


@dataclass(frozen=True)
class SftSettings(TrainerSettings):
    name: str = "sft"


def train(spec, model, tokenizer, dataset, run_dir: Path, device: str, callbacks=()):
    """Train `model` on the tokenized `dataset` (input_ids + completion_mask); returns the trainer."""
    from trl import SFTConfig, SFTTrainer

    peft_config = tuning.prepare(spec, model, run_dir)
    batches = batching.config_args(spec, device)
    config = SFTConfig(
        **common_args(spec, run_dir / "trainer", device),
        # TRL refuses max_length with padding_free (it would not cut rows); fcft's rows are at most that long already
        max_length=None if batches.get("padding_free") else spec.model.max_length,
        completion_only_loss=True,  # the dataset is pre-tokenized: TRL can't infer it from column names
        eos_token=tokenizer.eos_token,
        **batches,
    )
    trainer = batching.grouping(SFTTrainer)(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume_from(spec))
    return trainer


METHODS = (Method("sft", SftSettings, part="train_sft", dataset=sft_dataset, train=train),)
