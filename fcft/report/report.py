"""A sweep's report, written at the end of every multirun (fcft/runs/sweep.py's REPORT_WRITERS) or rebuilt later from
the finished run directories alone:

    python -m fcft.report MULTIRUN_DIR [--out REPORT_DIR]

Into `$FCFT_REPORTS_DIR/<sweep name or timestamp>/` (default multirun_reports/, in the working directory):
    report.md         what was swept, a table of every job (its swept values, status, acc_norm and macro-F1 with
                      95% intervals, hallucination rate), the best job, the failures with their reason, the plots;
                      for an experiment with a results table (conf/experiment/results_table.yaml), the table in
                      the published layout beside the published numbers
    results.csv       one row per job: its swept values, every metric, the failure reason, overrides, run dir
    acc_norm_vs_<parameter>.png        for each swept numeric parameter: a panel per model, 95% intervals
    acc_norm_<x>_x_<y>.png             a heatmap when two numeric parameters are swept over a grid
The sweep name is the sweep directory's (multirun/beta_lr -> beta_lr), or its date and time
(multirun/2026-11-25/10-00-00-000000 -> 2026-11-25_10-00-00-000000). With tracking on, the files also go to
the sweep's MLflow parent run (report/).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fcft import tracking
from fcft.runs import outcomes
from fcft.runs.outcomes import Outcome

REPORTS_ENV = "FCFT_REPORTS_DIR"
DEFAULT_REPORTS = "multirun_reports"
METRIC = "acc_norm"
MAX_SERIES = 6  # more combinations of the other swept values than this: one scatter per model instead of lines


def reports_root() -> Path:
    return Path(os.environ.get(REPORTS_ENV) or DEFAULT_REPORTS)


def report_dir(sweep_dir: Path) -> Path:
    return reports_root() / outcomes.sweep_name(sweep_dir)


@dataclass
class Row:
    """One run of the sweep, as the report shows it."""

    outcome: Outcome
    model: str
    overrides: list[str]  # the job's command-line overrides (for a stage, its job's: not the stage's own)
    experiment: Optional[dict] = field(default=None, repr=False)  # the run's +experiment config, if any

    @property
    def values(self) -> dict:
        """override key -> value, as given on the command line."""
        return dict(kv for kv in map(_key_value, self.overrides) if kv)

    @property
    def eval(self) -> dict:
        return ((self.outcome.metrics or {}).get("eval") or {}) if self.outcome.ok else {}

    @property
    def train(self) -> dict:
        return ((self.outcome.metrics or {}).get("train") or {}) if self.outcome.ok else {}


def write(sweep_dir: Path, results: list[Outcome], target: Optional[Path] = None, out=sys.stdout) -> Path:
    """Write the report of the sweep in sweep_dir (a REPORT_WRITERS entry); returns its directory."""
    sweep_dir = Path(sweep_dir)
    target = Path(target) if target else report_dir(sweep_dir)
    rows = [_row(o) for o in results]
    swept, fixed = _swept(rows)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    plots = _plots(rows, swept, staging)
    table = _results_table(rows)
    (staging / "report.md").write_text(_markdown(sweep_dir, rows, swept, fixed, plots, table))
    (staging / "results.csv").write_text(_csv(rows, swept))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    if table:
        out.write(f"\n{table}\n")
    out.write(f"fcft: report in {target}/report.md\n")
    tracking.log_sweep_report(sweep_dir, target)
    return target


def _row(outcome: Outcome) -> Row:
    hydra_config = _yaml(outcome.run_dir / ".hydra" / "config.yaml")  # the composed config, with any experiment
    spec = _yaml(outcome.run_dir / "spec.yaml") or hydra_config  # a run that failed validation has no spec
    model = str((spec.get("model") or {}).get("name") or "")
    job_overrides = outcomes.overrides(outcome.run_dir.parent) if outcome.stage else outcome.overrides
    return Row(outcome, model, job_overrides, hydra_config.get("experiment"))


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
    except Exception:  # a broken file: the report says what it can without it
        return {}


def _key_value(override: str) -> Optional[tuple[str, str]]:
    if override.startswith("~") or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return key.lstrip("+"), value


def _swept(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The override keys whose values differ between jobs, in command-line order, and the overrides every job
    shares. A stage's own overrides (method=sft, its init_from) are what the experiment does, not what was swept."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.values if k not in keys]
    swept = [key for key in keys if len({r.values.get(key) for r in rows}) > 1]
    shared = set.intersection(*(set(r.overrides) for r in rows)) if rows else set()
    fixed = [o for o in (rows[0].overrides if rows else []) if o in shared]
    return swept, fixed


def number(text: Optional[str]) -> Optional[float]:
    """A swept value as a number, or None when it is not one (a model name, a path)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- plots ------------------------------------------------------------------------------------------------------


