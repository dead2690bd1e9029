"""The run spec: the one contract between the CLI, the launchers and the worker.

Hydra composes the config groups into a config shaped by `RunSpec`; `validate` turns it into the spec
(a resolved, read-only, typed OmegaConf node) or raises `SpecError` naming the key and what is valid.
`save`/`load` write and read `spec.yaml`; the worker validates again on load, so a hand-edited spec file
meets the same checks as the command line.

Each dataclass below is one config group's schema (`conf/<group>/*.yaml` fill it in). Checks that need
more than a type live in `_check_*` functions at the bottom, one per group, and import nothing heavy.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fcft.data import SAMPLE_DIR

SPEC_FILE = "spec.yaml"

# conf/data/sample.yaml names the bundled files as ${fcft_sample:NAME}; the spec stores them resolved.
OmegaConf.register_new_resolver("fcft_sample", lambda name: str(SAMPLE_DIR / name), replace=True)


class SpecError(ValueError):
    """A config or spec value that can't run; the message names the key and what would be valid."""


class Choice(str, Enum):
    """A config value from a fixed set; prints and compares as its plain string."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Family(Choice):
    qwen = "qwen"
    llama = "llama"


class MethodName(Choice):
    none = "none"  # evaluate only
    sft = "sft"
    dpo = "dpo"  # direct preference optimisation (TRL DPOTrainer)
    mpo = "mpo"  # mixed preference optimisation: DPOTrainer with a weighted list of losses


PREFERENCE_METHODS = (MethodName.dpo, MethodName.mpo)

# The loss types TRL 1.16's DPOTrainer computes. `exo_pair` is left out: it needs label smoothing, which fcft
# does not expose.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


class TuningName(Choice):
    full = "full"  # every parameter trains
    lora = "lora"  # LoRA adapters (PEFT)
    qlora = "qlora"  # LoRA adapters on 4-bit nf4 weights (bitsandbytes)
    spectrum = "spectrum"  # the layers with the highest signal-to-noise ratio train, the rest is frozen


ADAPTER_TUNINGS = (TuningName.lora, TuningName.qlora)


class Accelerator(Choice):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Strategy(Choice):
    """How several processes share the training (fcft's launcher picks accelerate's config from it)."""

    none = "none"  # one process
    ddp = "ddp"  # data parallel: each process holds the whole model (NCCL on GPUs, gloo on CPUs)
    zero3 = "zero3"  # DeepSpeed ZeRO-3: parameters, gradients and optimizer state sharded across processes


class OnBadRow(Choice):
    error = "error"
    skip = "skip"


class TrackingName(Choice):
    mlflow = "mlflow"  # one MLflow run per job (fcft/tracking/)
    none = "none"  # record nothing


@dataclass
class ModelSpec:
    """Which weights to start from and how to load them (conf/model/)."""

    name: str = "???"
    family: Family = Family.qwen  # chat family: picks the default prompt format
    format: str = "qwen2_5"  # default prompt format for training and evaluation (see fcft/data/formats.py)
    hub_id: Optional[str] = None  # e.g. Qwen/Qwen3-0.6B
    path: Optional[str] = None  # a local directory; wins over hub_id
    embedded: bool = False  # the offline tiny model built by fcft.tiny (no hub, no path)
    revision: Optional[str] = None
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16
    attn_implementation: str = (
        "auto"  # auto (flash_attention_2 on GPU when installed, else sdpa) | sdpa | eager | flash_attention_2
    )
    max_length: int = 2048


@dataclass
class MethodSpec:
    """How to train (conf/method/): the trainer's hyperparameters."""

    name: MethodName = MethodName.sft
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
    # Preference methods only (dpo, mpo); null elsewhere, and refused when set for sft.
    beta: Optional[float] = None  # deviation from the reference model
    loss_type: Optional[List[str]] = None  # one or more of DPO_LOSS_TYPES
    loss_weights: Optional[List[float]] = None  # one per loss_type; null = all 1.0
    # Start from the weights and tokenizer a previous run saved (its run directory) instead of model.path or
    # model.hub_id; the model group still names the model (the same as that run's), its dtype and format.
    init_from: Optional[str] = None


@dataclass
class TuningSpec:
    """Which parameters train (conf/tuning/)."""

    name: TuningName = TuningName.full
    # LoRA and QLoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: List[str] = field(default_factory=lambda: ["all-linear"])
    # QLoRA: the base weights are loaded in 4 bits (bitsandbytes); only adapters can train on top of them.
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"  # nf4 | fp4
    bnb_4bit_use_double_quant: bool = True
    # Spectrum: per module type, the top_percent layers by signal-to-noise ratio train.
    top_percent: float = 50.0
    spectrum_file: Optional[str] = None  # a YAML of unfrozen-parameter patterns to use instead of scanning


