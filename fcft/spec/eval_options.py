"""The eval group's schema (conf/eval/): the multiple-choice score, the answers the model generates
(eval.generate.*) and the judge (eval.judge.*). Like fcft/spec/options.py: each `check` validates its own values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from fcft.spec.base import Choice, fail


class EvalBackend(Choice):
    fcft = "fcft"  # fcft's scorer: each prompt runs once, its four choices on the prompt's cached keys/values
    lm_eval = "lm_eval"  # lm-evaluation-harness itself, on a task fcft writes (pip install 'fcft[eval]')


class GenerateSource(Choice):
    in_process = "in_process"  # the run's model generates, batched, in this process
    serve = (
        "serve"  # an OpenAI-compatible server fcft starts on the run's saved model (vLLM on a GPU, else transformers)
    )
    endpoint = "endpoint"  # a server you name: eval.generate.endpoint, endpoint_model, key_env


@dataclass(frozen=True)
class GenerateSpec:
    """Scoring the answers the model writes (fcft/eval/agent.py): tool-call accuracy, and the judge's verdicts."""

    enabled: bool = False
    # The rows are data.test_path's (or data.hub_id's test/llm_judge): When2Call test rows (the correct answer the
    # reference) or conversations (the last assistant turn the reference; eval.mcq=false: they have no choices).
    limit: Optional[int] = None  # first N rows
    source: GenerateSource = GenerateSource.in_process
    max_new_tokens: int = 256
    batch_size: int = 8  # in_process: rows per generate call
    concurrency: int = 4  # serve/endpoint: requests in flight
    endpoint: Optional[str] = None  # source=endpoint: the server's base URL, e.g. http://127.0.0.1:8000/v1
    endpoint_model: Optional[str] = None  # source=endpoint: the model name it serves
    key_env: Optional[str] = None  # source=endpoint: the environment variable holding its API key (null: none)

    def check(self) -> None:
        for key in ("max_new_tokens", "batch_size", "concurrency"):
            if getattr(self, key) < 1:
                fail(f"eval.generate.{key}", f"must be >= 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            fail("eval.generate.limit", f"must be >= 1 or null, got {self.limit}")
        named = self.endpoint is not None or self.endpoint_model is not None
        if self.source == GenerateSource.endpoint:
            if not (self.endpoint or "").startswith(("http://", "https://")):
                fail(
                    "eval.generate.endpoint",
                    f"source=endpoint needs the server's URL (http[s]://host/v1), got {self.endpoint!r}",
                )
            if not self.endpoint_model:
                fail("eval.generate.endpoint_model", "source=endpoint needs the model name the server serves")
        elif named:
            fail(
                "eval.generate.source",
                f"is {self.source.value}, but eval.generate.endpoint is set: use source=endpoint",
            )


@dataclass(frozen=True)
class JudgeSpec:
    """When2Call's LLM-as-judge (fcft/eval/judge.py) on any OpenAI-compatible endpoint; url null: no judge."""

    url: Optional[str] = None  # e.g. https://api.openai.com/v1
    model: Optional[str] = None  # e.g. gpt-4o
    key_env: Optional[str] = "OPENAI_API_KEY"  # the environment variable holding the key (null: none sent)
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4  # after a transient failure (connection, 429, 5xx)
    format_retries: int = 1  # re-asks after a reply that isn't the prescribed JSON (NVIDIA's protocol: 1)

    def check(self) -> None:
        if self.url is None:
            if self.model is not None:
                fail("eval.judge.url", "eval.judge.model is set but not the endpoint's URL")
            return
        if not self.url.startswith(("http://", "https://")):
            fail("eval.judge.url", f"must be an http(s) URL, e.g. https://api.openai.com/v1; got {self.url!r}")
        if not self.model:
            fail("eval.judge.model", "must name the judge model the endpoint serves, e.g. gpt-4o")
        if self.concurrency < 1 or self.max_retries < 0 or self.format_retries < 0 or not self.timeout_s > 0:
            fail("eval.judge", "concurrency must be >= 1, max_retries and format_retries >= 0, timeout_s > 0")


@dataclass(frozen=True)
class EvalSpec:
    """When2Call multiple-choice evaluation after training (conf/eval/)."""

    enabled: bool = True
    format: Optional[str] = None  # prompt format of the MCQ items; null = the training format
    limit: Optional[int] = None  # first N test rows
    # rows (prompts) per forward pass (lm_eval: 4 requests per row); null: from the free memory on a GPU; on a CPU
    # 1, on each core side by side
    batch_size: Optional[int] = None
    backend: EvalBackend = EvalBackend.fcft
    write_requests: bool = False  # also write eval/requests.jsonl: per row uuid, prompt, choices, gold index
    bootstrap_resamples: int = 1000  # row resamples behind the 95% intervals of acc_norm and macro_f1
    bootstrap_seed: int = 0
    # Also score the starting model on the same rows before training: metrics.json's eval_base, printed beside
    # the trained model's score (one more evaluation; on for the tiny model, conf/model_method/).
    baseline: bool = False
    mcq: bool = True  # the multiple-choice score; false: generations only (eval.generate.enabled)
    generate: GenerateSpec = field(default_factory=GenerateSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)

    def check(self) -> None:
        self.generate.check()
        self.judge.check()
        if self.enabled and not self.mcq and not self.generate.enabled:
            fail(
                "eval.mcq", "is false and eval.generate.enabled is false: nothing would be scored (eval.enabled=false)"
            )
        if self.judge.url is not None and not self.generate.enabled:
            fail("eval.judge.url", "the judge reads generated answers: set eval.generate.enabled=true")
        if self.limit is not None and self.limit < 1:
            fail("eval.limit", f"must be >= 1 or null, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            fail("eval.batch_size", f"must be >= 1 or null (from the GPU's free memory), got {self.batch_size}")
        if self.bootstrap_resamples < 1:
            fail("eval.bootstrap_resamples", f"must be >= 1 (1000 is usual), got {self.bootstrap_resamples}")
