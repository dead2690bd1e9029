"""One run, from a spec to a finished run directory: data -> model -> train -> save -> evaluate -> record.

    python -m fcft.worker RUN_DIR/spec.yaml [--run-dir OTHER_DIR]

Every launcher ends here, with the same spec file; Hydra is never involved. The method comes from the registry
(fcft/train/methods/): its data part, its dataset and its trainer. The run directory's files (model/,
train_log.jsonl, eval/, metrics.json written last, error.json on failure) are named in fcft/rundir.py.

With tracking=mlflow (the default), rank 0 records the run in MLflow as it goes (fcft/tracking/): the run is
created before any data loads, so an unreachable store stops the run at once, and it is always ended.

In a run of several processes (`accelerate launch ... -m fcft.worker`), every rank trains and only rank 0
writes the run directory and evaluates, once, after training (under ZeRO-3, on the saved model/, since
each rank holds only a shard of the weights).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import traceback
from pathlib import Path

from fcft import distributed, models, rundir, tracking
from fcft import spec as run_spec
from fcft.data import formats
from fcft.data.when2call import DataError, load_part
from fcft.eval.metrics import METRICS
from fcft.spec import RunSpec
from fcft.spec.options import Strategy
from fcft.train.methods import get as get_method

log = logging.getLogger(__name__)


def run(spec: RunSpec, run_dir: Path) -> dict:
    """Execute the spec in run_dir; returns the metrics also written to metrics.json."""
    run_dir = rundir.RunDir(run_dir)
    main = distributed.is_main()
    tracker = None
    if main:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        (run_dir / rundir.ERROR).unlink(missing_ok=True)
    try:
        tracker = tracking.start(spec, run_dir.path) if main else None
        metrics = _run(spec, run_dir.path, tracker)
        if main:
            if tracker is not None:
                metrics["tracking"] = tracker.record
            run_dir.write_metrics(metrics)
    except BaseException as err:
        if main:
            run_dir.write_error(err, traceback=traceback.format_exc())
        if tracker is not None:
            tracker.fail(run_dir.path, err)
        raise
    if tracker is not None:
        try:
            tracker.finish(run_dir.path, metrics)
        except Exception as err:  # the run itself is complete on disk
            log.warning("MLflow: run %s was not completed in %s: %s", tracker.run_id, tracker.uri, err)
    return metrics


def _run(spec: RunSpec, run_dir: Path, tracker: tracking.Tracker | None) -> dict:
    method = get_method(spec.method.name)
    train_format = formats.get(spec.training_format)
    eval_format = formats.get(spec.eval_format)
    metrics: dict = {"train": {}, "eval": {}, "data": {}}

    # Every row is read and checked before a model is loaded.
    train_rows = load_part(spec.data, method.part, spec.data.limit) if method.trains else None
    test_rows = load_part(spec.data, "test", spec.eval.limit) if spec.eval.enabled else None
    for part, loaded in (("train", train_rows), ("test", test_rows)):
        if loaded is not None:
            metrics["data"][part] = {"source": loaded.source, "rows": len(loaded.rows), "skipped": len(loaded.skipped)}
            for reason in loaded.skipped:
                log.warning("skipped: %s", reason)

    if method.trains:
        from transformers import set_seed

        set_seed(spec.method.seed)
    device = models.device_for(spec.compute.accelerator)
    model, tokenizer = models.load(spec, device)  # method.init_from: a previous run's weights and tokenizer

    if method.trains:
        dataset = method.dataset(train_rows.rows, train_format, tokenizer, spec.model.max_length)
        callbacks = [tracker.callback()] if tracker is not None else []
        trainer = method.train(spec, model, tokenizer, dataset, run_dir, device, callbacks)
        model = trainer.model
        _save_model(trainer, tokenizer, run_dir / rundir.MODEL)
        if not distributed.is_main():
            return metrics
        rundir.write_jsonl(run_dir / rundir.TRAIN_LOG, trainer.state.log_history)
        metrics["train"] = {**_train_summary(trainer), "init_from": spec.method.init_from}
        shutil.rmtree(run_dir / rundir.TRAINER, ignore_errors=True)  # empty unless checkpoints were asked for
        if spec.compute.strategy == Strategy.zero3:
            model = models.load_gathered(spec.model, device, run_dir / rundir.MODEL)

    if spec.eval.enabled and distributed.is_main():
        metrics["eval"] = _evaluate(spec, model, tokenizer, test_rows.rows, eval_format, run_dir)
    return metrics


def _evaluate(spec: RunSpec, model, tokenizer, rows: list[dict], eval_format, run_dir: Path) -> dict:
    from fcft.data.prepare import mcq_item
    from fcft.eval.mcq import evaluate, requests
    from fcft.report import plots

    e = spec.eval
    items = [mcq_item(row, eval_format) for row in rows]
    if e.write_requests:
        rundir.write_jsonl(run_dir / rundir.REQUESTS, requests(items))
    eval_metrics, samples = evaluate(
        model,
        tokenizer,
        items,
        batch_size=e.batch_size,
        backend=str(e.backend),
        resamples=e.bootstrap_resamples,
        seed=e.bootstrap_seed,
    )
    rundir.write_jsonl(run_dir / rundir.SAMPLES, samples)
    title = f"{spec.model.name} {spec.method.name}: acc {eval_metrics['acc']:.3f} (n={eval_metrics['n']})"
    plots.confusion(eval_metrics["confusion"], run_dir / rundir.CONFUSION, title=title)
    return {**eval_metrics, "format": eval_format.name, "backend": str(e.backend)}


def _train_summary(trainer) -> dict:
    state = trainer.state
    final = next((h for h in reversed(state.log_history) if "train_loss" in h), {})
    processes = trainer.accelerator.num_processes
    return {
        "loss": final.get("train_loss"),
        "steps": state.global_step,
        "epochs": state.epoch,
        "runtime_s": final.get("train_runtime"),
        "samples_per_second": final.get("train_samples_per_second"),
        "processes": processes,
        "global_batch_size": trainer.args.per_device_train_batch_size
        * trainer.args.gradient_accumulation_steps
        * processes,
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


def metrics_table(metrics: dict) -> str:
    """A short text table of the headline numbers: train loss and steps, then every eval metric (METRICS)."""
    train, ev = metrics.get("train") or {}, metrics.get("eval") or {}
    rows = [
        ("train loss", f"{train['loss']:.4f}" if train.get("loss") is not None else ""),
        ("train steps", str(train.get("steps") or "")),
    ]
    rows += [(f"eval {metric.key}", metric.show(ev)) for metric in METRICS]
    rows += [("eval format", ev.get("format") or "")]
    shown = [(name, value) for name, value in rows if value]
    width = max((len(name) for name, _ in shown), default=0)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcft.worker", description="Run a fcft spec file.")
    parser.add_argument("spec", type=Path, help="a run directory's spec.yaml")
    parser.add_argument("--run-dir", type=Path, help="where to write outputs (default: the spec's directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        spec = run_spec.load(args.spec, find_run=tracking.run_dir_of)
    except run_spec.SpecError as err:
        print(f"fcft: invalid spec: {err}", file=sys.stderr)
        return 2
    run_dir = args.run_dir or args.spec.parent
    if args.run_dir and distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        run_spec.save(spec, run_dir / rundir.SPEC)
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