@dataclass
class ComputeSpec:
    """Where the numbers are crunched (conf/compute/): this machine, or a SageMaker instance type."""

    name: str = "???"
    accelerator: Accelerator = Accelerator.auto
    num_processes: Optional[int] = 1  # processes per machine; null = one per GPU, counted where the run executes
    strategy: Strategy = Strategy.none
    # Checkpoints: the trainer saves one every checkpoint_steps into checkpoint_dir, and a run that finds
    # checkpoints there resumes from the latest (a restarted spot job, an interrupted local run).
    checkpoint_dir: Optional[str] = None
    checkpoint_steps: int = 200
    # SageMaker training jobs (launcher=sagemaker); instance_type null = this machine.
    instance_type: Optional[str] = None  # e.g. ml.p4d.24xlarge
    instance_count: int = 1
    volume_size_gb: int = 100
    max_runtime_s: int = 86400
    use_spot: bool = False  # managed spot training: cheaper, may be interrupted and restarted
    max_wait_s: Optional[int] = None  # spot only: the longest the job may wait for capacity plus run


@dataclass
class DataSpec:
    """Training data (conf/data/): When2Call from the hub, or local files."""

    name: str = "???"
    hub_id: Optional[str] = None  # e.g. nvidia/When2Call; used for any part whose *_path is null
    train_path: Optional[str] = None  # SFT rows (.jsonl/.json/.parquet)
    pref_path: Optional[str] = None  # preference rows
    test_path: Optional[str] = None  # MCQ test rows
    format: Optional[str] = None  # prompt format: qwen2_5 | llama3_2 | blog (fcft/data/formats.py); null = the model's
    limit: Optional[int] = None  # first N training rows
    on_bad_row: OnBadRow = OnBadRow.error


class EvalBackend(Choice):
    fcft = "fcft"  # fcft's scorer: each prompt runs once, its four choices on the prompt's cached keys/values
    lm_eval = "lm_eval"  # lm-evaluation-harness itself, on a task fcft writes (pip install 'fcft[eval]')


@dataclass
class EvalSpec:
    """When2Call multiple-choice evaluation after training (conf/eval/)."""

    enabled: bool = True
    format: Optional[str] = None  # prompt format of the MCQ items; null = the training format
    limit: Optional[int] = None  # first N test rows
    batch_size: int = 8  # rows (prompts) per forward pass; lm_eval gets 4 requests per row
    backend: EvalBackend = EvalBackend.fcft
    write_requests: bool = False  # also write eval/requests.jsonl: per row uuid, prompt, choices, gold index
    bootstrap_resamples: int = 1000  # row resamples behind the 95% intervals of acc_norm and macro_f1
    bootstrap_seed: int = 0


@dataclass
class TrackingSpec:
    """Where a run is recorded (conf/tracking/): an MLflow run per job, or nothing (fcft/tracking/)."""

    name: TrackingName = TrackingName.mlflow
    # null: the embedded store sqlite:///<working directory>/mlflow.db (artifacts in <working directory>/mlruns/);
    # or an MLflow tracking URI: http(s)://host:port, a SageMaker MLflow ARN (pip install 'fcft[sagemaker]'),
    # sqlite:///PATH.db (artifacts in mlruns/ beside it), postgresql://..., mysql://..., databricks.
    # The spec stores the resolved URI. Credentials go in MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, never here.
    uri: Optional[str] = None
    experiment: str = "fcft"
    run_name: Optional[str] = None  # null: <model>-<method>-<tuning>
    parent_run_id: Optional[str] = None  # the multirun's parent run: fcft sets it for each job of a sweep
    tags: Dict[str, str] = field(default_factory=dict)  # extra MLflow tags for the run


@dataclass
class RunSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    tuning: TuningSpec = field(default_factory=TuningSpec)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    # The launcher's own settings: `_target_` names its class, the other keys are its keyword
    # arguments, so a user-written launcher needs no schema here.
    launcher: Dict[str, Any] = field(default_factory=lambda: {"_target_": "launchers.local.LocalLauncher"})
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)


# --- experiments: several runs in order (conf/experiment/, fcft/runs/stages.py) --------------------------------------


