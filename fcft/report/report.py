"""A sweep's report, written at the end of every multirun (fcft/runs/sweep.py's REPORT_WRITERS) or rebuilt later from
the finished run directories alone:

    python -m fcft.report MULTIRUN_DIR [--out REPORT_DIR]

Into `$FCFT_REPORTS_DIR/<sweep name or timestamp>/` (default multirun_reports/, in the working directory):
    report.md         what was swept, a table of every job (its swept values, status, each metric of
                      fcft.eval.metrics.METRICS with its 95% interval, train loss), the best job by the HEADLINE
                      metric (acc_norm), the failures with their reason, the plots; for an experiment with a
                      results table (conf/experiment/results_table.yaml), the table in the published layout
                      beside the published numbers (fcft/report/table.py)
    results.csv       one row per job: its swept values, every metric (and its interval's ends), train loss and
                      steps, the failure reason, overrides, run dir, MLflow run id
    <headline>_vs_<parameter>.png      for each swept numeric parameter (acc_norm_vs_method.beta.png): a panel
                                       per model, 95% intervals (fcft/report/plots.py)
    <headline>_<x>_x_<y>.png           a heatmap when two numeric parameters are swept over a grid
A metric added to METRICS shows up in both files with no change here. The sweep name is the sweep directory's
(multirun/beta_lr -> beta_lr), or its date and time (multirun/2026-11-25/10-00-00-000000 ->
2026-11-25_10-00-00-000000). The directory is replaced whole (rundir.atomic_dir). With tracking on, the files
also go to the sweep's MLflow parent run (report/).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Optional

from fcft import rundir, tracking
from fcft.eval import metrics as eval_metrics
from fcft.report import plots, rows
from fcft.report.rows import Row
from fcft.report.table import markdown, results_table
from fcft.runs import outcomes
from fcft.runs.outcomes import Outcome

REPORTS_ENV = "FCFT_REPORTS_DIR"
DEFAULT_REPORTS = "multirun_reports"
REPORT_MD = "report.md"
RESULTS_CSV = "results.csv"


def reports_root() -> Path:
    return Path(os.environ.get(REPORTS_ENV) or DEFAULT_REPORTS)


def report_dir(sweep_dir: Path) -> Path:
    return reports_root() / outcomes.sweep_name(sweep_dir)


def write(sweep_dir: Path, results: list[Outcome], target: Optional[Path] = None, out=sys.stdout) -> Path:
    """Write the report of the sweep in sweep_dir (a REPORT_WRITERS entry); returns its directory."""
    sweep_dir = Path(sweep_dir)
    target = Path(target) if target else report_dir(sweep_dir)
    runs = [rows.read(o) for o in results]
    swept, fixed = rows.swept(runs)
    table = results_table(runs)
    with rundir.atomic_dir(target) as staging:
        drawn = plots.sweep(runs, swept, staging, eval_metrics.HEADLINE)
        rundir.write_text(staging / REPORT_MD, _markdown(sweep_dir, runs, swept, fixed, drawn, table))
        rundir.write_text(staging / RESULTS_CSV, _csv(runs, swept))
    if table:
        out.write(f"\n{table}\n")
    out.write(f"fcft: report in {target}/{REPORT_MD}\n")
    tracking.log_sweep_report(sweep_dir, target)
    return target


# --- report.md ----------------------------------------------------------------------------------------------


def _markdown(sweep_dir: Path, runs: list[Row], swept: list[str], fixed: list[str], drawn: list, table: str) -> str:
    failed = [r for r in runs if not r.outcome.ok]
    staged = any(r.outcome.stage for r in runs)
    lines = [
        f"# Sweep {outcomes.sweep_name(sweep_dir)}",
        "",
        f"Sweep directory: `{Path(sweep_dir).absolute()}`  ",
        f"{len(runs)} runs: {len(runs) - len(failed)} finished, {len(failed)} failed.",
        "",
    ]
    parent = tracking.sweep_parent(sweep_dir)
    if parent:
        lines += [f"MLflow parent run `{parent['parent_run_id']}` ({parent.get('url') or parent['uri']}).", ""]
    lines += ["## What was swept", ""]
    if swept:
        values = [[k, ", ".join(dict.fromkeys(r.values[k] for r in runs if k in r.values))] for k in swept]
        lines.append(markdown(["parameter", "values"], values))
    else:
        lines.append("Nothing: every run has the same overrides.")
    if fixed:
        lines += ["", "The same for every run: " + " ".join(f"`{o}`" for o in fixed)]
    experiment = next((r.experiment for r in runs if r.experiment), None)
    if experiment and experiment.get("stages"):
        steps = [
            f"{s['name']} (`{' '.join(s.get('overrides') or [])}`"
            f"{', from ' + s['init_from'] if s.get('init_from') else ''})"
            for s in experiment["stages"]
        ]
        lines += ["", f"Each job ran the stages of experiment {experiment.get('name')}, in order: {'; '.join(steps)}."]
    if table:
        lines += ["", "## Results table", "", table]
    generated = eval_metrics.GENERATE_SHOWN if any(r.generate for r in runs) else ()
    header = [
        "job",
        *(["stage"] if staged else []),
        *swept,
        "status",
        *(f"{m.key} [95% CI]" if m.interval else m.key for m in eval_metrics.METRICS),
        *(f"generated {m.key} [95% CI]" for m in generated),
        "train loss",
    ]
    lines += ["", "## Runs", "", markdown(header, [_cells(r, swept, staged, generated) for r in runs])]
    lines += ["", "## Best run", "", _best(runs, swept)]
    lines += ["", "## Failures", ""]
    lines += [
        f"- **{r.outcome.job}** ({rows.changed(r, swept) or 'no swept values'}): {r.outcome.status}" for r in failed
    ] or ["None."]
    if drawn:
        lines += ["", "## Plots", ""] + [f"![{title}]({name})" for title, name in drawn]
    return "\n".join(lines) + "\n"


def _cells(row: Row, swept: list[str], staged: bool, generated: tuple) -> list[str]:
    loss = row.train.get("loss")
    return [
        row.outcome.job,
        *([row.outcome.stage] if staged else []),
        *(row.values.get(k, "") for k in swept),
        "finished" if row.outcome.ok else "failed",
        *(m.show(row.eval) for m in eval_metrics.METRICS),
        *(m.show(row.generate) for m in generated),
        "" if loss is None else f"{loss:.4f}",
    ]


def _best(runs: list[Row], swept: list[str]) -> str:
    """The best run by the headline metric (the lowest when lower is better), and the runs whose 95% intervals
    overlap its own."""
    headline = eval_metrics.HEADLINE
    scored = [r for r in runs if r.eval.get(headline.key) is not None]
    if not scored:
        return "No run was scored."
    pick = min if headline.higher_is_better is False else max
    best = pick(scored, key=lambda r: r.eval[headline.key])
    text = (
        f"**{best.outcome.job}** ({rows.changed(best, swept) or 'the only setting'}): {headline.key} "
        f"{headline.show(best.eval)}, run directory `{best.outcome.run_dir}`."
    )
    mine = best.eval.get(headline.interval) if headline.interval else None
    close = [r.outcome.job for r in scored if r is not best and _overlap(mine, r.eval.get(headline.interval))]
    if close:
        text += f" Its 95% interval overlaps those of {', '.join(close)}: the difference may be noise."
    return text


def _overlap(a: Optional[list], b: Optional[list]) -> bool:
    return bool(a and b) and a[0] <= b[1] and b[0] <= a[1]


# --- results.csv --------------------------------------------------------------------------------------------


def _csv(runs: list[Row], swept: list[str]) -> str:
    """One row per run; a metric's columns are its key, then `<interval>_low` and `<interval>_high` if it has one
    (generate_<key> for eval.generate's, when a run has them)."""
    generated = eval_metrics.GENERATE_METRICS if any(r.generate for r in runs) else ()
    columns = [("", m, lambda r: r.eval) for m in eval_metrics.METRICS]
    columns += [("generate_", m, lambda r: r.generate) for m in generated]  # eval.generate's block
    header = ["job", "stage", "model", *swept, "status"]
    for prefix, m, _ in columns:
        header += [
            prefix + m.key,
            *([f"{prefix}{m.interval}_low", f"{prefix}{m.interval}_high"] if m.interval else []),
        ]
    header += ["train_loss", "train_steps", "reason", "overrides", "run_dir", "mlflow_run_id"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in runs:
        values = []
        for _, m, block in columns:
            values += [_blank(block(r).get(m.key)), *((block(r).get(m.interval) or ["", ""]) if m.interval else [])]
        tracked = ((r.outcome.metrics or {}).get("tracking") or {}).get("run_id", "")
        writer.writerow(
            [
                r.outcome.job,
                r.outcome.stage,
                r.model,
                *(r.values.get(k, "") for k in swept),
                "finished" if r.outcome.ok else "failed",
                *values,
                _blank(r.train.get("loss")),
                _blank(r.train.get("steps")),
                "" if r.outcome.ok else r.outcome.status,
                " ".join(r.outcome.overrides),
                str(r.outcome.run_dir),
                tracked,
            ]
        )
    return buffer.getvalue()


def _blank(value):
    return "" if value is None else value


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fcft.report", description="Rebuild a sweep's report from its finished run directories."
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/<date>/<time>)")
    parser.add_argument(
        "--out", type=Path, help=f"the report's directory (default: ${REPORTS_ENV} or {DEFAULT_REPORTS}/<sweep name>)"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"fcft: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    run_dirs = outcomes.run_dirs(args.sweep_dir)
    if not run_dirs:
        print(
            f"fcft: {args.sweep_dir} holds no job directories (<number>/{rundir.HYDRA}/): give a multirun directory",
            file=sys.stderr,
        )
        return 2
    write(args.sweep_dir, [outcomes.read(d) for d in run_dirs], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
