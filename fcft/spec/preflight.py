"""Step 3 of validation, explicit I/O, before anything expensive starts: the model's weights and the data can be
reached (local files readable, hub repositories cached or reachable), a run named by `method.init_from` has a
model to start from, the Spectrum file parses, and the packages an option needs are installed.

An MLflow run id in `method.init_from` is looked up by the caller's `find_run` (fcft.tracking.run_dir_of): the
spec never talks to a tracking store itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Optional

from fcft.data.formats import CHAT_TEMPLATE
from fcft.data.when2call import PATH_KEYS
from fcft.rundir import MODEL
from fcft.spec import RunSpec
from fcft.spec.check import needed_parts
from fcft.spec.eval_options import EvalBackend, GenerateSource
from fcft.spec.options import PADDING_FREE, SpecError, fail
from fcft.spec.uris import run_id_in


def preflight(spec: RunSpec, find_run: Optional[Callable] = None) -> RunSpec:
    """The spec, with an MLflow run id in method.init_from replaced by its run directory; SpecError if the run
    can't start."""
    spec = _init_from(spec, find_run)
    _model(spec)
    _chat_template(spec)
    _data(spec)
    _tuning(spec)
    _packages(spec)
    _machine(spec)
    return spec


def _init_from(spec: RunSpec, find_run: Optional[Callable]) -> RunSpec:
    init_from = spec.method.init_from
    run_id = run_id_in(init_from) if init_from and not Path(init_from).exists() else None
    if run_id is None:
        return spec
    if not spec.tracking.enabled or find_run is None:
        fail(
            "method.init_from",
            f"'{init_from}' is an MLflow run id and can't be looked up here: give the run's "
            "directory, or use tracking=mlflow with tracking.uri naming the store that holds the run",
        )
    run_dir, problem = find_run(run_id, spec.tracking.uri)
    if problem:
        fail("method.init_from", problem)
    import dataclasses

    return spec.replace(method=dataclasses.replace(spec.method, init_from=run_dir))


def _model(spec: RunSpec) -> None:
    from fcft import models

    if "://" in (spec.method.init_from or spec.model.path or ""):
        return  # an s3:// URI: a SageMaker job's input, which only the job can see
    if spec.method.init_from is not None:
        problem = models.init_from_problem(spec.method.init_from, spec.model)
        if problem:
            fail("method.init_from", problem)
        return
    problem = models.source_problem(spec.model)
    if problem:
        raise SpecError(problem)


def _data(spec: RunSpec) -> None:
    from_hub = False
    for part in needed_parts(spec):
        key = PATH_KEYS[part]
        path = getattr(spec.data, key)
        if path is None:
            from_hub = True
        elif "://" in path:
            continue  # an s3:// URI: a SageMaker job's input channel
        elif Path(path).is_dir():
            fail(f"data.{key}", f"{path} is a directory; give a data file in it")
        elif not Path(path).is_file():
            fail(f"data.{key}", f"file {path} does not exist")
    if from_hub:
        from fcft import hub

        problem = hub.problem(spec.data.hub_id, "dataset", None, "data.hub_id", "README.md")
        if problem:
            raise SpecError(problem)


def _chat_template(spec: RunSpec) -> None:
    """model.chat_template reads and parses; with format=chat_template, the template renders tools and calls."""
    template = spec.model.chat_template
    if template is not None and "://" not in template:
        _parses(template)
    if CHAT_TEMPLATE not in (spec.training_format, spec.eval_format):
        return
    from fcft import models
    from fcft.data.chat import ChatTemplate, TemplateError

    source = str(Path(spec.method.init_from) / MODEL) if spec.method.init_from else models.resolve_source(spec.model)
    if "://" in source or "://" in (template or ""):
        return  # a SageMaker job's input: the job checks it
    key = "data.format" if spec.training_format == CHAT_TEMPLATE else "eval.format"
    try:
        ChatTemplate(models.load_tokenizer(spec.model, source), spec.model.name)
    except TemplateError as err:
        fail(key, str(err))
    except (OSError, ValueError) as err:
        fail(key, f"chat_template renders with the model's tokenizer, which doesn't load from {source}: {err}")


def _parses(template: str) -> None:
    try:
        text = Path(template).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail("model.chat_template", f"can't read {template} ({getattr(err, 'strerror', None) or err})")
    from jinja2 import Environment, TemplateSyntaxError

    try:
        Environment().parse(text)
    except TemplateSyntaxError as err:
        fail("model.chat_template", f"{template} line {err.lineno} is not valid Jinja: {err.message}")


def _tuning(spec: RunSpec) -> None:
    spectrum_file = getattr(spec.tuning, "spectrum_file", None)
    if spectrum_file is not None and "://" not in spectrum_file:
        from fcft.train import spectrum_yaml

        problem = spectrum_yaml.problem(Path(spectrum_file))
        if problem:
            fail("tuning.spectrum_file", problem)


def _generate(spec: RunSpec) -> None:
    """eval.generate: the API keys it names are set; a server fcft starts can start here, on full weights."""
    from fcft.eval import agent, server
    from fcft.train.methods import get as get_method

    problem = agent.key_problem(spec)
    if problem:
        raise SpecError(problem)
    if spec.eval.generate.source != GenerateSource.serve:
        return
    refusal = server.transformers_refusal() if server.vllm_refusal() else None
    if refusal:
        fail("eval.generate.source", f"serve: {refusal}; or eval.generate.source=in_process")
    if get_method(spec.method.name).trains and spec.tuning.name in ("lora", "qlora"):
        fail(
            "eval.generate.source",
            f"serve serves the saved model/, and tuning={spec.tuning.name} saves adapters: use "
            "eval.generate.source=in_process (the adapted model, in memory)",
        )


def _packages(spec: RunSpec) -> None:
    if spec.tuning.four_bit and importlib.util.find_spec("bitsandbytes") is None:
        fail(
            "tuning",
            f"tuning={spec.tuning.name} loads 4-bit weights, which needs the bitsandbytes package: "
            "pip install 'fcft[qlora]'",
        )
    if spec.eval.enabled and spec.eval.backend == EvalBackend.lm_eval and importlib.util.find_spec("lm_eval") is None:
        fail("eval.backend", "lm_eval needs lm-evaluation-harness, which is not installed: pip install 'fcft[eval]'")
    if spec.eval.enabled and spec.eval.generate.enabled:
        _generate(spec)
    uri = getattr(spec.tracking, "uri", None) or ""
    if uri.startswith("arn:") and importlib.util.find_spec("sagemaker_mlflow") is None:
        fail("tracking.uri", "a SageMaker MLflow ARN needs the sagemaker-mlflow plugin: pip install 'fcft[sagemaker]'")


def _machine(spec: RunSpec) -> None:
    """method.batching=padding_free and method.use_liger on this machine's device, for a run that trains here."""
    from fcft.train.methods import get

    m = spec.method
    local = spec.launcher.get("_target_", "").startswith("launchers.local.")
    if not (local and get(m.name).trains and (m.batching == PADDING_FREE or m.use_liger)):
        return  # a remote job checks its own machine as it builds the trainer (fcft/train/batching.py)
    from fcft.models import device_for
    from fcft.train.batching import device_problem

    problem = device_problem(spec, device_for(str(spec.compute.accelerator)))
    if problem:
        raise SpecError(problem)