@dataclass
class StageSpec:
    """One run of an experiment's job: its overrides on top of the job's, and the stage it starts from."""

    name: str = "???"
    overrides: List[str] = field(default_factory=list)  # e.g. [method=sft, tuning=spectrum]
    init_from: Optional[str] = None  # an earlier stage: its run directory becomes method.init_from


@dataclass
class PublishedRow:
    label: str = "???"  # the model's name in the published table
    values: Dict[str, float] = field(default_factory=dict)  # stage -> the published number, in %


@dataclass
class TableSpec:
    """The report's results table: a row per model, a column per stage, cells = eval `metric`."""

    metric: str = "acc_norm"
    columns: Dict[str, str] = field(default_factory=dict)  # stage -> column title, in order
    published: Dict[str, PublishedRow] = field(default_factory=dict)  # model config name -> its published row


@dataclass
class ExperimentSpec:
    name: str = "???"
    stages: List[StageSpec] = field(default_factory=list)  # run in order in each job, each its own run directory
    table: Optional[TableSpec] = None


@dataclass
class ConfigSchema(RunSpec):
    """What Hydra composes: a run spec, or with `+experiment=NAME` the stages that make several runs of it."""

    experiment: Optional[ExperimentSpec] = None


def register_schema() -> None:
    """Make `fcft_schema` available to Hydra's defaults list (conf/config.yaml)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="fcft_schema", node=ConfigSchema)


# --- validation -------------------------------------------------------------------------------------


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Typed, resolved, read-only spec from a composed config; SpecError if anything can't run."""
    cfg = _without_experiment(cfg)
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    _reject_unknown_keys(container, RunSpec, "")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(RunSpec), cfg)
        OmegaConf.resolve(spec)
        OmegaConf.to_object(spec)  # raises on missing mandatory values
    except OmegaConfBaseException as err:
        raise SpecError(_omegaconf_message(err)) from None
    _absolute_paths(spec)
    _check_tracking(spec)  # first: an MLflow run id in method.init_from is looked up in the tracking store
    _resolve_init_from(spec)
    for check in (_check_model, _check_method, _check_tuning, _check_compute, _check_data, _check_eval):
        check(spec)
    OmegaConf.set_readonly(spec, True)
    return spec


def save(spec: DictConfig, path: Path) -> Path:
    """Write spec.yaml atomically (temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(OmegaConf.to_yaml(spec))
    tmp.replace(path)
    return path


def load(path: str | Path) -> DictConfig:
    """Read and validate a spec.yaml written by `save` (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist (expected the {SPEC_FILE} of a run directory)")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise SpecError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, DictConfig):
        raise SpecError(f"{path} must hold a mapping of config groups, got {type(raw).__name__}")
    try:
        return validate(raw)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def _without_experiment(cfg: DictConfig | dict) -> DictConfig | dict:
    """The composed config less its `experiment` key (null unless +experiment=NAME, which is not one run)."""
    experiment = cfg.get("experiment") if isinstance(cfg, (DictConfig, dict)) else None
    if experiment is not None:
        raise SpecError(
            f"experiment: '{experiment.get('name')}' runs several stages, each its own run, so it is not "
            "one spec; run it with python -m fcft -m +experiment=NAME (fcft/runs/stages.py)"
        )
    if isinstance(cfg, DictConfig):
        return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "experiment"]) if "experiment" in cfg else cfg
    return {key: value for key, value in cfg.items() if key != "experiment"}


def _absolute_paths(spec: DictConfig) -> None:
    """Local paths become absolute, so a spec runs the same from any working directory."""
    local_paths = (
        (spec.model, "path"),
        (spec.tuning, "spectrum_file"),
        (spec.data, "train_path"),
        (spec.data, "pref_path"),
        (spec.data, "test_path"),
        (spec.compute, "checkpoint_dir"),
    )
    for node, key in local_paths:
        value = node[key]
        if value is not None and "://" not in value:
            node[key] = str(Path(os.path.expanduser(value)).absolute())
    init_from = spec.method.init_from  # a run directory, or an MLflow run id (_resolve_init_from)
    if init_from is not None and Path(os.path.expanduser(init_from)).exists():
        spec.method.init_from = str(Path(os.path.expanduser(init_from)).absolute())


