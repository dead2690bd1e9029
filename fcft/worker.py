"""One run, from a spec to a finished run directory: data -> model -> train -> save -> evaluate -> record.

    python -m fcft.worker RUN_DIR/spec.yaml [--run-dir OTHER_DIR] [--overwrite]

Every launcher ends here, with the same spec file; Hydra is never involved. The method comes from the registry
(fcft/train/methods/): its data part, its dataset and its trainer. The run directory's files (model/,
train_log.jsonl, eval/, metrics.json written last, error.json on failure) are named in fcft/rundir.py. A run holds
its directory (fcft.rundir.claim: running.json while it runs; another run's outputs refused unless overwrite) and
clears what an earlier run left there, so a failed run leaves error.json and nothing that looks like results.
With compute.checkpoint_dir, a run started again resumes from its newest complete checkpoint (fcft/train/args.py).

With tracking=mlflow (the default), rank 0 records the run in MLflow as it goes (fcft/tracking/): the run is
created before any data loads, so an unreachable store stops the run at once, and it is always ended.

In a run of several processes (`accelerate launch ... -m fcft.worker`), every rank trains and only rank 0
writes the run directory and evaluates, once, after training (under ZeRO-3, on the saved model/, since
each rank holds only a shard of the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import traceback
from pathlib import Path

from fcft import distributed, models, rundir, tracking
from fcft import spec as run_spec
from fcft.data import formats
from fcft.data.when2call import RowError, load_part
from fcft.eval.metrics import GENERATE_METRICS, METRICS, generate_scalars
from fcft.runs import jobs
from fcft.spec import RunSpec
from fcft.spec.options import Strategy
from fcft.train import args as train_args
from fcft.train.methods import get as get_method

log = logging.getLogger(__name__)


def run(spec: RunSpec, run_dir: Path, overwrite: bool = False) -> dict:
    """Execute the spec in run_dir; returns the metrics also written to metrics.json. rundir.RunDirError when
    another run holds run_dir, or its outputs are another run's and not `overwrite`."""
    main = distributed.is_main()
    holding = rundir.claim(run_dir, spec.to_dict(), overwrite) if main else contextlib.nullcontext()
    with holding:
        return _held(spec, rundir.RunDir(run_dir), main)


def _held(spec: RunSpec, run_dir: rundir.RunDir, main: bool) -> dict:
    tracker = None
    try:
        rows = _rows(spec)  # every row read and checked before the MLflow run starts and a model loads
        tracker = tracking.start(spec, run_dir.path, resumes=run_dir.killed_run()) if main else None
        if tracker is not None:
            run_dir.note_running(mlflow_run_id=tracker.run_id, mlflow_uri=tracker.uri)  # for a run that resumes this
        metrics = _run(spec, run_dir.path, tracker, rows)
        if main:
            if tracker is not None:
                metrics["tracking"] = tracker.record
            run_dir.write_metrics(metrics)
    except BaseException as err:
        if main:
            try:
                run_dir.write_error(err, traceback=traceback.format_exc())
            except OSError as unwritable:  # a full disk: the MLflow run is still ended, below
                log.error("%s could not be written (%s): the run failed with %r", rundir.ERROR, unwritable, err)
        if tracker is not None:
            tracker.fail(run_dir.path, err)
        raise
    if tracker is not None:
        try:
            tracker.finish(run_dir.path, metrics)
        except Exception as err:  # the run itself is complete on disk
            log.warning("MLflow: run %s was not completed in %s: %s", tracker.run_id, tracker.uri, err)
    return metrics


def _rows(spec: RunSpec) -> tuple:
    """(training rows, MCQ test rows, rows to generate answers for) of the run, each a when2call.Loaded or None;
    DataError naming file and row."""
    method = get_method(spec.method.name)
    single_turn = None if spec.training_format == formats.CHAT_TEMPLATE else spec.training_format
    train_rows = load_part(spec.data, method.part, spec.data.limit, single_turn) if method.trains else None
    test_rows = load_part(spec.data, "test", spec.eval.limit) if spec.eval.enabled and spec.eval.mcq else None
    generating = spec.eval.enabled and spec.eval.generate.enabled
    generate_rows = load_part(spec.data, "generate", spec.eval.generate.limit) if generating else None
    return train_rows, test_rows, generate_rows


