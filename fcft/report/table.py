"""The experiment's results table in the published layout, for an experiment with a `table`
(conf/experiment/results_table.yaml): a row per model, a column per stage, our `table.metric` (default the
headline, acc_norm) with its 95% interval beside the published number; then macro-F1 and the tool hallucination
rate; then the published table itself. Also `markdown`, the markdown table every part of the report is written
with.
"""

from __future__ import annotations

from fcft.eval import metrics as eval_metrics
from fcft.report.rows import Row


def results_table(rows: list[Row]) -> str:
    """The experiment's tables, or "" when the sweep is no experiment with a table."""
    table = next((r.experiment.get("table") for r in rows if r.experiment and r.experiment.get("table")), None)
    if not table:
        return ""
    metric = table.get("metric") or eval_metrics.HEADLINE.key
    columns, published = table.get("columns") or {}, table.get("published") or {}
    interval_key = next((m.interval for m in eval_metrics.METRICS if m.key == metric), None)
    models = list(dict.fromkeys(r.model for r in rows if r.outcome.stage in columns))
    cell = {(r.model, r.outcome.stage): r for r in rows}
    title = metric.replace("_", "-").title()  # acc_norm -> Acc-Norm, as published

    def ours(model: str, stage: str) -> str:
        row = cell.get((model, stage))
        if row is None:
            return "not run"
        if not row.outcome.ok:
            return "failed"
        value, interval = row.eval.get(metric), row.eval.get(interval_key) if interval_key else None
        text = f"{_pct(value)} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else _pct(value)
        reference = (published.get(model) or {}).get("values", {}).get(stage)
        return f"{text} (published {reference:.2f}%)" if reference is not None else text

    def secondary(model: str, stage: str) -> str:
        row = cell.get((model, stage))
        if row is None or not row.outcome.ok:
            return "-"
        f1, interval = row.eval.get("macro_f1"), row.eval.get("macro_f1_ci95")
        halluc = row.eval.get("tool_hallucination_rate")
        f1_text = f"{f1:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if f1 is not None and interval else _num(f1)
        return f"F1 {f1_text}; halluc. {_pct(halluc, 1) if halluc is not None else 'n/a'}"

    def label(model: str) -> str:
        return (published.get(model) or {}).get("label") or model

    header = ["Model", *columns.values()]
    lines = [
        f"### {title} (95% intervals), ours beside the published numbers",
        "",
        markdown(header, [[label(m), *(ours(m, s) for s in columns)] for m in models]),
        "",
        "### Macro-F1 (95% interval) and tool hallucination rate",
        "",
        markdown(header, [[label(m), *(secondary(m, s) for s in columns)] for m in models]),
    ]
    if any(r.generate for r in rows):  # eval.generate: the answers each stage's model wrote

        def generated(model: str, stage: str) -> str:
            row = cell.get((model, stage))
            shown = [f"{m.key.split('_')[0]} {m.show(row.generate)}" for m in eval_metrics.GENERATE_SHOWN]
            return "; ".join(x for x in shown if not x.endswith(" ")) if row is not None and row.generate else "-"

        lines += [
            "",
            "### Generated answers: call decision, exact arguments, judge accuracy (95% intervals)",
            "",
            markdown(header, [[label(m), *(generated(m, s) for s in columns)] for m in models]),
        ]
    if published:
        rows_published = [
            [p.get("label") or m, *(f"{p['values'][s]:.2f}%" if s in p.get("values", {}) else "-" for s in columns)]
            for m, p in published.items()
        ]
        lines += ["", f"### Published ({title})", "", markdown(header, rows_published)]
    unmatched = [m for m in models if m not in published]
    if published and unmatched:
        lines += [
            "",
            f"No published row for {', '.join(unmatched)}: the published numbers are for {', '.join(published)}.",
        ]
    return "\n".join(lines)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; a `|` or a line break inside a cell is escaped."""

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)])


def _pct(value, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"