def _resolve_init_from(spec: DictConfig) -> None:
    """method.init_from as an MLflow run id becomes the run directory that run recorded (its fcft.run_dir tag)."""
    from fcft import tracking

    init_from = spec.method.init_from
    run_id = tracking.run_id_in(init_from) if init_from and not Path(os.path.expanduser(init_from)).exists() else None
    if run_id is None:
        return
    if spec.tracking.name == TrackingName.none:
        _fail(
            "method.init_from",
            f"'{init_from}' is an MLflow run id and tracking=none can't look it up: give "
            "the run's directory, or use tracking=mlflow with tracking.uri naming the store that holds the run",
        )
    run_dir, problem = tracking.run_dir_of(run_id, spec.tracking.uri)
    if problem:
        _fail("method.init_from", problem)
    spec.method.init_from = run_dir


def _reject_unknown_keys(node: Any, schema: type, prefix: str) -> None:
    """Hydra's `+group.key=v` slips past struct mode and would later be dropped silently: refuse it."""
    if not isinstance(node, dict):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise SpecError(
                f"unknown key '{full}': valid keys under '{prefix.rstrip('.') or 'the spec'}' are "
                f"{', '.join(sorted(fields))}"
            )
        sub = fields[key].type
        sub = globals().get(sub, sub) if isinstance(sub, str) else sub
        if dataclasses.is_dataclass(sub):
            _reject_unknown_keys(value, sub, f"{full}.")


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    text = str(err).split("\n")[0]
    return f"{key}: {text}" if key else text


def _fail(key: str, message: str) -> None:
    raise SpecError(f"{key}: {message}")


def _check_model(spec: DictConfig) -> None:
    from fcft import models  # light: heavy imports inside its functions

    m = spec.model
    if m.dtype not in ("float32", "bfloat16", "float16"):
        _fail("model.dtype", f"'{m.dtype}' is not one of float32, bfloat16, float16")
    if m.attn_implementation not in ("auto", "sdpa", "eager", "flash_attention_2"):
        _fail(
            "model.attn_implementation",
            f"'{m.attn_implementation}' is not one of auto, sdpa, eager, flash_attention_2",
        )
    if m.max_length < 16:
        _fail("model.max_length", f"{m.max_length} is too small (at least 16 tokens)")
    _check_format("model.format", m.format)
    problem = models.source_problem(m) if spec.method.init_from is None else None  # else: see _check_method
    if problem:
        raise SpecError(problem)


def _check_method(spec: DictConfig) -> None:
    m = spec.method
    if m.learning_rate <= 0:
        _fail("method.learning_rate", f"must be > 0, got {m.learning_rate}")
    if not 0 <= m.warmup_ratio < 1:
        _fail("method.warmup_ratio", f"must be in [0, 1), got {m.warmup_ratio}")
    if m.max_steps == 0 or m.max_steps < -1:
        _fail("method.max_steps", f"must be -1 (use num_train_epochs) or > 0, got {m.max_steps}")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if m[key] < 1:
            _fail(f"method.{key}", f"must be >= 1, got {m[key]}")
    if m.global_batch_size is not None and m.global_batch_size < 1:
        _fail("method.global_batch_size", f"must be >= 1 or null, got {m.global_batch_size}")
    schedulers = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr", "polynomial")
    if m.lr_scheduler_type not in schedulers:
        _fail("method.lr_scheduler_type", f"'{m.lr_scheduler_type}' is not one of {', '.join(schedulers)}")
    if m.name in PREFERENCE_METHODS:
        _check_preference(m)
    else:
        for key in ("beta", "loss_type", "loss_weights"):
            if m[key] is not None:
                _fail(f"method.{key}", f"only the preference methods (dpo, mpo) take it; method is {m.name}: drop it")
    if m.init_from is not None:
        from fcft import models

        problem = models.init_from_problem(m.init_from, spec.model)
        if problem:
            _fail("method.init_from", problem)


def _check_preference(m: DictConfig) -> None:
    if m.beta is None or m.beta <= 0:
        _fail("method.beta", f"{m.name} needs beta > 0 (the published recipe uses 0.1), got {m.beta}")
    if not m.loss_type:
        _fail(
            "method.loss_type",
            f"{m.name} needs a list of loss types, e.g. [sigmoid]; valid: {', '.join(DPO_LOSS_TYPES)}",
        )
    for loss in m.loss_type:
        if loss not in DPO_LOSS_TYPES:
            _fail("method.loss_type", f"unknown loss type '{loss}'; valid: {', '.join(DPO_LOSS_TYPES)}")
    if m.loss_weights is not None and len(m.loss_weights) != len(m.loss_type):
        _fail(
            "method.loss_weights",
            f"{len(m.loss_weights)} weights for {len(m.loss_type)} loss types "
            f"{list(m.loss_type)}: give one weight per loss type, or null for all 1.0",
        )


