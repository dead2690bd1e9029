"""The schema of each config option: a dataclass per option (or per kind of option), owning exactly its keys.

A group's option is picked by its `name` (`tuning=lora` composes `conf/tuning/lora.yaml`, whose `name: lora`
selects `LoraTuning`); a key the chosen option does not own is refused, naming the options that take it.
Each schema's `check` validates its own values and nothing else: pure, no I/O, no heavy imports.

Methods are not here: each training method's schema lives beside its trainer (fcft/train/methods/), built
on `TrainerSettings`. Launchers are not here either: a launcher's settings are its constructor's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional

from fcft.data.when2call import SUFFIXES
from fcft.spec.base import Choice, SpecError, fail  # noqa: F401 (SpecError: imported from here across fcft)
from fcft.spec.eval_options import EvalSpec  # noqa: F401 (the eval group's schemas live in eval_options.py)


class Family(Choice):
    qwen = "qwen"
    llama = "llama"


class Accelerator(Choice):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Strategy(Choice):
    """How several processes share the training (the launcher picks accelerate's config from it)."""

    none = "none"  # one process
    ddp = "ddp"  # data parallel: each process holds the whole model (NCCL on GPUs, gloo on CPUs)
    zero3 = "zero3"  # DeepSpeed ZeRO-3: parameters, gradients and optimizer state sharded across processes


class OnBadRow(Choice):
    error = "error"
    skip = "skip"


DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")
# method.batching (fcft/train/batching.py): the attention implementations padding_free needs
PADDED, GROUPED, PADDING_FREE = "padded", "grouped", "padding_free"
BATCHINGS = (GROUPED, PADDED, PADDING_FREE)
FLASH = ("flash_attention_2", "flash_attention_3")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr", "polynomial")


# --- model -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to start from and how to load them (conf/model/)."""

    name: str = "???"
    family: Family = Family.qwen  # chat family: picks the default prompt format
    format: str = "qwen2_5"  # default prompt format for training and evaluation (fcft/data/formats.py)
    hub_id: Optional[str] = None  # e.g. Qwen/Qwen3-0.6B
    path: Optional[str] = None  # a local directory; wins over hub_id
    embedded: bool = False  # the offline tiny model built by fcft.tiny (no hub, no path)
    revision: Optional[str] = None
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto (flash_attention_2 on GPU when installed, else sdpa) | sdpa | eager | ...
    max_length: int = 2048
    # A Jinja chat template (.jinja file) to render with instead of the tokenizer's own; the saved model/ carries it.
    # For format=chat_template with a model whose template can't render tools, or the tiny model in Llama's template.
    chat_template: Optional[str] = None

    def check(self) -> None:
        if self.chat_template is not None and not self.chat_template.endswith(".jinja"):
            fail("model.chat_template", f"'{self.chat_template}' is not a .jinja file (a Jinja chat template)")
        if self.dtype not in DTYPES:
            fail("model.dtype", f"'{self.dtype}' is not one of {', '.join(DTYPES)}")
        if self.attn_implementation not in ATTENTION:
            fail("model.attn_implementation", f"'{self.attn_implementation}' is not one of {', '.join(ATTENTION)}")
        if self.max_length < 16:
            fail("model.max_length", f"{self.max_length} is too small (at least 16 tokens)")


# --- methods: the trainer settings every training method shares ------------------------------------------------


@dataclass(frozen=True)
class EvalOnly:
    """method=none: no training; evaluate the model as it is, or the model a run saved (init_from)."""

    name: str = "none"
    # Start from the weights and tokenizer a previous run saved (its run directory, or an MLflow run id)
    # instead of model.path or model.hub_id; the model group still names the model, its dtype and format.
    init_from: Optional[str] = None

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class TrainerSettings(EvalOnly):
    """The trainer's hyperparameters (conf/method/): what every training method takes."""

    name: str = "???"
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 2
    # When set, gradient_accumulation_steps is derived from it:
    #   global_batch_size = per_device_train_batch_size x gradient_accumulation_steps x processes
    # so the same spec trains on the same global batch with any number of processes.
    global_batch_size: Optional[int] = None
    gradient_checkpointing: bool = False
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 5
    seed: int = 42
    # How rows become batches (fcft/train/batching.py): grouped (rows of similar length together, little padding;
    # any attention) | padded (random order, each batch padded to its longest row) | padding_free (rows end to end,
    # no padding; SFT with flash-attention on a CUDA GPU). padded unless a method's conf says (sft.yaml: grouped).
    batching: str = PADDED
    use_liger: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU): CUDA GPUs with liger-kernel installed

    def check(self) -> None:
        if self.batching not in BATCHINGS:
            fail("method.batching", f"'{self.batching}' is not one of {', '.join(BATCHINGS)}")
        if self.learning_rate <= 0:
            fail("method.learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            fail("method.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            fail("method.max_steps", f"must be -1 (use num_train_epochs) or > 0, got {self.max_steps}")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, key) < 1:
                fail(f"method.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            fail("method.global_batch_size", f"must be >= 1 or null, got {self.global_batch_size}")
        if self.lr_scheduler_type not in SCHEDULERS:
            fail("method.lr_scheduler_type", f"'{self.lr_scheduler_type}' is not one of {', '.join(SCHEDULERS)}")

    def accumulation_steps(self, processes: int) -> int:
        """Gradient accumulation steps for `processes` processes in all: gradient_accumulation_steps, or derived
        from global_batch_size = per-device batch x accumulation x processes."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        per_step = self.per_device_train_batch_size * processes
        if self.global_batch_size % per_step:
            fail(
                "method.global_batch_size",
                f"{self.global_batch_size} is not a multiple of per_device_train_batch_size x processes = "
                f"{self.per_device_train_batch_size} x {processes} = {per_step}",
            )
        return self.global_batch_size // per_step


# --- tuning: which parameters train ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FullTuning:
    """Every parameter trains (conf/tuning/full.yaml)."""

    name: str = "full"
    adapters: ClassVar[bool] = False  # LoRA adapters train instead of the model's own weights
    four_bit: ClassVar[bool] = False  # the base weights load in 4 bits

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class LoraTuning:
    """LoRA adapters through PEFT (conf/tuning/lora.yaml)."""

    name: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: List[str] = field(default_factory=lambda: ["all-linear"])
    adapters: ClassVar[bool] = True
    four_bit: ClassVar[bool] = False

    def check(self) -> None:
        if self.lora_r < 1 or self.lora_alpha < 1:
            fail("tuning.lora_r", f"lora_r and lora_alpha must be >= 1, got {self.lora_r} and {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            fail("tuning.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            fail("tuning.lora_target_modules", "needs at least one module name (or 'all-linear')")


@dataclass(frozen=True)
class QloraTuning(LoraTuning):
    """LoRA adapters on base weights loaded in 4 bits by bitsandbytes (conf/tuning/qlora.yaml)."""

    name: str = "qlora"
    load_in_4bit: bool = True  # what makes it QLoRA: false is refused (use tuning=lora)
    bnb_4bit_quant_type: str = "nf4"  # nf4 | fp4
    bnb_4bit_use_double_quant: bool = True
    four_bit: ClassVar[bool] = True

    def check(self) -> None:
        super().check()
        if not self.load_in_4bit:
            fail(
                "tuning.load_in_4bit",
                "tuning=qlora loads the base weights in 4 bits; for LoRA on full-precision weights use tuning=lora",
            )
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            fail("tuning.bnb_4bit_quant_type", f"'{self.bnb_4bit_quant_type}' is not one of nf4, fp4")


@dataclass(frozen=True)
class SpectrumTuning:
    """Per module type, the top_percent layers by signal-to-noise ratio train (conf/tuning/spectrum.yaml)."""

    name: str = "spectrum"
    top_percent: float = 50.0
    spectrum_file: Optional[str] = None  # a YAML of unfrozen-parameter patterns to use instead of scanning
    adapters: ClassVar[bool] = False
    four_bit: ClassVar[bool] = False

    def check(self) -> None:
        if not 0 < self.top_percent <= 100:
            fail("tuning.top_percent", f"must be in (0, 100], got {self.top_percent}")
        if self.spectrum_file is not None and not self.spectrum_file.endswith((".yaml", ".yml")):
            fail("tuning.spectrum_file", f"'{self.spectrum_file}' is not a .yaml file of unfrozen-parameter patterns")


TUNINGS = {schema.name: schema for schema in (FullTuning, LoraTuning, QloraTuning, SpectrumTuning)}


# --- compute, data (the eval group: eval_options.py) -------------------------------------------------------------


@dataclass(frozen=True)
class ComputeSpec:
    """How the numbers are crunched (conf/compute/): the device, the processes and how they share the work.
    Where (this machine, or a SageMaker instance type) is the launcher's."""

    name: str = "???"
    accelerator: Accelerator = Accelerator.auto
    num_processes: Optional[int] = 1  # processes per machine; null = one per GPU, counted where the run executes
    strategy: Strategy = Strategy.none
    # Checkpoints: the trainer saves one every checkpoint_steps (null: 200) into checkpoint_dir, and a run that finds
    # checkpoints there resumes from the latest (an interrupted local run).
    checkpoint_dir: Optional[str] = None
    # On SageMaker the job's checkpoint directory is synced to S3: null checkpoints spot jobs only (they may be
    # interrupted and restarted), a number checkpoints every job that often.
    checkpoint_steps: Optional[int] = None

    def check(self) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            fail("compute.num_processes", f"must be >= 1, or null for one process per GPU; got {self.num_processes}")
        if self.strategy == Strategy.none and self.num_processes != 1:
            fail(
                "compute.strategy",
                f"'none' runs one process but compute.num_processes is {self.num_processes or 'null'}; pick "
                "compute.strategy=ddp or zero3 for several processes, or set compute.num_processes=1",
            )
        if self.checkpoint_steps is not None and self.checkpoint_steps < 1:
            fail("compute.checkpoint_steps", f"must be >= 1, got {self.checkpoint_steps}")


@dataclass(frozen=True)
class DataSpec:
    """Training and test data (conf/data/): When2Call from the hub, or local files."""

    name: str = "???"
    hub_id: Optional[str] = None  # e.g. nvidia/When2Call; used for any part whose *_path is null
    train_path: Optional[str] = None  # SFT rows (.jsonl/.json/.parquet)
    pref_path: Optional[str] = None  # preference rows
    test_path: Optional[str] = None  # MCQ test rows
    # with hub_id: each part's split, `split` or `config/split` (e.g. train, default/train); null = When2Call's
    train_split: Optional[str] = None
    pref_split: Optional[str] = None
    test_split: Optional[str] = None
    # prompt format: qwen2_5 | llama3_2 | blog (NVIDIA's evaluation formats, fcft/data/formats.py) | chat_template
    # (the tokenizer's own chat template, fcft/data/chat.py); null = the model's
    format: Optional[str] = None
    limit: Optional[int] = None  # first N training rows
    on_bad_row: OnBadRow = OnBadRow.error

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            fail("data.limit", f"must be >= 1 or null, got {self.limit}")
        for key in ("train_path", "pref_path", "test_path"):
            path = getattr(self, key)
            if path is not None and not path.endswith(SUFFIXES):
                fail(f"data.{key}", f"'{path}' is not a {', '.join(SUFFIXES)} file")
        for key in ("train_split", "pref_split", "test_split"):
            split = getattr(self, key)
            if split is not None and (not split.strip("/") or split.count("/") > 1 or split != split.strip()):
                fail(f"data.{key}", f"'{split}' is not a split name or config/split (e.g. train, default/train)")


# --- tracking ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowTracking:
    """An MLflow run per job (conf/tracking/mlflow.yaml, fcft/tracking/)."""

    name: str = "mlflow"
    # null: the embedded store sqlite:///<working directory>/mlflow.db (artifacts in <working directory>/mlruns/);
    # or an MLflow tracking URI: http(s)://host:port, a SageMaker MLflow ARN (pip install 'fcft[sagemaker]'),
    # sqlite:///PATH.db (artifacts in mlruns/ beside it), postgresql://..., mysql://..., databricks.
    # The spec stores the resolved URI. Credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, never here.
    uri: Optional[str] = None
    experiment: str = "fcft"
    run_name: Optional[str] = None  # null: <model>-<method>-<tuning>
    parent_run_id: Optional[str] = None  # the multirun's parent run: fcft sets it for each job of a sweep
    tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags for the run
    enabled: ClassVar[bool] = True

    def check(self) -> None:
        from fcft.spec.uris import run_id_in, uri_problem

        problem = uri_problem(self.uri)
        if problem:
            fail("tracking.uri", problem)
        if not self.experiment.strip():
            fail("tracking.experiment", "must name an MLflow experiment, e.g. fcft")
        if self.parent_run_id is not None and run_id_in(self.parent_run_id) != self.parent_run_id:
            fail(
                "tracking.parent_run_id", f"'{self.parent_run_id}' is not an MLflow run id (32 hexadecimal characters)"
            )


@dataclass(frozen=True)
class NoTracking:
    """Record nothing in MLflow (conf/tracking/none.yaml); the run directory still has everything."""

    name: str = "none"
    enabled: ClassVar[bool] = False

    def check(self) -> None:
        pass


TRACKINGS = {schema.name: schema for schema in (MlflowTracking, NoTracking)}
