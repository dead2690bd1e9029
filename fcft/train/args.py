"""Trainer arguments every method shares, read from the spec in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fcft import distributed


def common_args(spec, output_dir: Path, device: str) -> dict:
    """Keyword arguments for any TRL `*Config` (a `transformers.TrainingArguments` subclass).

    With compute.checkpoint_dir set, checkpoints go there (the trainer's output_dir) every
    compute.checkpoint_steps steps; `resume_from` then finds the latest one.
    """
    m = spec.method
    checkpoints = spec.compute.checkpoint_dir
    return dict(
        output_dir=checkpoints or str(output_dir),
        learning_rate=m.learning_rate,
        lr_scheduler_type=m.lr_scheduler_type,
        warmup_steps=m.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        num_train_epochs=m.num_train_epochs,
        max_steps=m.max_steps,
        per_device_train_batch_size=m.per_device_train_batch_size,
        gradient_accumulation_steps=m.accumulation_steps(distributed.world_size()),
        activation_checkpointing=m.gradient_checkpointing,  # transformers 5 name for it
        weight_decay=m.weight_decay,
        max_grad_norm=m.max_grad_norm,
        logging_steps=m.logging_steps,
        seed=m.seed,
        data_seed=m.seed,
        bf16=spec.model.dtype == "bfloat16",
        fp16=spec.model.dtype == "float16",
        use_cpu=device == "cpu",
        save_strategy="steps" if checkpoints else "no",
        save_steps=spec.compute.checkpoint_steps,
        save_total_limit=2,  # the latest, and the one before it in case the latest was cut off mid-write
        ddp_find_unused_parameters=False,  # every trained parameter takes part in the forward pass
        report_to="none",
        disable_tqdm=False,
    )


def resume_from(spec) -> Optional[str]:
    """The latest checkpoint in compute.checkpoint_dir to resume training from, or None to start afresh."""
    if not spec.compute.checkpoint_dir or not Path(spec.compute.checkpoint_dir).is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(spec.compute.checkpoint_dir)