def _check_tuning(spec: DictConfig) -> None:
    t = spec.tuning
    if t.name in ADAPTER_TUNINGS:
        if t.lora_r < 1 or t.lora_alpha < 1:
            _fail("tuning.lora_r", f"lora_r and lora_alpha must be >= 1, got {t.lora_r} and {t.lora_alpha}")
        if not 0 <= t.lora_dropout < 1:
            _fail("tuning.lora_dropout", f"must be in [0, 1), got {t.lora_dropout}")
        if not t.lora_target_modules:
            _fail("tuning.lora_target_modules", "needs at least one module name (or 'all-linear')")
    if t.load_in_4bit:
        _check_4bit(t)
    elif t.name == TuningName.qlora:
        _fail(
            "tuning.load_in_4bit",
            "tuning=qlora loads the base weights in 4 bits; for LoRA on full-precision weights use tuning=lora",
        )
    if t.name == TuningName.spectrum:
        if not 0 < t.top_percent <= 100:
            _fail("tuning.top_percent", f"must be in (0, 100], got {t.top_percent}")
        if t.spectrum_file is not None:
            from fcft.train import spectrum_yaml

            problem = spectrum_yaml.problem(Path(t.spectrum_file))
            if problem:
                _fail("tuning.spectrum_file", problem)
    elif t.spectrum_file is not None:
        _fail("tuning.spectrum_file", f"only tuning=spectrum reads it; tuning is {t.name}")


def _check_4bit(t: DictConfig) -> None:
    import importlib.util

    if t.name not in ADAPTER_TUNINGS:
        _fail(
            "tuning.load_in_4bit",
            f"4-bit weights can't be trained directly, so tuning={t.name} can't use them; "
            "QLoRA trains LoRA adapters on 4-bit weights: use tuning=qlora",
        )
    if t.bnb_4bit_quant_type not in ("nf4", "fp4"):
        _fail("tuning.bnb_4bit_quant_type", f"'{t.bnb_4bit_quant_type}' is not one of nf4, fp4")
    if importlib.util.find_spec("bitsandbytes") is None:
        _fail("tuning.load_in_4bit", "4-bit weights need the bitsandbytes package: pip install 'fcft[qlora]'")


def _check_compute(spec: DictConfig) -> None:
    c = spec.compute
    if c.num_processes is not None and c.num_processes < 1:
        _fail("compute.num_processes", f"must be >= 1, or null for one process per GPU; got {c.num_processes}")
    if c.strategy == Strategy.none and c.num_processes != 1:
        _fail(
            "compute.strategy",
            f"'none' runs one process but compute.num_processes is {c.num_processes or 'null'}; "
            "pick compute.strategy=ddp or zero3 for several processes, or set compute.num_processes=1",
        )
    if c.num_processes is not None:
        accumulation_steps(spec.method, c.num_processes * c.instance_count)  # the global batch must divide
    if c.checkpoint_steps < 1:
        _fail("compute.checkpoint_steps", f"must be >= 1, got {c.checkpoint_steps}")
    _check_instance(c)
    if c.accelerator == Accelerator.cuda and c.instance_type is None:
        import torch

        if not torch.cuda.is_available():
            _fail(
                "compute.accelerator",
                "'cuda' needs a CUDA GPU and none is visible; use compute.accelerator=cpu or auto",
            )
    if spec.model.attn_implementation == "flash_attention_2" and c.accelerator == Accelerator.cpu:
        _fail(
            "model.attn_implementation",
            "flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa on CPU",
        )


def _check_instance(c: DictConfig) -> None:
    """The SageMaker fields: a job's machines, disk, time limits and spot capacity."""
    if c.instance_type is None:
        for key, default in (("instance_count", 1), ("use_spot", False), ("max_wait_s", None)):
            if c[key] != default:
                _fail(
                    f"compute.{key}",
                    "applies to SageMaker jobs only: set compute.instance_type too "
                    "(e.g. compute=ml.g5.2xlarge launcher=sagemaker)",
                )
        return
    if not c.instance_type.startswith("ml.") or c.instance_type.count(".") != 2:
        _fail("compute.instance_type", f"'{c.instance_type}' is not a SageMaker instance type (like ml.g5.2xlarge)")
    if c.instance_count < 1:
        _fail("compute.instance_count", f"must be >= 1, got {c.instance_count}")
    if c.volume_size_gb < 1:
        _fail("compute.volume_size_gb", f"must be >= 1, got {c.volume_size_gb}")
    if not 1 <= c.max_runtime_s <= MAX_RUNTIME_S:
        _fail("compute.max_runtime_s", f"must be in [1, {MAX_RUNTIME_S}] (28 days), got {c.max_runtime_s}")
    if c.use_spot:
        if c.max_wait_s is None or c.max_wait_s < c.max_runtime_s:
            _fail(
                "compute.max_wait_s",
                f"spot training needs max_wait_s >= max_runtime_s ({c.max_runtime_s}), got {c.max_wait_s}",
            )
    elif c.max_wait_s is not None:
        _fail("compute.max_wait_s", "applies to spot training only: set compute.use_spot=true or max_wait_s=null")


