"""How training rows become batches (method.batching), and Liger kernels (method.use_liger): the TRL settings for
each, and the length-grouped sampler for fcft's pre-tokenized rows.

- `padded`: rows in random order, each batch padded to its longest row (TRL's default).
- `grouped`: rows of similar length batched together (transformers' LengthGroupedSampler: random mega-batches of
  50 optimizer steps' rows, sorted by length inside), so a batch pads little. Works with any attention.
- `padding_free`: each batch is one sequence of its rows end to end, with position ids restarting at each row and
  no padding at all (TRL's `padding_free`). Only flash-attention keeps the rows apart without a quadratic mask;
  SFT only, as TRL 1.16's DPOTrainer switches padding_free off and KTOTrainer has none.

The sampler reads the rows' lengths from the Arrow columns (`lengths`): transformers' own reads `input_ids` row by row
in Python, and fcft's preference rows have no `input_ids` (prompt_ids, chosen_ids, rejected_ids).
"""

from __future__ import annotations

from typing import Optional

from fcft.spec.options import FLASH, GROUPED, PADDING_FREE


def config_args(spec, device: str) -> dict:
    """Keyword arguments for the method's TRL `*Config` from method.batching and method.use_liger; SpecError when
    this device can't run them (a job whose machine differs from the one that checked its spec)."""
    from fcft.spec.options import SpecError

    problem = device_problem(spec, device)
    if problem:
        raise SpecError(problem)
    m = spec.method
    args = {}
    if m.batching == GROUPED:
        args["train_sampling_strategy"] = "group_by_length"
    elif m.batching == PADDING_FREE:
        args["padding_free"] = True
    if m.use_liger:
        args["use_liger_kernel"] = True
    return args


def device_problem(spec, device: str, attention: Optional[str] = None) -> Optional[str]:
    """Why method.batching / method.use_liger can't run on `device` ('cpu', 'cuda', 'cuda:N') with the resolved
    attention implementation, or None."""
    import importlib.util

    m = spec.method
    if m.batching == PADDING_FREE:
        if attention is None:
            from fcft import models

            attention = models.attn_implementation(spec.model, device)
        if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            return "method.batching: padding_free on flash_attention_2 needs flash-attn: pip install flash-attn"
        if not device.startswith("cuda") or attention not in FLASH:
            return (
                f"method.batching: padding_free needs flash-attention (a CUDA GPU, the flash-attn package, "
                f"model.attn_implementation=flash_attention_2 or auto); here the device is {device} and the attention "
                f"{attention}: use method.batching=grouped"
            )
    if m.use_liger:
        if not device.startswith("cuda"):
            return f"method.use_liger: Liger kernels run on CUDA GPUs only (Triton); here the device is {device}"
        if importlib.util.find_spec("liger_kernel") is None:
            return "method.use_liger: the liger-kernel package is not installed: pip install liger-kernel"
    return None


def lengths(dataset) -> list[int]:
    """Each row's padded length: input_ids (SFT), prompt + the longer answer (preference pairs), prompt + answer
    (KTO), from the Arrow columns."""
    import pyarrow.compute as pc

    columns = set(dataset.column_names)
    table = dataset.with_format("arrow")

    def size(column: str):
        return pc.list_value_length(table[column])

    if "input_ids" in columns:
        total = size("input_ids")
    elif {"prompt_ids", "chosen_ids", "rejected_ids"} <= columns:
        total = pc.add(size("prompt_ids"), pc.max_element_wise(size("chosen_ids"), size("rejected_ids")))
    elif {"prompt_ids", "completion_ids"} <= columns:
        total = pc.add(size("prompt_ids"), size("completion_ids"))
    else:
        raise ValueError(f"no token-id columns to group rows by length in {sorted(columns)}")
    return total.to_pylist()


def grouping(trainer_class):
    """`trainer_class` with a length-grouped sampler fed by `lengths` (train_sampling_strategy group_by_length)."""

    class Grouped(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            from transformers.trainer_pt_utils import LengthGroupedSampler

            dataset = train_dataset if train_dataset is not None else self.train_dataset
            steps = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(steps, lengths=lengths(dataset))

    Grouped.__name__ = Grouped.__qualname__ = f"Grouped{trainer_class.__name__}"
    return Grouped
