"""Trainer arguments every method shares, read from the spec in one place; and resuming from checkpoints.

With compute.checkpoint_dir set, the trainer saves a checkpoint there every compute.checkpoint_steps steps, and a
run started again resumes from the newest *complete* one (`checkpoint_problem`: every file present and loadable),
else the one before it: transformers' own `get_last_checkpoint` takes the newest even when a kill cut it off, and
a missing optimizer.pt silently restarts the optimizer. `save_total_limit=2` keeps the one before: transformers
deletes old checkpoints only after a new one is completely written. `run_clock` counts the training time across
the run's segments (kept in trainer_state.json), and stops a run whose checkpoint is already at max_steps from
training further (transformers would take one more step).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Optional

from fcft import distributed

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
WEIGHTS = ("model.safetensors", "adapter_model.safetensors")
WEIGHTS_INDEX = "model.safetensors.index.json"
# What a checkpoint holds besides the saved model (model/ gets the rest, for a run already trained to its end).
TRAINING_FILES = re.compile(
    r"(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|latest"
    r"|zero_to_fp32\.py|global_step\d+)"
)

DEFAULT_CHECKPOINT_STEPS = 200  # compute.checkpoint_steps null, with compute.checkpoint_dir set


def common_args(spec, output_dir: Path, device: str) -> dict:
    """Keyword arguments for any TRL `*Config` (a `transformers.TrainingArguments` subclass).

    With compute.checkpoint_dir set, checkpoints go there (the trainer's output_dir) every
    compute.checkpoint_steps steps; `resume_from` then finds the newest complete one.
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
        save_steps=spec.compute.checkpoint_steps or DEFAULT_CHECKPOINT_STEPS,
        save_total_limit=2,  # the newest, and the one before it in case the newest was cut off mid-write
        ddp_find_unused_parameters=False,  # every trained parameter takes part in the forward pass
        report_to="none",
        disable_tqdm=False,
    )


def resume_from(spec) -> Optional[str]:
    """The newest complete checkpoint in compute.checkpoint_dir to resume training from, or None to start afresh."""
    directory = spec.compute.checkpoint_dir
    if not directory or not Path(directory).is_dir():
        return None
    for path in checkpoints(Path(directory)):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("checkpoint %s is incomplete (%s): trying the one before it", path, problem)
    return None


def checkpoints(directory: Path) -> list[Path]:
    """The checkpoint-<step> directories in `directory`, newest (highest step) first."""
    found = [p for p in Path(directory).iterdir() if p.is_dir() and CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT.fullmatch(p.name).group(1)), reverse=True)


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why the checkpoint at path can't be resumed from, or None when it is complete: trainer_state.json parses, the
    weights' safetensors headers load and cover their files, the optimizer and scheduler states load (a DeepSpeed
    checkpoint: its `latest` tag and step directory), and the RNG states are there."""
    path = Path(path)
    try:
        json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE}: {err}"
    problem = _weights_problem(path)
    if problem:
        return problem
    latest = path / "latest"
    if latest.is_file():  # DeepSpeed: optimizer and model states in global_step<N>/
        if not (path / latest.read_text().strip()).is_dir():
            return f"DeepSpeed's {latest.read_text().strip()}/ is missing"
    else:
        for name in ("optimizer.pt", "scheduler.pt"):
            problem = _torch_problem(path / name)
            if problem:
                return problem
    if not list(path.glob("rng_state*.pth")):
        return "rng_state.pth is missing"
    return None


def _weights_problem(path: Path) -> Optional[str]:
    from safetensors import safe_open

    files = [path / name for name in WEIGHTS if (path / name).is_file()]
    if (path / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((path / WEIGHTS_INDEX).read_text())
        except (OSError, ValueError) as err:
            return f"{WEIGHTS_INDEX}: {err}"
        files += [path / name for name in sorted(set(index.get("weight_map", {}).values()))]
    if not files and not (path / "latest").is_file():
        return "no model weights (model.safetensors, adapter_model.safetensors or a sharded index)"
    for file in files:
        try:
            with safe_open(str(file), "pt") as handle:
                handle.keys()
        except Exception as err:  # missing, cut off (the header no longer covers the file), corrupt
            return f"{file.name}: {err}"
    return None


def _torch_problem(file: Path) -> Optional[str]:
    import pickle

    import torch

    if not file.is_file():
        return f"{file.name} is missing"
    try:
        torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # loadable, but holds more than tensors and plain data: our own file
        try:
            torch.load(file, map_location="cpu", weights_only=False)
        except Exception as err:
            return f"{file.name}: {err}"
    except Exception as err:  # cut off: "failed finding central directory"
        return f"{file.name}: {err}"
    return None


def model_files(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that make its saved model (what trainer.save_model wrote there)."""
    return [p for p in Path(checkpoint).iterdir() if not TRAINING_FILES.fullmatch(p.name)]


class AlreadyTrained(Exception):
    """Raised as training begins when the checkpoint resumed from is at max_steps already: nothing to train.
    Holds the trainer's state (its log history) and its model, loaded from that checkpoint."""

    def __init__(self, state, model):
        super().__init__(f"the checkpoint resumed from is at step {state.global_step} of {state.max_steps}")
        self.state, self.model = state, model


def run_clock():
    """A trainer callback counting the training time over every segment of a resumed run (kept in
    trainer_state.json as a stateful callback's state), and raising AlreadyTrained for a run trained to its end.
    `first_step`: the step this segment started at; `before_s`: the seconds the earlier segments trained."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class RunClock(TrainerCallback, ExportableState):
        def __init__(self, before_s: float = 0.0):
            self.before_s, self.first_step, self.started = before_s, 0, None

        def state(self) -> dict:
            elapsed = time.time() - self.started if self.started is not None else 0.0
            return {"args": {}, "attributes": {"before_s": self.before_s + elapsed}}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            stored = state.stateful_callbacks.get(type(self).__name__) or {}
            self.before_s = float((stored.get("attributes") or {}).get("before_s", 0.0))
            state.stateful_callbacks[type(self).__name__] = self.state()  # a checkpoint saved before RunClock
            self.first_step, self.started = state.global_step, time.time()
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                raise AlreadyTrained(state, model)

    return RunClock()
