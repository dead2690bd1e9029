"""The `lm_eval` evaluation backend: lm-evaluation-harness 0.4 scores fcft's items itself, for cross-checking.

fcft writes a multiple_choice task (YAML) and its docs (JSONL: the rows rendered by fcft's format, which
equal NVIDIA's `process_docs_*` output byte for byte) into a temporary directory, and runs it with
`simple_evaluate` on the model in memory:

    doc_to_text: prompt    doc_to_choice: choices    doc_to_target: target_index    target_delimiter: ""

HFLM is set up the way fcft's own backend scores, so the two agree row by row:
- add_bos_token=False: no BOS before the prompt. NVIDIA's published numbers predate lm-eval's change to
  "let the tokenizer decide" (PR #3347, late 2025), which adds Llama 3's <|begin_of_text|>; without a BOS is
  how they were made. Qwen tokenizers add none either way.
- max_length: the model's maximum length as fcft resolves it (the same rule as HFLM's).
- softmax_dtype=float32: log-probabilities in float32 even for a bf16 model (lm-eval's default would
  take them in the model's dtype).
- batch_size: 4 requests (one row's choices) per fcft row; eval.batch_size=null: lm-eval's "auto" on a GPU.

The per-row log-likelihoods come back from the logged samples; lm-eval's own acc and acc_norm are checked
against the ones fcft computes from them (macro-F1 and the rest lm-eval 0.4.13 doesn't emit for this task).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fcft.data.formats import CATEGORIES
from fcft.data.prepare import McqItem
from fcft.eval import metrics as mcq_metrics

TASK = "fcft-when2call"
MISSING = "eval.backend=lm_eval needs lm-evaluation-harness: pip install 'fcft[eval]'"


def task_config(docs_path: Path, cache_dir: Path) -> dict:
    """The lm-eval task: NVIDIA's when2call-* tasks' fields, over docs fcft already rendered."""
    return {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs_path)}, "cache_dir": str(cache_dir)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "target_index",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def write_task(items: list[McqItem], directory: Path) -> Path:
    """The task YAML and its docs in `directory`; returns the YAML's path."""
    import yaml

    docs = directory / "docs.jsonl"
    docs.write_text("".join(json.dumps({"uuid": i.uuid, **i.as_doc()}) + "\n" for i in items))
    path = directory / f"{TASK}.yaml"
    path.write_text(yaml.safe_dump(task_config(docs, directory / "datasets-cache"), sort_keys=False))
    return path


def score(
    model, tokenizer, items: list[McqItem], batch_size: int | None, max_length: int, requests: int | None = None
) -> list[list[float]]:
    """Per item, the 4 log-likelihoods lm-eval computes (in item order), checked against lm-eval's own metrics.
    `requests` per pass, when given, instead of `batch_size` rows (4 requests each)."""
    loglikelihoods, reported = run(model, tokenizer, items, batch_size, max_length, requests)
    _check_reported(reported, items, loglikelihoods)
    return loglikelihoods


def run(
    model, tokenizer, items: list[McqItem], batch_size: int | None, max_length: int, requests: int | None = None
) -> tuple[list[list[float]], dict]:
    """(per-item log-likelihoods, lm-eval's own {"acc", "acc_norm"}) from one `simple_evaluate` of the items."""
    try:
        import torch
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError(MISSING) from None

    with tempfile.TemporaryDirectory(prefix="fcft-lm-eval-") as tmp:
        write_task(items, Path(tmp))
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=requests or _requests_per_batch(model, batch_size),
            max_length=max_length,
            add_bos_token=False,
            softmax_dtype=torch.float32,
        )
        output = simple_evaluate(
            model=lm,
            tasks=[TASK],
            task_manager=TaskManager(include_path=tmp, include_defaults=False),
            num_fewshot=0,
            log_samples=True,
            bootstrap_iters=0,
        )
    samples = sorted(output["samples"][TASK], key=lambda s: s["doc_id"])
    if [s["doc"]["uuid"] for s in samples] != [i.uuid for i in items]:
        raise RuntimeError(f"lm-eval returned {len(samples)} samples that don't match the {len(items)} rows given")
    loglikelihoods = [[float(ll) for ll, _ in s["filtered_resps"]] for s in samples]
    results = output["results"][TASK]
    return loglikelihoods, {metric: results[f"{metric},none"] for metric in ("acc", "acc_norm")}


def _requests_per_batch(model, batch_size):
    """4 requests per row; rows None: lm-eval's own "auto" on a GPU, elsewhere one request, lm-eval's own default and
    its fastest on a CPU (benchmarks/README.md: 45 s at 1 request, 57 s at 4, 93 s at 32)."""
    if batch_size is not None:
        return batch_size * len(CATEGORIES)
    return "auto" if next(model.parameters()).device.type == "cuda" else 1


def _check_reported(reported: dict, items: list[McqItem], loglikelihoods: list[list[float]]) -> None:
    """lm-eval's own acc/acc_norm must be what its per-row log-likelihoods give: else the samples were misread."""
    lengths = [[len(c) for c in item.choices] for item in items]
    predicted, predicted_norm = mcq_metrics.predictions(loglikelihoods, lengths)
    gold = [item.gold for item in items]
    ours = {"acc": (predicted == gold).mean(), "acc_norm": (predicted_norm == gold).mean()}
    for metric, value in ours.items():
        if abs(reported[metric] - value) > 1e-9:
            raise RuntimeError(f"lm-eval reports {metric}={reported[metric]} but its samples give {value}")