def _plots(rows: list[Row], swept: list[str], folder: Path) -> list[tuple[str, str]]:
    """(title, file name) of each plot written into folder."""
    from fcft.report import plots

    numeric = [k for k in swept if all(number(r.values[k]) is not None for r in rows if k in r.values)]
    scored = [r for r in rows if r.eval.get(METRIC) is not None]
    written = []
    for key in numeric:
        others = [k for k in swept if k != key and k != "model"]
        points = [
            dict(
                model=r.model or "?",
                x=number(r.values[key]),
                y=r.eval[METRIC],
                low=(r.eval.get(f"{METRIC}_ci95") or [r.eval[METRIC]] * 2)[0],
                high=(r.eval.get(f"{METRIC}_ci95") or [r.eval[METRIC]] * 2)[1],
                series=_series(r, others),
            )
            for r in scored
            if key in r.values
        ]
        if not points:
            continue
        connect = len({p["series"] for p in points}) <= MAX_SERIES
        if not connect:
            for p in points:
                p["series"] = ""
        name = f"{METRIC}_vs_{_file_part(key)}.png"
        plots.metric_vs(points, key, METRIC, folder / name, connect=connect)
        written.append((f"{METRIC} against {key}", name))
    if len(numeric) == 2:
        x_key, y_key = numeric
        grid = [
            dict(model=r.model or "?", x=number(r.values[x_key]), y=number(r.values[y_key]), value=r.eval.get(METRIC))
            for r in rows
            if x_key in r.values and y_key in r.values
        ]
        if grid and _is_grid(grid):
            name = f"{METRIC}_{_file_part(x_key)}_x_{_file_part(y_key)}.png"
            plots.heatmap(grid, x_key, y_key, METRIC, folder / name)
            written.append((f"{METRIC} over {x_key} x {y_key}", name))
    return written


def _series(row: Row, others: list[str]) -> str:
    parts = ([f"stage={row.outcome.stage}"] if row.outcome.stage else []) + [
        f"{k}={row.values.get(k)}" for k in others
    ]
    return " ".join(parts)


def _is_grid(points: list[dict]) -> bool:
    """The two parameters were swept over (most of) a grid, per model: a heatmap shows it; random search doesn't."""
    for model in {p["model"] for p in points}:
        mine = [p for p in points if p["model"] == model]
        cells = len({p["x"] for p in mine}) * len({p["y"] for p in mine})
        if cells > 2 * len({(p["x"], p["y"]) for p in mine}):
            return False
    return True


