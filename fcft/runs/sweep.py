"""The start and end of a multirun: its MLflow parent run; waiting for every submitted job, collecting the
results, reporting what failed and why.

Hydra calls `MultirunEnd.on_multirun_start` before the first job (conf/config.yaml, hydra.callbacks): with
tracking on, it creates the sweep's MLflow parent run (fcft/tracking/). It calls `on_multirun_end` once all
jobs were started. Local jobs have finished by then; jobs a remote launcher submitted (SageMaker) are
polled with a live status table until each is done, then collected into their run directories. The
summary goes to the terminal and to the sweep's report writers (`REPORT_WRITERS`: sweep.json, the report in
multirun_reports/, the parent run's end); the command exits non-zero when any job failed. The same, for
sweeps or single runs submitted earlier:

    python -m fcft.runs SWEEP_OR_RUN_DIR [...]

A job's launcher is re-made from its spec.yaml (`launcher._target_`), so this module never imports launchers/.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fcft import rundir, tracking
from fcft.eval.metrics import METRICS
from fcft.report import report as sweep_report
from fcft.runs import jobs, outcomes
from fcft.runs.launch import launcher_of_run
from fcft.runs.outcomes import Outcome


def finish(run_dirs: list[Path], out: TextIO = sys.stdout) -> list[Outcome]:
    """Wait for the submitted jobs among run_dirs, collect them, and say how every run ended."""
    run_dirs = [Path(d) for d in run_dirs]
    pending = {d: launcher_of_run(d) for d in run_dirs if _submitted(d)}
    statuses = _wait(pending, out) if pending else {}
    return [_outcome(d, statuses.get(d), pending.get(d)) for d in run_dirs]


def report(sweep_dir: Path, results: list[Outcome], out: TextIO = sys.stdout, write: bool = True) -> None:
    """The summary table, then (with `write`) every report writer."""
    shared = set.intersection(*(set(o.overrides) for o in results)) if len(results) > 1 else set()
    rows = [
        (o.job, " ".join(x for x in o.overrides if x not in shared), _headline(o.metrics) if o.ok else "", o.status)
        for o in results
    ]
    failed = sum(not o.ok for o in results)
    out.write(f"\nfcft: {len(results) - failed} of {len(results)} jobs succeeded\n")
    out.write(_table(("job", "overrides", "result", "state"), rows) + "\n")
    for writer in REPORT_WRITERS if write else ():
        writer(Path(sweep_dir), results)


def write_summary(sweep_dir: Path, results: list[Outcome]) -> None:
    """sweep.json: one record per job (its directory, overrides, state and metrics)."""
    records = [{**asdict(o), "run_dir": str(o.run_dir)} for o in results]
    rundir.write_json(sweep_dir / rundir.SWEEP_SUMMARY, {"jobs": records})


# The multirun's report: each writer gets the sweep directory and every job's Outcome, in this order.
REPORT_WRITERS: list[Callable[[Path, list[Outcome]], None]] = [write_summary, sweep_report.write, tracking.end_sweep]


class MultirunEnd(Callback):
    """Hydra callback (conf/config.yaml): the one place where a multirun starts its MLflow parent run, and ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            tracking.start_sweep(
                config.tracking, sweep_dir, outcomes.sweep_name(sweep_dir), list(config.hydra.overrides.task)
            )
        except tracking.TrackingError as err:  # before any job: nothing was spent yet
            print(f"fcft: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            results = finish(outcomes.run_dirs(sweep_dir))
            report(sweep_dir, results)
        except KeyboardInterrupt:
            print(
                f"\nfcft: stopped waiting; submitted jobs go on. Collect them later: python -m fcft.runs {sweep_dir}"
            )
            raise SystemExit(130) from None
        except Exception as err:  # Hydra would only turn it into a warning
            print(f"fcft: the multirun's end failed: {type(err).__name__}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        if not all(o.ok for o in results):
            raise SystemExit(1)


# --- waiting ----------------------------------------------------------------------------------------------


def _submitted(run_dir: Path) -> bool:
    """A job was submitted and its outcome is not yet here."""
    done = (run_dir / rundir.METRICS).is_file() or (run_dir / rundir.ERROR).is_file()
    return (run_dir / rundir.JOB).is_file() and not done


def _wait(pending: dict, out: TextIO) -> dict[Path, jobs.JobStatus]:
    """Poll every pending job until each is done, showing a table of their states."""
    statuses: dict[Path, jobs.JobStatus] = {}
    waiting = dict(pending)
    live = _LiveTable(out)
    while True:
        for run_dir, launcher in list(waiting.items()):
            try:
                statuses[run_dir] = launcher.status(run_dir)
            except Exception as err:  # a job record we can't follow is a failed job, not a stopped sweep
                statuses[run_dir] = jobs.JobStatus("Unknown", True, True, reason=f"can't get its state: {err}")
            if statuses[run_dir].done:
                del waiting[run_dir]
        rows = [(d.name, (rundir.RunDir(d).job() or {}).get("job_name", ""), statuses[d].describe()) for d in pending]
        live.show(_table(("job", "remote job", "state"), rows), final=not waiting)
        if not waiting:
            return statuses
        time.sleep(min(getattr(launcher, "poll_s", 30.0) for launcher in waiting.values()))


class _LiveTable:
    """Redraws the table in place on a terminal; elsewhere (logs, CI) prints it whenever it changes."""

    def __init__(self, out: TextIO):
        self.out, self.last, self.lines = out, None, 0
        self.tty = hasattr(out, "isatty") and out.isatty()

    def show(self, text: str, final: bool = False) -> None:
        if text == self.last:
            return
        if self.tty and self.lines:
            self.out.write(f"\x1b[{self.lines}F\x1b[J")  # back to the table's first line, clear below
        self.out.write(f"{text}\n" if self.tty else f"fcft: {time.strftime('%H:%M:%S')} job states\n{text}\n")
        self.out.flush()
        self.last, self.lines = text, text.count("\n") + 1


# --- outcomes ---------------------------------------------------------------------------------------------


def _outcome(run_dir: Path, status: Optional[jobs.JobStatus], launcher) -> Outcome:
    """A run's outcome; for a submitted job, its final state, after collecting its outputs when it completed."""
    if status is None:
        return outcomes.read(run_dir)
    record = rundir.RunDir(run_dir).job() or {}
    outcome = Outcome(
        run_dir,
        False,
        status.describe(),
        record.get("job_name", run_dir.name),
        outcomes.overrides(run_dir),
        stage=outcomes.stage_of(run_dir),
    )
    if status.failed:
        rundir.RunDir(run_dir).write_error(status.describe(), "JobFailed")
        return outcome
    try:
        outcome.metrics = launcher.collect(run_dir)
    except Exception as err:  # outputs missing or unreadable: the job failed as far as the sweep goes
        rundir.RunDir(run_dir).write_error(err, "CollectFailed")
        outcome.status = f"{status.describe()}, not collected: {err}"
        return outcome
    tracking.record_collected(run_dir)  # adds the MLflow run to metrics.json when the job could not track itself
    outcome.ok, outcome.metrics = True, rundir.read_json(run_dir / rundir.METRICS) or outcome.metrics
    return outcome


def _headline(metrics: Optional[dict]) -> str:
    """The run's scores as the sweep table shows them: every eval metric of METRICS (no counts), then the loss."""
    if not metrics:
        return ""
    ev, train = metrics.get("eval") or {}, metrics.get("train") or {}
    parts = [f"{m.key} {ev[m.key]:.4f}" for m in METRICS if not m.count and ev.get(m.key) is not None]
    parts += [f"loss {train['loss']:.4f}"] if train.get("loss") is not None else []
    return ", ".join(parts)


def _table(header: tuple, rows: list[tuple]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcft.runs", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories (multirun/...) or run directories")
    args = parser.parse_args(argv)
    code = 0
    for path in args.dirs:
        if not path.is_dir():
            print(f"fcft: {path} is not a directory", file=sys.stderr)
            return 2
        single = (path / rundir.SPEC).is_file() or (path / rundir.JOB).is_file()
        try:
            results = finish([path] if single else outcomes.run_dirs(path))
        except KeyboardInterrupt:
            print(f"\nfcft: stopped waiting; the jobs go on. Collect them later: python -m fcft.runs {path}")
            return 130
        report(path, results, write=not single)
        code = code or int(not all(o.ok for o in results))
    return code


if __name__ == "__main__":
    sys.exit(main())
