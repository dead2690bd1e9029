"""Supervised fine-tuning with TRL's SFTTrainer on prompt/completion rows (loss on the completion only)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fcft.train import tuning
from fcft.train.args import common_args, resume_from


def train(spec: DictConfig, model, tokenizer, dataset, run_dir: Path, device: str, callbacks=()):
    """Train `model` on the tokenized `dataset` (input_ids + completion_mask); returns the trainer."""
    from trl import SFTConfig, SFTTrainer

    peft_config = tuning.prepare(spec, model, run_dir)
    config = SFTConfig(
        **common_args(spec, run_dir / "trainer", device),
        max_length=spec.model.max_length,
        completion_only_loss=True,  # the dataset is pre-tokenized: TRL can't infer it from column names
        eos_token=tokenizer.eos_token,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume_from(spec))
    return trainer
