"""The end of a multirun: wait for every submitted job, collect the results, report what failed and why.

Hydra calls `MultirunEnd.on_multirun_end` once all jobs of a sweep were started (conf/config.yaml,
hydra.callbacks). Local jobs have finished by then; jobs a remote launcher submitted (SageMaker) are
polled with a live status table until each is done, then collected into their run directories. The
summary goes to the terminal and to the sweep's report writers (`REPORT_WRITERS`); the command exits
non-zero when any job failed. The same, for sweeps or single runs submitted earlier:

    python -m fcft.sweep SWEEP_OR_RUN_DIR [...]

A job's launcher is re-made from its spec.yaml (`launcher._target_`), so this module never imports launchers/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fcft import jobs
from fcft.launch import launcher_of_run
from fcft.spec import SPEC_FILE

SUMMARY_FILE = "sweep.json"


@dataclass
class Outcome:
    """How one job of a sweep ended."""

    run_dir: Path
    ok: bool
    status: str  # e.g. "finished", "Completed", "Failed (AlgorithmError): ...", "invalid config: ..."
    job: str = ""  # the remote job's name, or the run directory's name
    overrides: list[str] = field(default_factory=list)  # the job's command-line overrides
    metrics: Optional[dict] = field(default=None, repr=False)


def finish(run_dirs: list[Path], out: TextIO = sys.stdout) -> list[Outcome]:
    """Wait for the submitted jobs among run_dirs, collect them, and say how every run ended."""
    run_dirs = [Path(d) for d in run_dirs]
    pending = {d: launcher_of_run(d) for d in run_dirs if _submitted(d)}
    statuses = _wait(pending, out) if pending else {}
    return [_outcome(d, statuses.get(d), pending.get(d)) for d in run_dirs]


def report(sweep_dir: Path, outcomes: list[Outcome], out: TextIO = sys.stdout, write: bool = True) -> None:
    """The summary table, then (with `write`) every report writer."""
    shared = set.intersection(*(set(o.overrides) for o in outcomes)) if len(outcomes) > 1 else set()
    rows = [(o.run_dir.name, " ".join(x for x in o.overrides if x not in shared), _headline(o.metrics) if o.ok else "",
             o.status) for o in outcomes]  # fmt: skip
    failed = sum(not o.ok for o in outcomes)
    out.write(f"\nfcft: {len(outcomes) - failed} of {len(outcomes)} jobs succeeded\n")
    out.write(_table(("job", "overrides", "result", "state"), rows) + "\n")
    for writer in REPORT_WRITERS if write else ():
        writer(Path(sweep_dir), outcomes)


def write_summary(sweep_dir: Path, outcomes: list[Outcome]) -> None:
    """sweep.json: one record per job (its directory, overrides, state and metrics)."""
    records = [{**asdict(o), "run_dir": str(o.run_dir)} for o in outcomes]
    jobs.write_json(sweep_dir / SUMMARY_FILE, {"jobs": records})


# The multirun's report: each writer gets the sweep directory and every job's Outcome.
REPORT_WRITERS: list[Callable[[Path, list[Outcome]], None]] = [write_summary]


class MultirunEnd(Callback):
    """Hydra callback (conf/config.yaml): the one place where a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            outcomes = finish(job_dirs(sweep_dir))
            report(sweep_dir, outcomes)
        except KeyboardInterrupt:
            print(f"\nfcft: stopped waiting; submitted jobs go on. Collect them later: python -m fcft.sweep {sweep_dir}")
            raise SystemExit(130) from None
        except Exception as err:  # Hydra would only turn it into a warning
            print(f"fcft: the multirun's end failed: {type(err).__name__}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        if not all(o.ok for o in outcomes):
            raise SystemExit(1)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories (Hydra's `<sweep dir>/<job number>`), in job order."""
    found = [d for d in Path(sweep_dir).iterdir() if d.is_dir() and (d / ".hydra").is_dir()]
    return sorted(found, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


# --- waiting ----------------------------------------------------------------------------------------------


def _submitted(run_dir: Path) -> bool:
    """A job was submitted and its outcome is not yet here."""
    done = (run_dir / jobs.METRICS_FILE).is_file() or (run_dir / jobs.ERROR_FILE).is_file()
    return (run_dir / jobs.JOB_FILE).is_file() and not done


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
        rows = [(d.name, (jobs.read_record(d) or {}).get("job_name", ""), statuses[d].describe()) for d in pending]
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
    record = jobs.read_record(run_dir) or {}
    outcome = Outcome(run_dir, False, "", record.get("job_name", run_dir.name), _overrides(run_dir))
    if status is not None and not status.failed:
        try:
            outcome.metrics = launcher.collect(run_dir)
        except Exception as err:  # outputs missing or unreadable: the job failed as far as the sweep goes
            jobs.write_error(run_dir, err, "CollectFailed")
            outcome.status = f"{status.describe()}, not collected: {err}"
            return outcome
        outcome.ok, outcome.status = True, status.describe()
        return outcome
    if status is not None:
        jobs.write_error(run_dir, status.describe(), "JobFailed")
    error = run_dir / jobs.ERROR_FILE
    metrics = run_dir / jobs.METRICS_FILE
    if error.is_file():
        failure = json.loads(error.read_text())
        outcome.status = status.describe() if status else f"{failure['type']}: {failure['message']}"
    elif metrics.is_file():
        outcome.ok, outcome.status, outcome.metrics = True, "finished", json.loads(metrics.read_text())
    elif status is None and not (run_dir / SPEC_FILE).is_file():
        outcome.status = "did not start (no spec.yaml)"
    else:
        outcome.status = "did not finish (no metrics.json)" if status is None else status.describe()
    return outcome


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def _headline(metrics: Optional[dict]) -> str:
    if not metrics:
        return ""
    parts = [f"acc_norm {metrics['eval']['acc_norm']:.4f}" if metrics.get("eval", {}).get("acc_norm") is not None else "",
             f"loss {metrics['train']['loss']:.4f}" if metrics.get("train", {}).get("loss") is not None else ""]  # fmt: skip
    return ", ".join(p for p in parts if p)


def _table(header: tuple, rows: list[tuple]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcft.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories (multirun/...) or run directories")
    args = parser.parse_args(argv)
    code = 0
    for path in args.dirs:
        if not path.is_dir():
            print(f"fcft: {path} is not a directory", file=sys.stderr)
            return 2
        single = (path / SPEC_FILE).is_file() or (path / jobs.JOB_FILE).is_file()
        run_dirs = [path] if single else job_dirs(path)
        try:
            outcomes = finish(run_dirs)
        except KeyboardInterrupt:
            print(f"\nfcft: stopped waiting; the jobs go on. Collect them later: python -m fcft.sweep {path}")
            return 130
        report(path, outcomes, write=not single)
        code = code or int(not all(o.ok for o in outcomes))
    return code


if __name__ == "__main__":
    sys.exit(main())
