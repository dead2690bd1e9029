"""Trainer arguments every method shares, read from the spec in one place."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def common_args(spec: DictConfig, output_dir: Path, device: str) -> dict:
    """Keyword arguments for any TRL `*Config` (a `transformers.TrainingArguments` subclass)."""
    m = spec.method
    return dict(
        output_dir=str(output_dir),
        learning_rate=m.learning_rate,
        lr_scheduler_type=m.lr_scheduler_type,
        warmup_steps=m.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        num_train_epochs=m.num_train_epochs,
        max_steps=m.max_steps,
        per_device_train_batch_size=m.per_device_train_batch_size,
        gradient_accumulation_steps=m.gradient_accumulation_steps,
        activation_checkpointing=m.gradient_checkpointing,  # transformers 5 name for it
        weight_decay=m.weight_decay,
        max_grad_norm=m.max_grad_norm,
        logging_steps=m.logging_steps,
        seed=m.seed,
        data_seed=m.seed,
        bf16=spec.model.dtype == "bfloat16",
        fp16=spec.model.dtype == "float16",
        use_cpu=device == "cpu",
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
    )