def _file_part(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


# --- results table (experiments with stages) ---------------------------------------------------------------


def _results_table(rows: list[Row]) -> str:
    """The experiment's table (Model x stage) in the published layout, beside the published numbers; "" if the
    sweep is no experiment with a table."""
    table = next((r.experiment.get("table") for r in rows if r.experiment and r.experiment.get("table")), None)
    if not table:
        return ""
    metric, columns, published = table.get("metric", METRIC), table.get("columns") or {}, table.get("published") or {}
    models = list(dict.fromkeys(r.model for r in rows if r.outcome.stage in columns))
    cell = {(r.model, r.outcome.stage): r for r in rows}
    title = metric.replace("_", "-").title()  # acc_norm -> Acc-Norm, as published

    def ours(model: str, stage: str) -> str:
        row = cell.get((model, stage))
        if row is None:
            return "not run"
        if not row.outcome.ok:
            return "failed"
        value, interval = row.eval.get(metric), row.eval.get(f"{metric}_ci95")
        text = f"{_pct(value)} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else _pct(value)
        reference = (published.get(model) or {}).get("values", {}).get(stage)
        return f"{text} (published {reference:.2f}%)" if reference is not None else text

    def secondary(model: str, stage: str) -> str:
        row = cell.get((model, stage))
        if row is None or not row.outcome.ok:
            return "-"
        f1, interval, halluc = (
            row.eval.get("macro_f1"),
            row.eval.get("macro_f1_ci95"),
            row.eval.get("tool_hallucination_rate"),
        )
        f1_text = f"{f1:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if f1 is not None and interval else _num(f1)
        return f"F1 {f1_text}; halluc. {_pct(halluc, 1) if halluc is not None else 'n/a'}"

    def label(model: str) -> str:
        return (published.get(model) or {}).get("label") or model

    header = ["Model", *columns.values()]
    lines = [
        f"### {title} (95% intervals), ours beside the published numbers",
        "",
        _md_table(header, [[label(m), *(ours(m, s) for s in columns)] for m in models]),
        "",
        "### Macro-F1 (95% interval) and tool hallucination rate",
        "",
        _md_table(header, [[label(m), *(secondary(m, s) for s in columns)] for m in models]),
    ]
    if published:
        rows_published = [
            [p.get("label") or m, *(f"{p['values'][s]:.2f}%" if s in p.get("values", {}) else "-" for s in columns)]
            for m, p in published.items()
        ]
        lines += ["", f"### Published ({title})", "", _md_table(header, rows_published)]
    unmatched = [m for m in models if m not in published]
    if published and unmatched:
        lines += [
            "",
            f"No published row for {', '.join(unmatched)}: the published numbers are for {', '.join(published)}.",
        ]
    return "\n".join(lines)


# --- report.md and results.csv ------------------------------------------------------------------------------


def _markdown(sweep_dir: Path, rows: list[Row], swept: list[str], fixed: list[str], plots: list, table: str) -> str:
    failed = [r for r in rows if not r.outcome.ok]
    staged = any(r.outcome.stage for r in rows)
    lines = [
        f"# Sweep {outcomes.sweep_name(sweep_dir)}",
        "",
        f"Sweep directory: `{Path(sweep_dir).absolute()}`  ",
        f"{len(rows)} runs: {len(rows) - len(failed)} finished, {len(failed)} failed.",
        "",
    ]
    parent = tracking.sweep_parent(sweep_dir)
    if parent:
        lines += [f"MLflow parent run `{parent['parent_run_id']}` ({parent.get('url') or parent['uri']}).", ""]
    lines += ["## What was swept", ""]
    if swept:
        lines.append(
            _md_table(
                ["parameter", "values"],
                [[k, ", ".join(dict.fromkeys(r.values[k] for r in rows if k in r.values))] for k in swept],
            )
        )
    else:
        lines.append("Nothing: every run has the same overrides.")
    if fixed:
        lines += ["", "The same for every run: " + " ".join(f"`{o}`" for o in fixed)]
    experiment = next((r.experiment for r in rows if r.experiment), None)
    if experiment and experiment.get("stages"):
        steps = [
            f"{s['name']} (`{' '.join(s.get('overrides') or [])}`"
            f"{', from ' + s['init_from'] if s.get('init_from') else ''})"
            for s in experiment["stages"]
        ]
        lines += ["", f"Each job ran the stages of experiment {experiment.get('name')}, in order: {'; '.join(steps)}."]
    if table:
        lines += ["", "## Results table", "", table]
    header = [
        "job",
        *(["stage"] if staged else []),
        *swept,
        "status",
        "acc_norm [95% CI]",
        "macro_f1 [95% CI]",
        "halluc.",
        "acc",
        "n",
        "train loss",
    ]
    lines += ["", "## Runs", "", _md_table(header, [_cells(r, swept, staged) for r in rows])]
    lines += ["", "## Best run", "", _best(rows, swept)]
    lines += ["", "## Failures", ""]
    lines += [
        f"- **{r.outcome.job}** ({_changed(r, swept) or 'no swept values'}): {r.outcome.status}" for r in failed
    ] or ["None."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({name})" for title, name in plots]
    return "\n".join(lines) + "\n"


def _cells(row: Row, swept: list[str], staged: bool) -> list[str]:
    ev = row.eval
    status = "finished" if row.outcome.ok else "failed"
    return [
        row.outcome.job,
        *([row.outcome.stage] if staged else []),
        *(row.values.get(k, "") for k in swept),
        status,
        _with_interval(ev.get("acc_norm"), ev.get("acc_norm_ci95")),
        _with_interval(ev.get("macro_f1"), ev.get("macro_f1_ci95")),
        _num(ev.get("tool_hallucination_rate")),
        _num(ev.get("acc")),
        str(ev.get("n", "")),
        _num(row.train.get("loss")),
    ]


def _best(rows: list[Row], swept: list[str]) -> str:
    scored = [r for r in rows if r.eval.get(METRIC) is not None]
    if not scored:
        return "No run was scored."
    best = max(scored, key=lambda r: r.eval[METRIC])
    text = (
        f"**{best.outcome.job}** ({_changed(best, swept) or 'the only setting'}): {METRIC} "
        f"{_with_interval(best.eval[METRIC], best.eval.get(f'{METRIC}_ci95'))}, "
        f"run directory `{best.outcome.run_dir}`."
    )
    low = (best.eval.get(f"{METRIC}_ci95") or [None])[0]
    close = [
        r.outcome.job
        for r in scored
        if r is not best and low is not None and (r.eval.get(f"{METRIC}_ci95") or [0, -1])[1] >= low
    ]
    if close:
        text += f" Its 95% interval overlaps those of {', '.join(close)}: the difference may be noise."
    return text


def _changed(row: Row, swept: list[str]) -> str:
    parts = ([f"stage {row.outcome.stage}"] if row.outcome.stage else []) + [
        f"{k}={row.values[k]}" for k in swept if k in row.values
    ]
    return ", ".join(parts)


def _csv(rows: list[Row], swept: list[str]) -> str:
    header = [
        "job",
        "stage",
        "model",
        *swept,
        "status",
        "acc",
        "acc_norm",
        "acc_norm_ci95_low",
        "acc_norm_ci95_high",
        "macro_f1",
        "macro_f1_ci95_low",
        "macro_f1_ci95_high",
        "tool_hallucination_rate",
        "n",
        "train_loss",
        "train_steps",
        "reason",
        "overrides",
        "run_dir",
        "mlflow_run_id",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for r in rows:
        ev, acc_ci, f1_ci = r.eval, r.eval.get("acc_norm_ci95") or ["", ""], r.eval.get("macro_f1_ci95") or ["", ""]
        tracked = ((r.outcome.metrics or {}).get("tracking") or {}).get("run_id", "")
        writer.writerow(
            [
                r.outcome.job,
                r.outcome.stage,
                r.model,
                *(r.values.get(k, "") for k in swept),
                "finished" if r.outcome.ok else "failed",
                ev.get("acc", ""),
                ev.get("acc_norm", ""),
                *acc_ci,
                ev.get("macro_f1", ""),
                *f1_ci,
                _blank(ev.get("tool_hallucination_rate")),
                ev.get("n", ""),
                _blank(r.train.get("loss")),
                _blank(r.train.get("steps")),
                "" if r.outcome.ok else r.outcome.status,
                " ".join(r.outcome.overrides),
                str(r.outcome.run_dir),
                tracked,
            ]
        )
    return buffer.getvalue()


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])


def _with_interval(value, interval) -> str:
    if value is None:
        return ""
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else f"{value:.4f}"


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _pct(value, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


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
            f"fcft: {args.sweep_dir} holds no job directories (<number>/.hydra/): give a multirun directory",
            file=sys.stderr,
        )
        return 2
    write(args.sweep_dir, [outcomes.read(d) for d in run_dirs], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
