"""PNG plots for runs and sweeps, drawn with matplotlib's Agg backend (no display needed).

    confusion(...)   a run's 4 x 4 confusion matrix (rundir.CONFUSION, an MLflow artifact)
    metric_vs(...)   a sweep's metric against one swept parameter, a panel per model, a line per other setting
    heatmap(...)     a sweep's metric over two swept parameters, a panel per model
    sweep(...)       the sweep report's plots of one metric (the headline), drawn from its rows with the two above

Figures are built with matplotlib.figure.Figure, not pyplot, so nothing global is touched; files are written
atomically (rundir.atomic_file). matplotlib is imported inside the functions (~0.3 s).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from fcft import rundir

MAX_SERIES = 6  # more combinations of the other swept values than this: one scatter per model instead of lines


def confusion(confusion: dict, path: Path, title: str = "") -> Path:
    """`confusion` as metrics.json holds it: {"true:<category>": {"pred:<category>": count}}."""
    import numpy as np

    rows = [key.split(":", 1)[1] for key in confusion]
    cols = [key.split(":", 1)[1] for key in next(iter(confusion.values()))]
    counts = np.array([[confusion[f"true:{r}"][f"pred:{c}"] for c in cols] for r in rows], dtype=float)
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="rows")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("correct answer")
    high = counts.max() or 1
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                color="white" if counts[i, j] > high / 2 else "black",
            )
    ax.set_title(title or "confusion matrix", fontsize=10)
    return _save(fig, path)


def metric_vs(points: Sequence[dict], param: str, metric: str, path: Path, connect: bool = True) -> Path:
    """`points`: dicts with model, x (the parameter's value), series (the other swept settings, '' if none),
    y and optionally low/high (a 95% interval). One panel per model, one line per series (points only without
    `connect`, e.g. a random search), error bars for the intervals; a log x axis when the values span two
    orders of magnitude."""
    models = _ordered(p["model"] for p in points)
    fig = _figure(5.0 * len(models), 4.0)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        mine = [p for p in points if p["model"] == model]
        for series in _ordered(p["series"] for p in mine):
            line = sorted((p for p in mine if p["series"] == series), key=lambda p: p["x"])
            xs, ys = [p["x"] for p in line], [p["y"] for p in line]
            errors = [
                [y - p.get("low", y) for p, y in zip(line, ys)],
                [p.get("high", y) - y for p, y in zip(line, ys)],
            ]
            ax.errorbar(
                xs, ys, yerr=errors, marker="o", capsize=4, label=series or None, linestyle="-" if connect else "none"
            )
        _value_axis(ax, [p["x"] for p in mine])
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.set_title(model, fontsize=10)
        ax.grid(alpha=0.3)
        if any(p["series"] for p in mine):
            ax.legend(fontsize=8)
    fig.suptitle(f"{metric} against {param} (95% intervals)", fontsize=11)
    return _save(fig, path)


def heatmap(points: Sequence[dict], x_param: str, y_param: str, metric: str, path: Path) -> Path:
    """`points`: dicts with model, x, y and value (None for a failed job: drawn blank, marked 'failed').
    One panel per model; the cells are the value grid over the two parameters' values."""
    import numpy as np

    models = _ordered(p["model"] for p in points)
    fig = _figure(4.8 * len(models) + 0.8, 4.2)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    values = [p["value"] for p in points if p["value"] is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-6:  # all equal: a colour scale around the value
        low, high = low - 0.01, high + 0.01
    image = None
    for ax, model in zip(axes, models):
        mine = [p for p in points if p["model"] == model]
        xs, ys = sorted({p["x"] for p in mine}), sorted({p["y"] for p in mine})
        grid = np.full((len(ys), len(xs)), np.nan)
        for p in mine:
            if p["value"] is not None:
                grid[ys.index(p["y"]), xs.index(p["x"])] = p["value"]
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, origin="lower", aspect="auto")
        ax.set_xticks(range(len(xs)), [_number(x) for x in xs])
        ax.set_yticks(range(len(ys)), [_number(y) for y in ys])
        ax.set_xlabel(x_param)
        ax.set_ylabel(y_param)
        ax.set_title(model, fontsize=10)
        for i in range(len(ys)):
            for j in range(len(xs)):
                text = "failed" if math.isnan(grid[i, j]) else f"{grid[i, j]:.3f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black" if not math.isnan(grid[i, j]) and grid[i, j] > (low + high) / 2 else "white",
                )
    fig.colorbar(image, ax=list(axes), label=metric)
    fig.suptitle(f"{metric} over {x_param} x {y_param}", fontsize=11)
    return _save(fig, path)


# --- a sweep's plots ----------------------------------------------------------------------------------------


def sweep(rows: Sequence, swept: list[str], folder: Path, metric) -> list[tuple[str, str]]:
    """`metric` (an EvalMetric) against each swept numeric parameter, `<key>_vs_<parameter>.png`, and over two of
    them, `<key>_<x>_x_<y>.png`, when they were swept over a grid; `rows` are the report's (fcft/report/rows.py).
    Returns (title, file name) of each plot written into folder."""
    key = metric.key
    numeric = [k for k in swept if all(number(r.values[k]) is not None for r in rows if k in r.values)]
    scored = [r for r in rows if r.eval.get(key) is not None]
    written = []
    for param in numeric:
        others = [k for k in swept if k != param and k != "model"]
        points = []
        for r in (r for r in scored if param in r.values):
            value = r.eval[key]
            low, high = (r.eval.get(metric.interval) if metric.interval else None) or (value, value)
            point = dict(model=r.model or "?", x=number(r.values[param]), y=value, low=low, high=high)
            points.append({**point, "series": _series(r, others)})
        if not points:
            continue
        connect = len({p["series"] for p in points}) <= MAX_SERIES
        if not connect:
            for p in points:
                p["series"] = ""
        name = f"{key}_vs_{_file_part(param)}.png"
        metric_vs(points, param, key, folder / name, connect=connect)
        written.append((f"{key} against {param}", name))
    if len(numeric) == 2:
        x_key, y_key = numeric
        grid = [
            dict(model=r.model or "?", x=number(r.values[x_key]), y=number(r.values[y_key]), value=r.eval.get(key))
            for r in rows
            if x_key in r.values and y_key in r.values
        ]
        if grid and _is_grid(grid):
            name = f"{key}_{_file_part(x_key)}_x_{_file_part(y_key)}.png"
            heatmap(grid, x_key, y_key, key, folder / name)
            written.append((f"{key} over {x_key} x {y_key}", name))
    return written


def number(text: Optional[str]) -> Optional[float]:
    """A swept value as a number, or None when it is not one (a model name, a path)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _series(row, others: list[str]) -> str:
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


# --- drawing ------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path: Path) -> Path:
    with rundir.atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _ordered(items) -> list:
    seen: dict = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _value_axis(ax, xs: Sequence[float]) -> None:
    """A log axis when the values span two orders of magnitude; a few swept values each get their tick."""
    positive = [x for x in xs if x > 0]
    if len(positive) == len(xs) and len(set(xs)) > 1 and max(positive) / min(positive) >= 100:
        ax.set_xscale("log")
    values = sorted(set(xs))
    if len(values) <= 8:
        ax.set_xticks(values, [_number(x) for x in values])
        ax.minorticks_off()


def _number(value: float) -> str:
    return f"{value:g}"