MAX_RUNTIME_S = 28 * 24 * 3600  # SageMaker's limit for a training job


def accumulation_steps(method: DictConfig, processes: int) -> int:
    """Gradient accumulation steps for `processes` processes in all: method.gradient_accumulation_steps, or
    derived from method.global_batch_size = per-device batch x accumulation x processes."""
    if method.global_batch_size is None:
        return method.gradient_accumulation_steps
    per_step = method.per_device_train_batch_size * processes
    if method.global_batch_size % per_step:
        _fail(
            "method.global_batch_size",
            f"{method.global_batch_size} is not a multiple of per_device_train_batch_size "
            f"x processes = {method.per_device_train_batch_size} x {processes} = {per_step}",
        )
    return method.global_batch_size // per_step


def _check_data(spec: DictConfig) -> None:
    d = spec.data
    if d.format is not None:
        _check_format("data.format", d.format)
    if d.limit is not None and d.limit < 1:
        _fail("data.limit", f"must be >= 1 or null, got {d.limit}")
    needed = {
        "test_path": spec.eval.enabled,
        "train_path": spec.method.name == MethodName.sft,
        "pref_path": spec.method.name in PREFERENCE_METHODS,
    }
    from_hub = False
    for key, used in needed.items():
        path = d[key]
        if path is not None:
            if not Path(path).is_file():
                _fail(f"data.{key}", f"file {path} does not exist")
        elif used and d.hub_id is None:
            _fail(f"data.{key}", "is null and data.hub_id is null: give a file or a hub dataset id")
        from_hub = from_hub or (used and path is None)
    if from_hub:
        from fcft import hub

        problem = hub.problem(d.hub_id, "dataset", None, "data.hub_id", "README.md")
        if problem:
            raise SpecError(problem)


def _check_eval(spec: DictConfig) -> None:
    e = spec.eval
    if e.format is not None:
        _check_format("eval.format", e.format)
    if e.limit is not None and e.limit < 1:
        _fail("eval.limit", f"must be >= 1 or null, got {e.limit}")
    if e.batch_size < 1:
        _fail("eval.batch_size", f"must be >= 1, got {e.batch_size}")
    if e.bootstrap_resamples < 1:
        _fail("eval.bootstrap_resamples", f"must be >= 1 (1000 is usual), got {e.bootstrap_resamples}")
    if e.enabled and e.backend == EvalBackend.lm_eval:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            _fail(
                "eval.backend", "lm_eval needs lm-evaluation-harness, which is not installed: pip install 'fcft[eval]'"
            )
    if not e.enabled and spec.method.name == MethodName.none:
        _fail("eval.enabled", "method=none only evaluates: with eval.enabled=false there is nothing to run")


def _check_tracking(spec: DictConfig) -> None:
    from fcft import tracking  # light: mlflow is imported inside its functions

    t = spec.tracking
    if t.name == TrackingName.none:
        return
    problem = tracking.uri_problem(t.uri)
    if problem:
        _fail("tracking.uri", problem)
    t.uri = tracking.store_uri(t.uri)
    if not t.experiment.strip():
        _fail("tracking.experiment", "must name an MLflow experiment, e.g. fcft")
    if t.parent_run_id is not None and tracking.run_id_in(t.parent_run_id) != t.parent_run_id:
        _fail("tracking.parent_run_id", f"'{t.parent_run_id}' is not an MLflow run id (32 hexadecimal characters)")


def _check_format(key: str, name: str) -> None:
    from fcft.data.formats import FORMATS

    if name not in FORMATS:
        _fail(key, f"unknown format '{name}'; valid formats: {', '.join(sorted(FORMATS))}")


def training_format(spec: DictConfig) -> str:
    return spec.data.format or spec.model.format


def eval_format(spec: DictConfig) -> str:
    return spec.eval.format or training_format(spec)