def _run(spec: RunSpec, run_dir: Path, tracker: tracking.Tracker | None, rows: tuple) -> dict:
    method = get_method(spec.method.name)
    metrics: dict = {"train": {}, "eval": {}, "data": {}}
    train_rows, test_rows, generate_rows = rows
    for part, loaded in (("train", train_rows), ("test", test_rows), ("generate", generate_rows)):
        if loaded is not None:
            metrics["data"][part] = {"source": loaded.source, "rows": len(loaded.rows), "skipped": len(loaded.skipped)}
            for reason in loaded.skipped:
                log.warning("skipped: %s", reason)

    if method.trains:
        from transformers import set_seed

        set_seed(spec.method.seed)
    device = models.device_for(spec.compute.accelerator)
    model, tokenizer = models.load(spec, device)  # method.init_from: a previous run's weights and tokenizer
    train_format = formats.get(spec.training_format, tokenizer, spec.model.name)  # chat_template: this tokenizer's
    eval_format = formats.get(spec.eval_format, tokenizer, spec.model.name)
    if method.trains and test_rows is not None and spec.eval.baseline and distributed.is_main():
        from fcft.eval.mcq import evaluate_rows  # the starting model on the same rows, to compare with

        with _located(test_rows):
            metrics["eval_base"], _, _ = evaluate_rows(model, tokenizer, test_rows.rows, eval_format, spec.eval)

    if method.trains:
        with _located(train_rows):
            dataset = method.dataset(train_rows.rows, train_format, tokenizer, spec.model.max_length)
        clock = train_args.run_clock()
        callbacks = [clock] + ([tracker.callback()] if tracker is not None else [])
        try:
            trainer = method.train(spec, model, tokenizer, dataset, run_dir, device, callbacks)
            model, state = trainer.model, trainer.state
            _save_model(trainer, tokenizer, run_dir / rundir.MODEL)
        except train_args.AlreadyTrained as done:  # its newest checkpoint is at max_steps: nothing to train
            log.info("%s: the model is taken from the checkpoint as it is", done)
            model, state = done.model, done.state
            _copy_model(Path(train_args.resume_from(spec)), tokenizer, run_dir / rundir.MODEL)
        if not distributed.is_main():
            return metrics
        rundir.write_jsonl(run_dir / rundir.TRAIN_LOG, state.log_history)
        batch = spec.method.per_device_train_batch_size * spec.method.accumulation_steps(distributed.world_size())
        summary = _train_summary(state, clock, distributed.world_size(), batch * distributed.world_size())
        metrics["train"] = {**summary, "init_from": spec.method.init_from}
        shutil.rmtree(run_dir / rundir.TRAINER, ignore_errors=True)  # empty unless checkpoints were asked for
        if spec.compute.strategy == Strategy.zero3:
            model = models.load_gathered(spec.model, device, run_dir / rundir.MODEL)

    if test_rows is not None and distributed.is_main():
        with _located(test_rows):
            metrics["eval"] = _evaluate(spec, model, tokenizer, test_rows.rows, eval_format, run_dir)
    if generate_rows is not None and distributed.is_main():
        model_dir = run_dir / rundir.MODEL if method.trains else _saved_model(spec)
        metrics["generate"] = _generate(spec, model, tokenizer, generate_rows, eval_format, run_dir, model_dir)
    return metrics


@contextlib.contextmanager
def _located(loaded):
    """A row the format can't render (RowError) named by its file and line."""
    try:
        yield
    except RowError as err:
        raise loaded.locate(err) from None


def _evaluate(spec: RunSpec, model, tokenizer, rows: list[dict], eval_format, run_dir: Path) -> dict:
    from fcft.eval.mcq import evaluate_rows, requests
    from fcft.report import plots

    block, samples, items = evaluate_rows(model, tokenizer, rows, eval_format, spec.eval)
    if spec.eval.write_requests:
        rundir.write_jsonl(run_dir / rundir.REQUESTS, requests(items))
    rundir.write_jsonl(run_dir / rundir.SAMPLES, samples)
    title = f"{spec.model.name} {spec.method.name}: acc {block['acc']:.3f} (n={block['n']})"
    plots.confusion(block["confusion"], run_dir / rundir.CONFUSION, title=title)
    return block


def _generate(spec: RunSpec, model, tokenizer, loaded, eval_format, run_dir: Path, model_dir) -> dict:
    from fcft.eval import agent
    from fcft.eval import generate as gen

    with _located(loaded):
        requests = gen.requests(loaded.rows)
    answers = agent.answer(spec, model, tokenizer, eval_format, requests, model_dir, run_dir / rundir.SERVER_LOG)
    block, per_row = agent.score(spec, loaded.rows, requests, answers)
    rundir.write_jsonl(run_dir / rundir.GENERATIONS, per_row)
    return block


def _saved_model(spec: RunSpec) -> Path | None:
    """The directory holding the weights a method=none run scores (for eval.generate.source=serve)."""
    if spec.method.init_from:
        return Path(spec.method.init_from) / rundir.MODEL
    source = Path(models.resolve_source(spec.model))
    return source if source.is_dir() else None


