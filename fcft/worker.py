"""One run, from a spec to a finished run directory: data -> model -> train -> save -> evaluate -> record.

    python -m fcft.worker RUN_DIR/spec.yaml [--run-dir OTHER_DIR]

Every launcher ends here, with the same spec file; Hydra is never involved. The run directory gets:
    spec.yaml           the spec that ran (written by the CLI, or copied here with --run-dir)
    model/              the trained weights + tokenizer (PEFT adapter for LoRA/QLoRA), loadable with from_pretrained
    spectrum.yaml       Spectrum runs only: the unfrozen-parameter patterns the run used
    train_log.jsonl     the trainer's log history, one record per logging step
    eval/samples.jsonl  per test row: uuid, gold, predicted (argmax log-likelihood), predicted_norm, loglikelihoods
    eval/confusion.png  the 4 x 4 confusion matrix (true answer category x predicted)
    eval/requests.jsonl eval.write_requests=true only: per test row uuid, prompt, choices, gold index
    metrics.json        {"train": {..., "init_from"}, "eval": {"acc", "acc_norm", "acc_norm_ci95", "macro_f1",
                        "macro_f1_ci95", "tool_hallucination_rate", "confusion", "n", "format", "backend"},
                        "data": {...}, "tracking": {"run_id", "experiment_id", "uri", "url"}}, written last
    error.json          only when the run failed: the error's type and message

With tracking=mlflow (the default), rank 0 records the run in MLflow as it goes (fcft/tracking/): the run is
created before any data loads, so an unreachable store stops the run at once, and it is always ended.

In a run of several processes (`accelerate launch ... -m fcft.worker`), every rank trains and only rank 0
writes the run directory and evaluates, once, after training (under ZeRO-3, on the saved model/, since
each rank holds only a shard of the weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig

from fcft import distributed, models, tracking
from fcft import spec as run_spec
from fcft.data import formats
from fcft.data.when2call import DataError, load_part
from fcft.train import train_part

log = logging.getLogger(__name__)


def run(spec: DictConfig, run_dir: Path) -> dict:
    """Execute the spec in run_dir; returns the metrics also written to metrics.json."""
    run_dir = Path(run_dir)
    main = distributed.is_main()
    tracker = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.json").unlink(missing_ok=True)
    try:
        tracker = tracking.start(spec, run_dir) if main else None
        metrics = _run(spec, run_dir, tracker)
        if main:
            if tracker is not None:
                metrics["tracking"] = tracker.record
            _write_json(run_dir / "metrics.json", metrics)
    except BaseException as err:
        if main:
            _write_json(
                run_dir / "error.json",
                {"type": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()},
            )
        if tracker is not None:
            tracker.fail(run_dir, err)
        raise
    if tracker is not None:
        try:
            tracker.finish(run_dir, metrics)
        except Exception as err:  # the run itself is complete on disk
            log.warning("MLflow: run %s was not completed in %s: %s", tracker.run_id, tracker.uri, err)
    return metrics


def _run(spec: DictConfig, run_dir: Path, tracker: tracking.Tracker | None) -> dict:
    from transformers import set_seed

    set_seed(spec.method.seed)
    training = spec.method.name != run_spec.MethodName.none
    train_format = formats.get(run_spec.training_format(spec))
    eval_format = formats.get(run_spec.eval_format(spec))
    metrics: dict = {"train": {}, "eval": {}, "data": {}}

    # Every row is read and checked before a model is loaded.
    train_rows = load_part(spec.data, train_part(spec.method.name), spec.data.limit) if training else None
    test_rows = load_part(spec.data, "test", spec.eval.limit) if spec.eval.enabled else None
    for part, loaded in (("train", train_rows), ("test", test_rows)):
        if loaded is not None:
            metrics["data"][part] = {"source": loaded.source, "rows": len(loaded.rows), "skipped": len(loaded.skipped)}
            for reason in loaded.skipped:
                log.warning("skipped: %s", reason)

    device = models.device_for(spec.compute.accelerator)
    model, tokenizer = models.load(spec, device)  # method.init_from: a previous run's weights and tokenizer

    if training:
        from fcft.train import train

        callbacks = [tracker.callback()] if tracker is not None else []
        trainer = train(spec, model, tokenizer, train_rows.rows, train_format, run_dir, device, callbacks)
        model = trainer.model
        _save_model(trainer, tokenizer, run_dir / "model")
        if not distributed.is_main():
            return metrics
        _write_jsonl(run_dir / "train_log.jsonl", trainer.state.log_history)
        metrics["train"] = {**_train_summary(trainer), "init_from": spec.method.init_from}
        shutil.rmtree(run_dir / "trainer", ignore_errors=True)  # empty unless checkpoints were asked for
        if spec.compute.strategy == run_spec.Strategy.zero3:
            model = models.load_gathered(spec.model, device, run_dir / "model")

    if spec.eval.enabled and distributed.is_main():
        from fcft.data.prepare import mcq_item
        from fcft.eval.mcq import evaluate, requests

        e = spec.eval
        items = [mcq_item(row, eval_format) for row in test_rows.rows]
        if e.write_requests:
            _write_jsonl(run_dir / "eval" / "requests.jsonl", requests(items))
        eval_metrics, samples = evaluate(
            model,
            tokenizer,
            items,
            batch_size=e.batch_size,
            backend=str(e.backend),
            resamples=e.bootstrap_resamples,
            seed=e.bootstrap_seed,
        )
        _write_jsonl(run_dir / "eval" / "samples.jsonl", samples)
        metrics["eval"] = {**eval_metrics, "format": eval_format.name, "backend": str(e.backend)}
        from fcft.report import plots

        plots.confusion(
            eval_metrics["confusion"],
            run_dir / "eval" / "confusion.png",
            title=f"{spec.model.name} {spec.method.name}: acc {eval_metrics['acc']:.3f} (n={eval_metrics['n']})",
        )
    return metrics


def _train_summary(trainer) -> dict:
    state = trainer.state
    final = next((h for h in reversed(state.log_history) if "train_loss" in h), {})
    return {
        "loss": final.get("train_loss"),
        "steps": state.global_step,
        "epochs": state.epoch,
        "runtime_s": final.get("train_runtime"),
        "samples_per_second": final.get("train_samples_per_second"),
        "processes": trainer.accelerator.num_processes,
        "global_batch_size": trainer.args.per_device_train_batch_size
        * trainer.args.gradient_accumulation_steps
        * trainer.accelerator.num_processes,
    }


def _save_model(trainer, tokenizer, target: Path) -> None:
    """Weights and tokenizer into target, atomically: a failed save leaves no half-written model/.
    Every rank calls it (ZeRO-3 gathers the weights' shards here); rank 0 writes."""
    tmp = target.with_name(f".{target.name}.tmp")
    if distributed.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not distributed.is_main():
        return
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def metrics_table(metrics: dict) -> str:
    """A short text table of the headline numbers."""
    ev = metrics["eval"]
    rows = [("train loss", metrics["train"].get("loss"), None), ("train steps", metrics["train"].get("steps"), None)]
    keys = ("acc", "acc_norm", "macro_f1", "tool_hallucination_rate", "n", "format")
    rows += [(f"eval {k}", ev.get(k), ev.get(f"{k}_ci95")) for k in keys]
    shown = [
        (k, (f"{v:.4f}" if isinstance(v, float) else str(v)) + _interval(ci)) for k, v, ci in rows if v is not None
    ]
    width = max((len(k) for k, _ in shown), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in shown)


def _interval(ci) -> str:
    return f"  (95% CI {ci[0]:.4f} to {ci[1]:.4f})" if ci else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcft.worker", description="Run a fcft spec file.")
    parser.add_argument("spec", type=Path, help="a run directory's spec.yaml")
    parser.add_argument("--run-dir", type=Path, help="where to write outputs (default: the spec's directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        spec = run_spec.load(args.spec)
    except run_spec.SpecError as err:
        print(f"fcft: invalid spec: {err}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or args.spec.parent
    if args.run_dir and distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        run_spec.save(spec, run_dir / run_spec.SPEC_FILE)
    try:
        metrics = run(spec, run_dir)
    except DataError as err:
        print(f"fcft: bad data: {err}", file=sys.stderr)
        return 2
    if distributed.is_main():
        print(f"fcft: run finished in {run_dir}\n{metrics_table(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