def _train_summary(state, clock, processes: int, global_batch_size: int) -> dict:
    """Loss, runtime and throughput of the whole run. One segment: the trainer's own train_* numbers. A run resumed
    from a checkpoint: the loss averaged over every logged step of its log history (the earlier segments' too), the
    time of every segment (RunClock), the samples of every step."""
    final = next((h for h in reversed(state.log_history) if "train_loss" in h), {})
    summary = {
        "loss": final.get("train_loss"),
        "steps": state.global_step,
        "epochs": state.epoch,
        "runtime_s": final.get("train_runtime"),
        "samples_per_second": final.get("train_samples_per_second"),
        "processes": processes,
        "global_batch_size": global_batch_size,
    }
    if clock.first_step > 0:  # resumed: the trainer's train_* numbers cover the last segment only
        runtime = clock.before_s + (final.get("train_runtime") or 0.0 if final.get("step") == state.global_step else 0)
        summary.update(
            loss=_logged_loss(state.log_history),
            runtime_s=runtime,
            samples_per_second=state.global_step * global_batch_size / runtime if runtime else None,
            resumed_from_step=clock.first_step,
        )
    return summary


def _logged_loss(history: list[dict]) -> float | None:
    """The mean training loss over the logged steps: each logged loss weighted by the steps it averages."""
    total, last = 0.0, 0
    for record in history:
        if "loss" in record and "step" in record and record["step"] > last:
            total += record["loss"] * (record["step"] - last)
            last = record["step"]
    return total / last if last else None


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


def _copy_model(checkpoint: Path, tokenizer, target: Path) -> None:
    """model/ from a checkpoint's saved model (what trainer.save_model wrote there), atomically; rank 0 only."""
    if not distributed.is_main():
        return
    with rundir.atomic_dir(target) as tmp:
        for path in train_args.model_files(checkpoint):
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, tmp / path.name)
        tokenizer.save_pretrained(str(tmp))


def metrics_table(metrics: dict) -> str:
    """A short text table of the headline numbers: train loss and steps, then every eval metric (METRICS)."""
    train, ev = metrics.get("train") or {}, metrics.get("eval") or {}
    rows = [
        ("train loss", f"{train['loss']:.4f}" if train.get("loss") is not None else ""),
        ("train steps", str(train.get("steps") or "")),
    ]
    base = metrics.get("eval_base")
    if base:  # eval.baseline: the starting model's score beside the trained one's
        width = max(len(metric.show(base)) for metric in METRICS)
        rows += [("eval", f"{'base'.ljust(width)}  trained")]
        rows += [(f"eval {m.key}", f"{m.show(base).ljust(width)}  {m.show(ev)}".rstrip()) for m in METRICS]
    else:
        rows += [(f"eval {metric.key}", metric.show(ev)) for metric in METRICS]
    rows += [("eval format", ev.get("format") or "")]
    generated = metrics.get("generate")
    if generated:  # eval.generate: the answers the model wrote, scored
        scalars = generate_scalars(generated)
        rows += [(f"generate {m.key}", m.show(scalars)) for m in GENERATE_METRICS]
        rows += [("generate judge", generated["judge"] if isinstance(generated.get("judge"), str) else "")]
    shown = [(name, value) for name, value in rows if value]
    width = max((len(name) for name, _ in shown), default=0)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in shown)


def main(argv: list[str] | None = None) -> int:
    """The worker's command line; exit status 2 for bad input (spec, data, files), 1 for a failed run, 130 when
    interrupted, 143 on SIGTERM, with one line saying why (fcft.runs.jobs; FCFT_DEBUG=1 adds the traceback)."""
    parser = argparse.ArgumentParser(prog="python -m fcft.worker", description="Run a fcft spec file.")
    parser.add_argument("spec", type=Path, help="a run directory's spec.yaml")
    parser.add_argument("--run-dir", type=Path, help="where to write outputs (default: the spec's directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace another run's outputs in --run-dir")
    args = parser.parse_args(argv)
    jobs.handle_sigterm()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    run_dir = args.run_dir or args.spec.parent
    try:
        spec = run_spec.load(args.spec, find_run=tracking.run_dir_of)
        if distributed.is_main():
            # --run-dir: a new spec.yaml there; else the directory's own spec, the same run again
            with rundir.claim(run_dir, spec.to_dict() if args.run_dir else None, args.overwrite):
                if args.run_dir:
                    run_spec.save(spec, run_dir / rundir.SPEC)
                metrics = run(spec, run_dir)
        else:
            metrics = run(spec, run_dir)
    except BaseException as err:  # noqa: BLE001 -- one line and an exit status, for every error
        if isinstance(err, SystemExit):
            raise
        return jobs.fail(err, run_dir if (Path(run_dir) / rundir.ERROR).is_file() else None)
    distributed.leave()
    if distributed.is_main():
        print(f"fcft: run finished in {run_dir}\n{metrics_table(metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
